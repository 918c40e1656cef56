"""`golive lint-prompt`: the layout check from the command line."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer


def lint_prompt_command(
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
    from rich.console import Console
    from rich.table import Table

    from golive.patterns import layout
    from golive.patterns.tokens import model_tokenizer

    if (source is None) == (not log):
        raise typer.BadParameter("give a FILE (or '-') or --log, not both", param_hint="SOURCE")
    try:
        if log:
            requests = layout.requests_from_log(log_db, limit)
            if not requests:
                raise ValueError("the request log holds no chat requests")
        else:
            requests = layout.load_requests(layout.read_source(source))
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="SOURCE") from None
    tok = model_tokenizer(model)
    stats = layout.analyze_requests(requests, tok)
    report = stats.example or layout.lint_prompt(requests[0], tok)
    flagged = bool(stats.findings)

    if as_json:
        typer.echo(json.dumps({
            "requests": stats.requests,
            "prompt_tokens": stats.prompt_tokens,
            "cacheable_tokens": stats.cacheable_tokens,
            "cacheable_tokens_reordered": stats.cacheable_tokens_reordered,
            "findings": [{"where": k, "kinds": stats.kinds[k], "requests": v}
                         for k, v in stats.findings.items()],
            "static_tokens_after_dynamic": report.static_tokens_after_dynamic,
            "reordered": report.reordered,
        }, indent=2))
    else:
        console = Console()
        if flagged:
            t = Table("where", "what", "requests", title="dynamic content ahead of static content")
            for k, v in stats.findings.items():
                t.add_row(k, ", ".join(stats.kinds[k]), str(v))
            console.print(t)
            for f in report.findings:
                console.print(f"  [yellow]{f}[/yellow]")
        else:
            console.print("[green]no dynamic content ahead of static content[/green]")
        if stats.requests > 1:
            console.print(
                f"{stats.requests} requests, {stats.prompt_tokens} prompt tokens; shared prefix "
                f"(cacheable): {stats.cacheable_tokens} ({stats.share:.0%}) now, "
                f"{stats.cacheable_tokens_reordered} ({stats.share_reordered:.0%}) static-first")
        else:
            console.print(f"{report.static_tokens_after_dynamic} static tokens sit after dynamic "
                          "content and cannot be served from the prefix cache")
        if flagged:
            console.print("\n[bold]proposed order[/bold] (static first):")
            for m in report.reordered:
                console.print(f"[dim]--- {m.get('role')} ---[/dim]", highlight=False)
                console.print(m.get("content", ""), markup=False, highlight=False)
    if flagged and not exit_zero:
        raise typer.Exit(1)
