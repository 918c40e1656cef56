"""`python -m golive.commands ...` is `golive ...`."""

from golive.commands import app

app(prog_name="golive")
