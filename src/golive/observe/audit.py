"""`golive audit`: read the request log, say which lever would pay off and by how much.

Each check looks at the logged traffic for one lever of the playbook and
reports what it found and the measured or estimated gain:

- generate fewer tokens: output generation's share of latency, answers cut
  by max_tokens;
- static prefix first: requests that could share a prefix, and the cached
  tokens they would get (needs request bodies: `golive serve --log-bodies`);
- parallelize: requests sent one after another by one client with no data
  dependency between them;
- don't default to an LLM: identical deterministic requests sent again;
- fewer input tokens: large inputs with little relevant content;
- flex / batch: latency-insensitive bulk traffic on the default tier and what
  the cheaper tiers would save.

Estimates are labelled as such; nothing here calls a model. A check that needs
request bodies says so when the log has none (`Finding.unknown`) instead of
reporting zero.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from golive.observe.cost import PriceTable
from golive.observe.record import RequestRecord

# thresholds, in one place so the report can state them
SEQ_GAP_S = 2.0  # max idle gap between two requests of one chain
BULK_MIN = 5  # requests from one client in one window = a bulk job
BULK_WINDOW_S = 60.0
LARGE_INPUT_TOKENS = 400
IRRELEVANT_SHARE = 0.5  # a large input where half or more could go

NOT_LOGGED = "request bodies are not logged; start the server with --log-bodies"


@dataclass
class Finding:
    lever: str
    found: str
    gain: str
    requests: list[str] = field(default_factory=list)  # ids involved
    # numbers for the charts and for scripts
    metrics: dict[str, float] = field(default_factory=dict)
    # what the check could not see, e.g. NOT_LOGGED: its zeros then mean "unknown"
    unknown: str = ""

    @property
    def hit(self) -> bool:
        return bool(self.requests)


def _body(r: RequestRecord) -> dict[str, Any] | None:
    if not r.request_body:
        return None
    try:
        b = json.loads(r.request_body)
    except json.JSONDecodeError:
        return None
    return b if isinstance(b, dict) else None


def _response_text(r: RequestRecord) -> str:
    if not r.response_body:
        return ""
    try:
        d = json.loads(r.response_body)
    except json.JSONDecodeError:
        return r.response_body
    return " ".join(c.get("content") or c.get("text") or "" for c in d.get("choices", []))


def _ok(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    return sorted((r for r in records if r.status == 200), key=lambda r: r.created)


def _coverage(relevant: Sequence[RequestRecord], seen: Sequence[RequestRecord]) -> str:
    """'' when the check saw every relevant request's body; else what it could not see."""
    if not relevant or len(seen) == len(relevant):
        return ""
    if not seen:
        return NOT_LOGGED
    return (f"only the {len(seen)} of {len(relevant)} requests with logged bodies were "
            "checked; " + NOT_LOGGED)


def _unknown(lever: str, what: str, note: str, metrics: dict[str, float]) -> Finding:
    return Finding(lever, f"{what}: unknown, {note}", "-", [], metrics, note)


# ---- the checks ----------------------------------------------------------------------


def check_output_share(records: Sequence[RequestRecord]) -> Finding:
    rs = [r for r in _ok(records) if r.ttft_s is not None and r.total_s > 0]
    total = sum(r.total_s for r in rs)
    decode = sum(max(r.total_s - r.ttft_s, 0.0) for r in rs)
    share = decode / total if total else 0.0
    capped = [r for r in rs if r.finish_reason == "length"]
    seen = [(r, b) for r in rs if (b := _body(r)) is not None]
    unbounded = [r for r, b in seen
                 if b.get("max_tokens") is None and b.get("max_completion_tokens") is None]
    note = _coverage(rs, seen)
    if rs and not seen:
        limits = f"max_tokens: unknown, {note}"
    elif note:
        limits = (f"{len(unbounded)} of the {len(seen)} requests with logged bodies set no "
                  f"max_tokens ({len(rs) - len(seen)} not logged)")
    else:
        limits = f"{len(unbounded)} requests set no max_tokens"
    metrics = {"output_share": share, "length_cut": len(capped)}
    if seen:
        metrics["no_max_tokens"] = len(unbounded)
    # the requests where generating output took most of the time gain most from fewer tokens
    hit = [r.id for r in rs if r.total_s - r.ttft_s >= 0.5 * r.total_s]
    return Finding(
        "generate fewer tokens",
        f"generating output is {share:.0%} of request time over {len(rs)} requests "
        f"(most of the time for {len(hit)}); "
        f"{len(capped)} answers were cut by max_tokens; {limits}",
        f"halving output tokens saves about {share / 2:.0%} of latency (estimate)",
        hit, metrics, note)


