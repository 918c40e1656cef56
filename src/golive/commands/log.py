"""`golive log` and `golive log summary`: the request log from the terminal."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Annotated, Any

import typer

from golive.observe.requestlog import LOG_URL_ENV

log_app = typer.Typer(help="Show the request log (recent requests, or `summary`).")

_META_KEY = "golive.log.filters"

# Shared option declarations so `golive log` and `golive log summary` agree.
Since = Annotated[str | None, typer.Option(
    help='Only requests since: a duration ago ("30m", "1h", "2d", "1w") or an ISO date/time '
         "(UTC unless it carries an offset).")]
Until = Annotated[str | None, typer.Option(help="Only requests before this (same formats).")]
TierOpt = Annotated[str | None, typer.Option(help="Tier served: priority/default/flex/batch.")]
ModelOpt = Annotated[str | None, typer.Option(help="Model name.")]
EndpointOpt = Annotated[str | None, typer.Option(help='Endpoint, e.g. "/v1/chat/completions".')]
ClientOpt = Annotated[str | None, typer.Option("--client", help="Client id.")]
StatusOpt = Annotated[int | None, typer.Option(help="HTTP status, e.g. 429.")]
DbOpt = Annotated[str | None, typer.Option(
    "--db", envvar=LOG_URL_ENV,
    help="Database URL (default: sqlite requests.db in the golive data dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def parse_time_option(value: str | None, option: str, now: float | None = None) -> float | None:
    """parse_time for a command-line option: a bad value is a usage error naming `option`."""
    from golive.observe.logview import parse_time

    try:
        return parse_time(value, now)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None


@log_app.callback(invoke_without_command=True)
def list_requests(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show, newest first.")] = 20,
    since: Since = None,
    until: Until = None,
    tier: TierOpt = None,
    model: ModelOpt = None,
    endpoint: EndpointOpt = None,
    client: ClientOpt = None,
    status: StatusOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List recent requests (newest first)."""
    from golive.observe.logview import print_requests
    from golive.observe.requestlog import RequestLog

    filters = {"since": since, "until": until, "tier": tier, "model": model,
               "endpoint": endpoint, "client": client, "status": status, "db": db,
               "as_json": as_json}
    if ctx.invoked_subcommand is not None:
        # `golive log --tier flex summary`: hand the group's options down.
        # ctx.meta, not ctx.obj: the parent CLI may own obj.
        ctx.meta[_META_KEY] = filters
        return
    with RequestLog(db) as rlog:
        records = rlog.query(limit=limit, **_query_filters(filters))
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in records], indent=2))
        return
    print_requests(records, filtered=_any(filters))


@log_app.command()
def summary(
    ctx: typer.Context,
    since: Since = None,
    until: Until = None,
    tier: TierOpt = None,
    model: ModelOpt = None,
    endpoint: EndpointOpt = None,
    client: ClientOpt = None,
    status: StatusOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Latency per tier (p50/p95), cost per day, cache hit rate, token totals."""
    from golive.observe.logview import print_summary
    from golive.observe.requestlog import RequestLog

    own = {"since": since, "until": until, "tier": tier, "model": model, "endpoint": endpoint,
           "client": client, "status": status, "db": db, "as_json": as_json}
    parent = ctx.meta.get(_META_KEY, {})
    filters: dict[str, Any] = {k: parent.get(k, v) if v is None or v is False else v
                               for k, v in own.items()}
    with RequestLog(filters["db"]) as rlog:
        s = rlog.summary(**_query_filters(filters))
    if filters["as_json"]:
        typer.echo(json.dumps(s, indent=2))
        return
    print_summary(s)


def _query_filters(f: dict[str, Any]) -> dict[str, Any]:
    now = time.time()  # one "now" so --since 1h --until 10m is a consistent window
    times = {key: parse_time_option(f[key], f"--{key}", now) for key in ("since", "until")}
    return {**times, "tier": f["tier"], "model": f["model"], "endpoint": f["endpoint"],
            "client_id": f["client"], "status": f["status"]}


def _any(f: dict[str, Any]) -> bool:
    return any(f[k] is not None for k in ("since", "until", "tier", "model", "endpoint",
                                           "client", "status"))
