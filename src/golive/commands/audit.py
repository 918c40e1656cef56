"""`golive audit`: which lever would pay off, read from the request log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def audit(
    log_db: Annotated[Optional[str], typer.Option(help="Request-log database URL "
                                                       "(default: the data dir's SQLite)")] = None,
    limit: Annotated[int, typer.Option(help="Most recent requests to read")] = 10000,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write an HTML report "
                                                                    "with charts here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON")] = False,
) -> None:
    """Read the request log and report, per lever, what would pay off and by how much."""
    from golive.observe import audit as a
    from golive.observe.requestlog import RequestLog

    with RequestLog(log_db) as log:
        records = log.query(limit=limit)
    if not records:
        raise typer.BadParameter("the request log is empty", param_hint="--log-db")
    report = a.audit(records)
    if as_json:
        typer.echo(json.dumps(a.report_json(report), indent=2))
    else:
        a.print_report(report)
    if html_out is not None:
        html_out.write_text(a.html_report(report))
        if not as_json:
            typer.echo(f"HTML report: {html_out}")
