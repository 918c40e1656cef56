"""`golive`: one command, sub-commands for serving, chatting and inspecting.

All typer code lives in this package; each module is a thin layer over plain
functions elsewhere (golive.observe, golive.batch, golive.evals, golive.patterns).
"""

from __future__ import annotations

import typer

from golive.commands.audit import audit
from golive.commands.batch import batch_app
from golive.commands.chat import chat
from golive.commands.eval import eval_app
from golive.commands.levers import levers_app
from golive.commands.lint import lint_prompt
from golive.commands.log import log_app
from golive.commands.models import models
from golive.commands.serve import serve

app = typer.Typer(help="golive: take LLM applications live, on your own machine.",
                  no_args_is_help=True, add_completion=False)
app.command()(serve)
app.command()(chat)
app.command()(models)
app.add_typer(log_app, name="log")
app.add_typer(eval_app, name="eval")
app.add_typer(batch_app, name="batch")
app.add_typer(levers_app, name="levers")
app.command("lint-prompt")(lint_prompt)
app.command("audit")(audit)

__all__ = ["app"]
