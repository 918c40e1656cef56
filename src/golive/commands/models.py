"""`golive models`: the GGUF files golive can serve."""

from __future__ import annotations

import os
from pathlib import Path


def models() -> None:
    """List the models golive can serve."""
    from rich.console import Console
    from rich.table import Table

    from golive.engine.model import DEFAULT_MODEL_ID, default_model_path

    t = Table("id", "file", "size")
    try:
        p = default_model_path()
        t.add_row(DEFAULT_MODEL_ID + " (default)", str(p), f"{p.stat().st_size / 1e6:.0f} MB")
    except FileNotFoundError as exc:
        t.add_row("(default missing)", str(exc), "")
    for d in filter(None, os.environ.get("GOLIVE_MODELS_PATH", "").split(os.pathsep)):
        for p in sorted(Path(d).glob("*.gguf")):
            t.add_row(p.stem, str(p), f"{p.stat().st_size / 1e6:.0f} MB")
    Console().print(t)