def check_prefix(records: Sequence[RequestRecord], tokenizer: Any = None,
                 prices: PriceTable | None = None) -> Finding:
    from golive.patterns import layout

    chats = [r for r in _ok(records) if r.endpoint == "/v1/chat/completions"]
    rs = [r for r in chats if _body(r)]
    measured = sum(r.cached_tokens for r in rs)
    if chats and not rs:
        return _unknown("static prefix first", "which requests could share a prefix",
                        NOT_LOGGED, {"cached_tokens": sum(r.cached_tokens for r in chats)})
    if len(rs) < 2:
        return Finding("static prefix first", "too few logged chat bodies to compare "
                       "(serve with --log-bodies)", "-", [], {"cached_tokens": measured},
                       _coverage(chats, rs))
    # requests are compared within one system prompt "family" (same client)
    by_client: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in rs:
        by_client[r.client_id or "-"].append(r)
    gain_tokens = now_tokens = 0
    hits: list[str] = []
    where: set[str] = set()
    for group in by_client.values():
        if len(group) < 2:
            continue
        stats = layout.analyze_requests([_body(r) for r in group], tokenizer)
        now_tokens += stats.cacheable_tokens
        if stats.gain_tokens > 0 and stats.findings:
            gain_tokens += stats.gain_tokens
            hits += [r.id for r in group]
            where |= {f"{k} ({', '.join(stats.kinds[k])})" for k in stats.findings}
    saving = 0.0
    if prices is not None and rs:
        p = prices.price_for(rs[0].model)
        saving = gain_tokens * (p.input - p.cached_input) * 1e-6
    note = _coverage(chats, rs)
    return Finding(
        "static prefix first",
        f"{len(hits)} requests put dynamic content ahead of static text"
        + (f": {'; '.join(sorted(where))}" if where else "")
        + f"; cached tokens served: {measured}" + (f" ({note})" if note else ""),
        f"static-first order would add {gain_tokens} cached prompt tokens "
        f"(${saving:.6f} at list prices; less prefill, lower TTFT)",
        hits, {"cached_tokens_now": measured, "cacheable_now": now_tokens,
               "extra_cached_tokens": gain_tokens, "saving_usd": saving}, note)


def _strings(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, dict):
        return [s for x in v.values() for s in _strings(x)]
    if isinstance(v, list):
        return [s for x in v for s in _strings(x)]
    return []


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _count(phrase: list[str], words: list[str]) -> int:
    n = len(phrase)
    return sum(words[i:i + n] == phrase for i in range(len(words) - n + 1)) if n else 0


def _depends(prev: RequestRecord, nxt: RequestRecord) -> bool | None:
    """Does `nxt`'s request use `prev`'s answer? None when bodies are missing.

    The answer counts as used when its opening words occur in `nxt`'s request
    more often than they already did in `prev`'s own request: a one-word answer
    such as "You" or a question echoed back ("The capital of France") is found
    in text the two requests share, which says nothing about a dependency.
    """
    prev_body, nxt_body = _body(prev), _body(nxt)
    if prev_body is None or nxt_body is None or not prev.response_body:
        return None
    phrase = _words(_response_text(prev))[:8]
    if not phrase:
        return False
    before = _count(phrase, _words(" ".join(_strings(prev_body))))
    return _count(phrase, _words(" ".join(_strings(nxt_body)))) > before


