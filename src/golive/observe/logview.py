"""`golive log`: read the request log from the terminal.

`golive log` lists recent requests; `golive log summary` shows latency per
tier, cost per day and the cache hit rate. `--json` gives machine output.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from golive.observe.requestlog import LOG_URL_ENV, RequestLog

log_app = typer.Typer(help="Show the request log (recent requests, or `summary`).")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
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


def parse_time(value: str | None, now: float | None = None) -> float | None:
    """'1h'-style durations (back from now) or ISO dates/times -> unix seconds."""
    if value is None:
        return None
    text = value.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if m:
        return (time.time() if now is None else now) - float(m[1]) * _UNITS[m[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: expected a duration like 30m, 1h, 2d or an ISO date/time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # the log's days are UTC days too
    return when.timestamp()


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
    console = Console()
    if not records:
        console.print("no requests logged" + (" matching the filters" if _any(filters) else ""))
        return
    # Endpoint is left to --json/--endpoint: numbers must never be cut, so on a
    # narrow terminal the year and the client column go, and text columns fold.
    narrow = console.width < 100
    show_client = not narrow and any(r.client_id for r in records)
    table = Table(title=f"last {len(records)} requests (UTC)",
                  caption="times in ms; tokens: in/cached/out",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    names = ["time", "model", "tier", "HTTP", "ttft", "total", "tokens", "cost $"]
    for name in names + (["client"] if show_client else []):
        text = name in ("model", "tier", "client")
        table.add_column(name, justify="left" if text or name == "time" else "right",
                         no_wrap=not text, overflow="fold", min_width=5 if text else None)
    for r in records:
        tier_text = (r.tier_served if r.tier_requested in (r.tier_served, "")
                     else f"{r.tier_requested}>{r.tier_served}")
        row = [
            # escape: model names and client ids are user data, not rich markup
            _utc(r.created, short=narrow), escape(r.model), escape(tier_text), _status(r.status),
            _ms(r.ttft_s), _ms(r.total_s),
            f"{r.prompt_tokens}/{r.cached_tokens}/{r.completion_tokens}", f"{r.cost_usd:.6f}",
        ]
        table.add_row(*row, *([escape(r.client_id or "")] if show_client else []))
    console.print(table)


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
    console = Console()
    hit = s["cache_hit_rate"]
    overview = Table(title="request log summary", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    overview.add_row("requests", str(s["count"]))
    overview.add_row("errors (status >= 400)", str(s["errors"]))
    overview.add_row("cost $", f"{s['cost_usd']:.6f}")
    overview.add_row("cache hit rate", "-" if hit is None else f"{hit:.1%}")
    for name, value in s["tokens"].items():
        overview.add_row(name.replace("_", " "), str(value))
    console.print(overview)

    lat = Table(title="latency per tier served (ms, successful requests)")
    for col in ("tier", "requests", "ok", "ttft p50", "ttft p95", "total p50", "total p95"):
        lat.add_column(col, justify="left" if col == "tier" else "right")
    for t, v in s["latency"].items():
        lat.add_row(escape(t), str(v["count"]), str(v["ok"]), _ms(v["ttft_p50"]),
                    _ms(v["ttft_p95"]), _ms(v["total_p50"]), _ms(v["total_p95"]))
    console.print(lat)

    days = Table(title="cost per day (UTC)")
    days.add_column("date")
    days.add_column("cost $", justify="right")
    for day, usd in s["cost_per_day"].items():
        days.add_row(day, f"{usd:.6f}")
    console.print(days)


def _query_filters(f: dict[str, Any]) -> dict[str, Any]:
    now = time.time()  # one "now" so --since 1h --until 10m is a consistent window
    times = {}
    for key in ("since", "until"):
        try:
            times[key] = parse_time(f[key], now)
        except typer.BadParameter as e:
            raise typer.BadParameter(e.message, param_hint=f"--{key}") from None
    return {**times, "tier": f["tier"], "model": f["model"], "endpoint": f["endpoint"],
            "client_id": f["client"], "status": f["status"]}


def _any(f: dict[str, Any]) -> bool:
    return any(f[k] is not None for k in ("since", "until", "tier", "model", "endpoint",
                                           "client", "status"))


def _utc(ts: float, short: bool = False) -> str:
    fmt = "%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _status(code: int) -> str:
    return str(code) if code < 400 else f"[red]{code}[/red]"
