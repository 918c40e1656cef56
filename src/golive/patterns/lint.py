"""The layout check behind `golive lint-prompt` (golive.commands.lint), as plain functions.

`load(...)` reads the requests (a file, stdin, or the request log), `lint(...)`
checks them, and `to_json` / `print_lint` give the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from golive.patterns import layout


@dataclass
class LintResult:
    stats: Any  # layout.analyze_requests over all requests
    report: Any  # the example request's layout.lint_prompt report

    @property
    def flagged(self) -> bool:
        return bool(self.stats.findings)


def load(source: str | None = None, log: bool = False, log_db: str | None = None,
         limit: int = 1000) -> list[dict]:
    """The requests to check: from a file ('-' = stdin) or from the request log.

    ValueError (or OSError) says what is wrong with the source."""
    if (source is None) == (not log):
        raise ValueError("give a FILE (or '-') or --log, not both")
    if log:
        requests = layout.requests_from_log(log_db, limit)
        if not requests:
            raise ValueError("the request log holds no chat requests")
        return requests
    return layout.load_requests(layout.read_source(source))


def lint(requests: list[dict], model: str | None = None) -> LintResult:
    """Check requests for dynamic content ahead of static content (tokens counted with the
    GGUF `model`'s tokenizer, the bundled model's by default)."""
    from golive.patterns.tokens import model_tokenizer

    tok = model_tokenizer(model)
    stats = layout.analyze_requests(requests, tok)
    return LintResult(stats, stats.example or layout.lint_prompt(requests[0], tok))


def to_json(result: LintResult) -> dict[str, Any]:
    stats, report = result.stats, result.report
    return {
        "requests": stats.requests,
        "prompt_tokens": stats.prompt_tokens,
        "cacheable_tokens": stats.cacheable_tokens,
        "cacheable_tokens_reordered": stats.cacheable_tokens_reordered,
        "findings": [{"where": k, "kinds": stats.kinds[k], "requests": v}
                     for k, v in stats.findings.items()],
        "static_tokens_after_dynamic": report.static_tokens_after_dynamic,
        "reordered": report.reordered,
    }


def print_lint(result: LintResult, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    stats, report = result.stats, result.report
    if result.flagged:
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
    if result.flagged:
        console.print("\n[bold]proposed order[/bold] (static first):")
        for m in report.reordered:
            console.print(f"[dim]--- {m.get('role')} ---[/dim]", highlight=False)
            console.print(m.get("content", ""), markup=False, highlight=False)