def check_sequential(records: Sequence[RequestRecord]) -> Finding:
    by_client: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in _ok(records):
        by_client[r.client_id or "-"].append(r)
    chains: list[list[RequestRecord]] = []
    unchecked = 0  # back-to-back pairs whose bodies are not logged
    for group in by_client.values():
        chain: list[RequestRecord] = []
        for r in group:
            prev = chain[-1] if chain else None
            end = prev.created + prev.total_s if prev else 0.0
            adjacent = prev is not None and end - 0.05 <= r.created <= end + SEQ_GAP_S
            dep = _depends(prev, r) if adjacent else None
            unchecked += adjacent and dep is None
            if adjacent and dep is False:
                chain.append(r)
            else:
                if len(chain) >= 2:
                    chains.append(chain)
                chain = [r]
        if len(chain) >= 2:
            chains.append(chain)
    wall = sum(c[-1].created + c[-1].total_s - c[0].created for c in chains)
    par = sum(max(r.total_s for r in c) for c in chains)
    ids = [r.id for c in chains for r in c]
    metrics = {"chains": len(chains), "wall_s": wall, "parallel_s": par}
    if unchecked and not chains:
        return _unknown("parallelize", f"{unchecked} back-to-back requests follow another one; "
                        "whether they use the previous answer", NOT_LOGGED, metrics)
    note = (f"{unchecked} back-to-back requests not checked: {NOT_LOGGED}" if unchecked
            else "")
    return Finding(
        "parallelize",
        f"{len(chains)} chains of back-to-back requests ({len(ids)} requests) where no request "
        "uses the previous answer" + (f" ({note})" if note else ""),
        f"sending each chain at once: {wall:.2f}s -> about {par:.2f}s of waiting (estimate: the "
        "slowest request of each chain)",
        ids, metrics, note)


def _deterministic(b: dict[str, Any]) -> bool:
    t = b.get("temperature")
    return (t is not None and t == 0) or b.get("seed") is not None


def check_repeats(records: Sequence[RequestRecord]) -> Finding:
    groups: dict[str, list[RequestRecord]] = defaultdict(list)
    ok = _ok(records)
    seen = [r for r in ok if _body(r) is not None]
    note = _coverage(ok, seen)
    if ok and not seen:
        return _unknown("rules / cache before the model",
                        "deterministic requests sent again", note,
                        {"repeats": 0, "saving_usd": 0.0, "saving_s": 0.0})
    for r in seen:
        b = _body(r)
        if b is None or not _deterministic(b) or b.get("n", 1) != 1:
            continue
        key = json.dumps({k: v for k, v in b.items() if k not in ("stream", "stream_options",
                                                                    "user", "metadata")},
                         sort_keys=True)
        groups[key].append(r)
    repeats = [g for g in groups.values() if len(g) >= 2]
    extra = [r for g in repeats for r in g[1:]]
    cost = sum(r.cost_usd for r in extra)
    secs = sum(r.total_s for r in extra)
    return Finding(
        "rules / cache before the model",
        f"{len(repeats)} deterministic requests were sent again ({len(extra)} repeats)"
        + (f" ({note})" if note else ""),
        f"answering repeats from a cache or rule saves {len(extra)} requests, {secs:.2f}s of "
        f"model time and ${cost:.6f} (measured)",
        [r.id for g in repeats for r in g], {"repeats": len(extra), "saving_usd": cost,
                                              "saving_s": secs}, note)


def _relevant_share(text: str, tokenizer: Any) -> tuple[int, int]:
    """(tokens now, tokens after cleaning HTML and pruning to the question's chunks)."""
    from golive.patterns import compress
    from golive.patterns.tokens import as_tokenizer, count

    tok = as_tokenizer(tokenizer)
    before = count(tok, text)
    body = text
    if "<" in text and "</" in text:  # HTML: keep the main text
        body = compress.html_to_text(text, tok).value
    paras = [p for p in body.replace("\r", "").split("\n") if p.strip()]
    question = paras[-1] if paras else ""
    kept = compress.prune_chunks(paras[:-1], question, before, tok).value if len(paras) > 1 \
        else paras
    after = count(tok, "\n".join([*kept, question]))
    return before, min(after, before)


