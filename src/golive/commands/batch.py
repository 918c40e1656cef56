"""`golive batch run`: OpenAI batch files, offline on the embedded engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from golive.commands.common import ENGINE, Ctx, Slots, Threads, engine_config

batch_app = typer.Typer(help="Batches in the OpenAI Batch API file format.",
                        no_args_is_help=True)


@batch_app.command("run")
def run(
    input: Annotated[Path, typer.Argument(help="Batch input file (.jsonl, OpenAI format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where successful lines go")],
    errors: Annotated[Optional[Path], typer.Option(help="Where failed lines go (default: OUTPUT with .errors before the suffix)")] = None,
    model: Annotated[Optional[Path], typer.Option(help="GGUF file (default: SmolLM2-135M-Instruct)")] = None,
    slots: Slots = ENGINE.slots,
    ctx: Ctx = ENGINE.kv_size,
    threads: Threads = ENGINE.threads,
    concurrency: Annotated[int, typer.Option(help="Lines in flight (0 = slots + 2)")] = 0,
    restart: Annotated[bool, typer.Option("--restart", help="Start over instead of keeping lines already written")] = False,
    no_request_log: Annotated[bool, typer.Option("--no-request-log", help="Do not write the request log")] = False,
) -> None:
    """Run a batch file offline on the embedded engine, with progress and ETA."""
    from golive.batch.offline import run_file

    if not input.is_file():
        raise typer.BadParameter(f"no such file: {input}", param_hint="INPUT")
    if model is not None and not model.is_file():
        raise typer.BadParameter(f"no such file: {model}", param_hint="--model")
    status = run_file(input, output, errors, str(model) if model else None,
                      engine_config(slots=slots, ctx=ctx, threads=threads), concurrency,
                      restart, request_log=not no_request_log)
    if status:
        raise typer.Exit(status)
