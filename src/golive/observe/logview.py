"""The request log in the terminal: the tables `golive log` prints (golive.commands.log).

`golive log` lists recent requests; `golive log summary` shows latency per
tier, cost per day and the cache hit rate. `--json` gives machine output.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from golive.observe.record import RequestRecord

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHORT_TIER = {"priority": "prio", "default": "def"}


def parse_time(value: str | None, now: float | None = None) -> float | None:
    """'1h'-style durations (back from now) or ISO dates/times -> unix seconds.

    ValueError names the value and the formats when it is neither."""
    if value is None:
        return None
    text = value.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if m:
        return (time.time() if now is None else now) - float(m[1]) * _UNITS[m[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r}: expected a duration like 30m, 1h, 2d or an ISO date/time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # the log's days are UTC days too
    return when.timestamp()


def print_requests(records: Sequence[RequestRecord], console: Console | None = None,
                   filtered: bool = False) -> None:
    """The recent-requests table. Numbers are never cut. Below 100 columns the year, the
    client column and long tier names go, a single model moves to the title, and the
    text columns get what is left and end in an ellipsis instead of folding."""
    console = console or Console()
    if not records:
        console.print("no requests logged" + (" matching the filters" if filtered else ""))
        return
    narrow = console.width < 100
    models = {r.model for r in records}
    show_model = not narrow or len(models) > 1
    show_client = not narrow and any(r.client_id for r in records)
    title = f"last {len(records)} requests (UTC)"
    if not show_model:
        title += f", model {next(iter(models))}"
    names = ["time", *(["model"] if show_model else []), "tier", "HTTP", "ttft", "total",
             "tokens", "cost $", *(["client"] if show_client else [])]
    rows = []
    for r in records:
        served, asked = r.tier_served, r.tier_requested
        if narrow:
            served, asked = _SHORT_TIER.get(served, served), _SHORT_TIER.get(asked, asked)
        tier = served if r.tier_requested in (r.tier_served, "") else f"{asked}>{served}"
        rows.append([_utc(r.created, short=narrow), *([r.model] if show_model else []), tier,
                     str(r.status), _ms(r.ttft_s), _ms(r.total_s),
                     f"{r.prompt_tokens}/{r.cached_tokens}/{r.completion_tokens}",
                     f"{r.cost_usd:.6f}", *([r.client_id or ""] if show_client else [])])
    texts = {"model", "tier", "client"}
    need = {n: max(len(n), *(len(row[k]) for row in rows)) for k, n in enumerate(names)}
    # numbers take what they need; the text columns share the rest, the narrowest need
    # first, at least 4 each (padding comes on top of a width; SIMPLE_HEAD
    # puts a one-space rule between columns)
    pad = {n: 0 if n == names[-1] else 1 for n in names}
    free = console.width - sum(need[n] + pad[n] for n in names if n not in texts) \
        - (len(names) - 1)
    widths: dict[str, int | None] = dict.fromkeys(names)
    left = [n for n in sorted(texts & set(names), key=lambda n: need[n])]
    free -= sum(pad[n] for n in left)
    for i, n in enumerate(left):
        w = max(4, min(need[n], free // (len(left) - i)))
        widths[n] = w
        free -= w
    table = Table(title=escape(title), caption="times in ms; tokens: in/cached/out",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for name in names:
        text = name in texts
        table.add_column(name, justify="left" if text or name == "time" else "right",
                         no_wrap=True, overflow="ellipsis" if text else "fold",
                         width=widths[name])
    for row in rows:
        # escape: model names and client ids are user data, not rich markup
        table.add_row(*[_status(int(c)) if n == "HTTP" else escape(c)
                        for n, c in zip(names, row, strict=True)])
    console.print(table)


def print_summary(s: dict[str, Any], console: Console | None = None) -> None:
    """Latency per tier, cost per day, cache hit rate and token totals (RequestLog.summary)."""
    console = console or Console()
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


def _utc(ts: float, short: bool = False) -> str:
    fmt = "%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _status(code: int) -> str:
    return str(code) if code < 400 else f"[red]{code}[/red]"