def check_large_inputs(records: Sequence[RequestRecord], tokenizer: Any = None,
                       prices: PriceTable | None = None) -> Finding:
    from golive.patterns.tokens import content_text

    hits, saved_tokens, saving = [], 0, 0.0
    large = [r for r in _ok(records) if r.prompt_tokens >= LARGE_INPUT_TOKENS]
    seen = [r for r in large if _body(r) is not None]
    note = _coverage(large, seen)
    if large and not seen:
        return _unknown("fewer input tokens", f"{len(large)} large requests (>= "
                        f"{LARGE_INPUT_TOKENS} prompt tokens); how much of their input is "
                        "markup or unrelated", note, {"tokens_saved": 0, "saving_usd": 0.0})
    for r in seen:
        b = _body(r)
        if b is None or not b.get("messages"):
            continue
        text = content_text(b["messages"][-1])
        before, after = _relevant_share(text, tokenizer)
        if before and (before - after) / before >= IRRELEVANT_SHARE:
            hits.append(r.id)
            saved_tokens += before - after
            if prices is not None:
                saving += (before - after) * prices.price_for(r.model).input * 1e-6
    return Finding(
        "fewer input tokens",
        f"{len(hits)} large requests (>= {LARGE_INPUT_TOKENS} prompt tokens) where most of the "
        "input is markup or unrelated to the question" + (f" ({note})" if note else ""),
        f"cleaning and pruning would drop about {saved_tokens} prompt tokens "
        f"(${saving:.6f}; estimate with golive.patterns.compress)",
        hits, {"tokens_saved": saved_tokens, "saving_usd": saving}, note)


def check_tiers(records: Sequence[RequestRecord], prices: PriceTable | None = None) -> Finding:
    prices = prices or PriceTable.load()
    by_client: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in _ok(records):
        if r.tier_served in ("default", "priority") and not r.stream:
            by_client[r.client_id or "-"].append(r)
    bulk: list[RequestRecord] = []
    for group in by_client.values():
        start = 0
        for end in range(len(group)):
            while group[end].created - group[start].created > BULK_WINDOW_S:
                start += 1
            if end - start + 1 >= BULK_MIN:
                bulk.extend(group[start:end + 1])
    bulk = list({r.id: r for r in bulk}.values())
    now = sum(r.cost_usd for r in bulk)
    flex = sum(prices.cost(r.model, "flex", r.prompt_tokens, r.cached_tokens,
                           r.completion_tokens, r.rejected_prediction_tokens) for r in bulk)
    batch = sum(prices.cost(r.model, "batch", r.prompt_tokens, r.cached_tokens,
                            r.completion_tokens, r.rejected_prediction_tokens) for r in bulk)
    return Finding(
        "flex / batch",
        f"{len(bulk)} non-streamed requests arrived in bulk (>= {BULK_MIN} from one client within "
        f"{BULK_WINDOW_S:.0f}s) on the default or priority tier",
        f"cost ${now:.6f} now; ${flex:.6f} on flex, ${batch:.6f} through the batch API "
        f"(saves ${now - min(flex, batch):.6f}, price table)",
        [r.id for r in bulk], {"cost_now": now, "cost_flex": flex, "cost_batch": batch})


# ---- the report ----------------------------------------------------------------------


@dataclass
class AuditReport:
    requests: int
    with_bodies: int
    findings: list[Finding]
    summary: dict[str, Any]

    def finding(self, lever: str) -> Finding:
        return next(f for f in self.findings if f.lever == lever)


def audit(records: Sequence[RequestRecord], tokenizer: Any = None,
          prices: PriceTable | None = None) -> AuditReport:
    from golive.observe.requestlog import summarize

    prices = prices or PriceTable.load()
    rows = [{k: getattr(r, k) for k in ("created", "tier_served", "status", "ttft_s", "total_s",
                                        "cost_usd", "prompt_tokens", "cached_tokens",
                                        "completion_tokens", "accepted_prediction_tokens",
                                        "rejected_prediction_tokens")} for r in records]
    findings = [
        check_output_share(records),
        check_prefix(records, tokenizer, prices),
        check_sequential(records),
        check_repeats(records),
        check_large_inputs(records, tokenizer, prices),
        check_tiers(records, prices),
    ]
    return AuditReport(len(records), sum(1 for r in records if r.request_body), findings,
                       summarize(rows))


