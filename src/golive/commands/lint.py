"""`golive lint-prompt`: the static-prefix layout check from the command line."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer


def lint_prompt(
    source: Annotated[Optional[str], typer.Argument(
        help="Prompt file: plain text, a JSON message list or request body, or JSONL of "
             "request bodies; '-' reads stdin. Omit with --log.")] = None,
    log: Annotated[bool, typer.Option("--log", help="Read requests from golive's request log "
                                                    "(server started with --log-bodies)")] = False,
    log_db: Annotated[Optional[str], typer.Option(help="Request-log database URL")] = None,
    limit: Annotated[int, typer.Option(help="Most recent requests to read from the log")] = 1000,
    model: Annotated[Optional[str], typer.Option(help="GGUF whose tokenizer counts tokens")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    exit_zero: Annotated[bool, typer.Option("--exit-zero",
                                            help="Exit 0 even when there are findings")] = False,
) -> None:
    """Flag dynamic content ahead of static content; propose a static-first order.

    With several requests (JSONL, or --log) it also measures the prefix they
    share now and after the reordering. Exits 1 when something is flagged.
    """
    from golive.patterns import lint

    try:
        requests = lint.load(source, log, log_db, limit)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="SOURCE") from None
    result = lint.lint(requests, model)
    if as_json:
        typer.echo(json.dumps(lint.to_json(result), indent=2))
    else:
        lint.print_lint(result)
    if result.flagged and not exit_zero:
        raise typer.Exit(1)