def print_report(report: AuditReport, console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    t = Table("lever", "found", "gain", "requests", title=f"golive audit: {report.requests} "
              f"requests ({report.with_bodies} with bodies)", show_lines=True)
    for f in report.findings:
        style = "[bold]" if f.hit else "[yellow]" if f.unknown else "[dim]"
        t.add_row(style + escape(f.lever), escape(f.found), escape(f.gain),
                  "?" if f.unknown and not f.hit else str(len(f.requests)))
    console.print(t)
    if any(f.unknown for f in report.findings):
        console.print(f"[yellow]some checks could not see the traffic: {NOT_LOGGED}[/yellow]"
                      if report.with_bodies == 0 else
                      "[yellow]some checks saw only part of the traffic (see 'found')[/yellow]")


def _bar_chart(title: str, items: list[tuple[str, float]], unit: str = "") -> str:
    """A small horizontal bar chart as inline SVG (no plotting library needed)."""
    width, bar_h, left = 560, 22, 190
    top = max((v for _, v in items), default=0) or 1.0
    h = 30 + bar_h * len(items)
    parts = [f'<svg width="{width}" height="{h}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="16" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, v) in enumerate(items):
        y = 26 + i * bar_h
        w = (width - left - 90) * v / top
        parts.append(f'<text x="0" y="{y + 15}">{html.escape(label)}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" '
                     f'fill="#3b82f6"/><text x="{left + w + 6:.1f}" y="{y + 15}">'
                     f'{v:.6g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def report_json(report: AuditReport) -> dict[str, Any]:
    """What `golive audit --json` prints."""
    return {"requests": report.requests, "with_bodies": report.with_bodies,
            "findings": [dataclasses.asdict(f) for f in report.findings]}


def html_report(report: AuditReport) -> str:
    s = report.summary
    rows = "".join(
        f"<tr class='{'hit' if f.hit else 'miss'}'><td>{html.escape(f.lever)}</td>"
        f"<td>{html.escape(f.found)}</td><td>{html.escape(f.gain)}</td>"
        f"<td>{len(f.requests)}</td></tr>" for f in report.findings)
    by = {f.lever: f for f in report.findings}
    tiers = by["flex / batch"].metrics
    charts = [
        _bar_chart("requests involved, by lever", [(f.lever, len(f.requests))
                                                   for f in report.findings]),
        _bar_chart("bulk traffic cost by tier (USD)", [("as served", tiers["cost_now"]),
                                                       ("flex", tiers["cost_flex"]),
                                                       ("batch", tiers["cost_batch"])]),
        _bar_chart("where request time goes", [
            ("generating output", by["generate fewer tokens"].metrics["output_share"] * 100),
            ("everything else", 100 - by["generate fewer tokens"].metrics["output_share"] * 100)],
            "%"),
        _bar_chart("prompt tokens", [
            ("prompt", s["tokens"]["prompt_tokens"]),
            ("served from cache", s["tokens"]["cached_tokens"]),
            ("more cacheable static-first", by["static prefix first"].metrics.get(
                "extra_cached_tokens", 0)),
            ("removable (compress)", by["fewer input tokens"].metrics["tokens_saved"])]),
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>golive audit</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1100px; }}
table {{ border-collapse: collapse; width: 100%; margin: 1rem 0; }}
td, th {{ border: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
tr.hit td:first-child {{ font-weight: bold; }} tr.miss {{ color: #777; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 2rem; }} svg text {{ font-size: 12px; }}
</style></head><body>
<h1>golive audit</h1>
<p>{report.requests} requests ({report.with_bodies} with bodies), {s['errors']} errors,
cost ${s['cost_usd']:.6f}, prefix-cache hit rate
{(s['cache_hit_rate'] or 0):.0%}.</p>
<table><tr><th>lever</th><th>found</th><th>gain</th><th>requests</th></tr>{rows}</table>
<div class="charts">{''.join(charts)}</div>
</body></html>
"""
