"""`golive levers demo`: every application lever, before and after, on this machine.

Starts a golive server on the embedded model (a subprocess on a free
127.0.0.1 port, stopped at the end) or uses one given with --url, runs each
lever against it with the official `openai` client, and prints one table:
latency, tokens, requests and cost without and with the lever.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from golive.localserver import LocalServer

DOC_MARKER = "levers:demo"


# ---- measuring -------------------------------------------------------------------------


@dataclass
class Measure:
    """One variant of one lever: what it cost to do the same job."""

    latency_s: float = 0.0  # wall time of the whole job (or TTFT where noted)
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    ttfts: list[float] = field(default_factory=list)

    @property
    def ttft_p50(self) -> float | None:
        return statistics.median(self.ttfts) if self.ttfts else None


@dataclass
class LeverResult:
    lever: str
    baseline: str
    variant: str
    before: Measure
    after: Measure
    note: str = ""


class Meter:
    """An AsyncOpenAI client that adds up requests, tokens and cost as it goes.

    Cost comes from the server (`x-golive-cost-usd`) where it says so, else
    from the price table at the tier the response reports (`service_tier`).
    """

    def __init__(self, client: Any, model: str):
        from golive.observe.cost import PriceTable

        self.client = client
        self.model = model
        self.prices = PriceTable.load()

    def _add(self, m: Measure, usage: Any, tier: str | None, cost: float | None) -> None:
        m.requests += 1
        if usage is None:
            return
        cached = (usage.prompt_tokens_details.cached_tokens
                  if usage.prompt_tokens_details else 0) or 0
        m.prompt_tokens += usage.prompt_tokens
        m.cached_tokens += cached
        m.completion_tokens += usage.completion_tokens
        if cost is None:
            cost = self.prices.cost(self.model, tier or "default", usage.prompt_tokens, cached,
                                    usage.completion_tokens, 0)
        m.cost_usd += cost

    async def chat(self, m: Measure, **params: Any) -> str:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=self.model, **params)
        r = raw.parse()
        header = raw.headers.get("x-golive-cost-usd")
        self._add(m, r.usage, r.service_tier, float(header) if header else None)
        return r.choices[0].message.content or ""

    async def stream(self, m: Measure, **params: Any) -> str:
        t0 = time.monotonic()
        stream = await self.client.chat.completions.create(
            model=self.model, stream=True, stream_options={"include_usage": True}, **params)
        parts, usage, tier, first = [], None, None, None
        async for chunk in stream:
            tier = chunk.service_tier or tier
            usage = chunk.usage or usage
            for c in chunk.choices:
                if c.delta and c.delta.content:
                    if first is None:
                        first = time.monotonic() - t0
                    parts.append(c.delta.content)
        if first is not None:
            m.ttfts.append(first)
        self._add(m, usage, tier, None)
        return "".join(parts)


async def timed(m: Measure, job: Awaitable[Any]) -> Any:
    t0 = time.monotonic()
    out = await job
    m.latency_s = time.monotonic() - t0
    return out


# ---- the levers ------------------------------------------------------------------------


def _msg(text: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}]


def _tag() -> str:
    """A fresh prompt opening: a variant must not reuse its baseline's cached prompt."""
    return f"[{uuid.uuid4().hex[:6]}] "


async def lever_parallel(meter: Meter, n: int) -> LeverResult:
    from golive.patterns.parallel import parallel

    topics = ["rivers", "bridges", "mills", "railways", "trams", "ferries", "floods", "granite"]
    qs = [f"Write one sentence about {topics[i % len(topics)]}." for i in range(n)]
    params = dict(max_tokens=24, temperature=0, seed=1)
    seq, par = Measure(), Measure()
    tag_seq, tag_par = _tag(), _tag()

    async def sequential() -> None:
        for q in qs:
            await meter.chat(seq, messages=_msg(tag_seq + q), **params)

    await timed(seq, sequential())
    await timed(par, parallel([lambda q=q: meter.chat(par, messages=_msg(tag_par + q), **params)
                               for q in qs]))
    return LeverResult("parallelize", f"{n} calls one after another", "same calls at once "
                       "(patterns.parallel)", seq, par)


def demo_page() -> str:
    """A web page: a short article inside the usual navigation, ads and scripts."""
    nav = "".join(f'<li><a href="/s/{i}">Section {i} of the heritage archive</a></li>'
                  for i in range(20))
    ads = "".join(f'<div class="ad">Advertisement {i}: book a river cruise now and save '
                  f'{10 + i}% on summer tickets with our partners.</div>' for i in range(5))
    script = "<script>" + "".join(f"track('slot{i}', {{pos:{i}}});" for i in range(25)) + \
             "</script>"
    article = (
        "<article><h1>The Varnholt bridge</h1>"
        "<p>For most of the nineteenth century the only way across the Selm river at Varnholt "
        "was a chain ferry that stopped whenever the spring floods came.</p>"
        "<p>The engineer Margit Ellison designed a three-span wrought-iron truss on two granite "
        "piers, quarried at Oskerby and floated downstream on barges.</p>"
        "<p>Floods in 1883 and 1885 washed away the scaffolding and delayed the work.</p>"
        "<p>The Varnholt bridge was completed in 1887 and opened on the 14th of September.</p>"
        "<p>It was strengthened in 1931 and 1968 and has been a footbridge since 1994.</p>"
        "</article>")
    return (f"<html><head><title>Varnholt bridge</title>{script}</head><body>"
            f"<nav><ul>{nav}</ul></nav><aside>{ads}</aside><main>{article}</main>"
            f"<footer>{ads}<p>Privacy policy | Terms | Sitemap</p></footer></body></html>")


async def lever_compress(meter: Meter, tokenizer: Any) -> LeverResult:
    from golive.patterns import compress

    page = demo_page()
    question = "When was the Varnholt bridge completed?"
    params = dict(max_tokens=16, temperature=0, seed=1)
    raw, small = Measure(), Measure()
    await timed(raw, meter.chat(raw, messages=_msg(f"{page}\n\nQuestion: {question}"), **params))
    text = compress.html_to_text(page, tokenizer).value
    chunks = [p for p in text.split("\n") if p.strip()]
    kept = compress.prune_chunks(chunks, question, 60, tokenizer).value
    context = "\n".join(kept)
    await timed(small, meter.chat(small, messages=_msg(f"{context}\n\nQuestion: {question}"),
                                  **params))
    return LeverResult("fewer input tokens", "raw HTML page in the prompt",
                       "main text, pruned to the relevant chunks (patterns.compress)", raw, small,
                       note=f"answer-bearing chunk kept: {'1887' in context}")


STATIC_RULES = (
    "You are the support assistant of Northern Rivers Heritage, a charity that looks after the "
    "bridges, mills and railways of the Selm valley. Answer visitors politely and briefly, in "
    "plain English. Never invent opening hours, prices or dates; if you do not know, say so and "
    "point to the contact page. Recommend the riverside path to walkers and the upstream "
    "bridge to drivers. Membership questions go to the membership office. Never give medical, "
    "legal or financial advice. Keep every answer under two sentences.")


async def lever_layout(meter: Meter, n: int, tokenizer: Any) -> LeverResult:
    from golive.patterns import layout

    nonce = uuid.uuid4().hex[:8]  # a fresh static text per run: nothing cached from before
    static = "\n\n".join(f"{STATIC_RULES} (Policy section {i}, revision {nonce}.)"
                         for i in range(4))
    params = dict(max_tokens=4, temperature=0, seed=1)
    dyn, stat = Measure(), Measure()
    dyn_first = []
    for i in range(n):
        head = f"Today is 2025-03-{10 + i:02d} {9 + i:02d}:15 UTC. Request id: {uuid.uuid4().hex}"
        dyn_first.append([{"role": "system", "content": f"{head}\n\n{static}"},
                          {"role": "user", "content": f"Question {i}: are you open today?"}])
    static_first = [layout.lint_prompt(m, tokenizer).reordered for m in dyn_first]

    async def run(m: Measure, convs: list[list[dict]]) -> None:
        for msgs in convs:  # one after another, as user traffic arrives
            await meter.stream(m, messages=msgs, **params)

    await timed(dyn, run(dyn, dyn_first))
    await timed(stat, run(stat, static_first))
    return LeverResult("static prefix first", "date and request id at the top",
                       "same prompt, static first (patterns.layout proposal)", dyn, stat,
                       note=_ttft_note(dyn, stat))


def _ttft_note(a: Measure, b: Measure) -> str:
    if a.ttft_p50 is None or b.ttft_p50 is None:
        return ""
    return f"TTFT p50 {a.ttft_p50 * 1000:.0f} ms -> {b.ttft_p50 * 1000:.0f} ms"


def demo_router():
    from golive.patterns.route import Router

    r = Router()
    r.regex("hours", r"\b(opening hours|when are you open|open today)\b",
            "We are open 9:00-17:00, Tuesday to Sunday.")
    r.lookup("faq", {"what is your phone number": "Call +1 555 0100.",
                     "where do i park": "Use the car park by the upstream bridge."})
    r.function("sum", lambda q: (str(sum(int(x) for x in re.findall(r"\d+", q)))
                                 if re.fullmatch(r"\s*what is \d+( plus \d+)+\??\s*", q, re.I)
                                 else None))
    return r


ROUTER_QUERIES = ["What are your opening hours?", "What is your phone number?",
                  "Where do I park?", "What is 12 plus 30?", "Are you open today?",
                  "Tell me a story about a bridge.", "Why do rivers flood?",
                  "What is 7 plus 8 plus 9?"]


async def lever_route(meter: Meter, n: int) -> LeverResult:
    queries = [ROUTER_QUERIES[i % len(ROUTER_QUERIES)] for i in range(n)]
    params = dict(max_tokens=24, temperature=0, seed=1)
    always, rules = Measure(), Measure()

    tag_always, tag_rules = _tag(), _tag()

    async def all_model() -> None:
        for q in queries:
            await meter.chat(always, messages=_msg(tag_always + q), **params)

    router = demo_router()

    async def rules_first() -> None:
        for q in queries:
            if router.try_rules(q) is None:
                await meter.chat(rules, messages=_msg(tag_rules + q), **params)

    await timed(always, all_model())
    await timed(rules, rules_first())
    return LeverResult("rules before the model", f"{n} queries, every one to the model",
                       "regex / lookup / function first (patterns.route)", always, rules,
                       note=f"rule hit rate {router.stats.total / max(n, 1):.0%}")


async def lever_streaming(meter: Meter) -> LeverResult:
    ask = "Describe a walk along a river in a few sentences."
    params = dict(max_tokens=64, temperature=0, seed=1)
    full, streamed = Measure(), Measure()
    await timed(full, meter.chat(full, messages=_msg(_tag() + ask), **params))
    await timed(streamed, meter.stream(streamed, messages=_msg(_tag() + ask), **params))
    # what the user waits for: the whole answer vs the first words
    streamed.latency_s = streamed.ttft_p50 or streamed.latency_s
    return LeverResult("stream the answer", "wait for the full response",
                       "stream; latency = time to first token", full, streamed)


async def lever_max_tokens(meter: Meter, cap: int) -> LeverResult:
    ask = "Write a long story about a bridge over a river."
    loose, tight = Measure(), Measure()
    await timed(loose, meter.chat(loose, messages=_msg(_tag() + ask), max_tokens=cap,
                                  temperature=0, seed=1))
    await timed(tight, meter.chat(tight, messages=_msg(_tag() + ask), max_tokens=32,
                                  stop=["\n\n"], temperature=0, seed=1))
    return LeverResult("generate fewer tokens", f"no limit (capped at {cap} for the demo)",
                       "max_tokens=32, stop at a blank line", loose, tight)


async def lever_tiers(meter: Meter, n: int) -> LeverResult:
    params = dict(max_tokens=24, temperature=0, seed=1)
    default, flex = Measure(), Measure()
    qs = [f"Give one tip for visiting a museum, number {i}." for i in range(n)]

    async def run(m: Measure, **extra: Any) -> None:
        tag = _tag()
        for q in qs:
            await meter.chat(m, messages=_msg(tag + q), **params, **extra)

    await timed(default, run(default))
    await timed(flex, run(flex, service_tier="flex"))
    # the same tokens through the batch API (no interactive latency to show)
    batch_cost = meter.prices.cost(meter.model, "batch", default.prompt_tokens,
                                   default.cached_tokens, default.completion_tokens)
    return LeverResult("flex / batch price", "service_tier default",
                       'service_tier="flex"', default, flex,
                       note=f"batch API for the same tokens: ${batch_cost:.7f} (price table)")


# ---- running ---------------------------------------------------------------------------


@dataclass
class DemoConfig:
    parallel_calls: int = 4
    layout_requests: int = 5
    router_queries: int = 8
    tier_requests: int = 2
    unbounded_cap: int = 200


LEVERS = ("parallelize", "fewer input tokens", "static prefix first", "rules before the model",
          "stream the answer", "generate fewer tokens", "flex / batch price")


async def run_demo(base_url: str, config: DemoConfig | None = None,
                   on_done: Callable[[LeverResult], None] | None = None) -> list[LeverResult]:
    """Run every lever against the server at `base_url` (…/v1 is added)."""
    from openai import AsyncOpenAI

    from golive.patterns.tokens import model_tokenizer

    cfg = config or DemoConfig()
    client = AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="golive-demo",
                         max_retries=0, timeout=600)
    model = (await client.models.list()).data[0].id
    meter = Meter(client, model)
    tok = model_tokenizer()
    await meter.chat(Measure(), messages=_msg("Hi"), max_tokens=1)  # warm up
    jobs = [
        lambda: lever_parallel(meter, cfg.parallel_calls),
        lambda: lever_compress(meter, tok),
        lambda: lever_layout(meter, cfg.layout_requests, tok),
        lambda: lever_route(meter, cfg.router_queries),
        lambda: lever_streaming(meter),
        lambda: lever_max_tokens(meter, cfg.unbounded_cap),
        lambda: lever_tiers(meter, cfg.tier_requests),
    ]
    out = []
    try:
        for job in jobs:
            res = await job()
            out.append(res)
            if on_done is not None:
                on_done(res)
    finally:
        await client.close()
    return out


class DemoServer(LocalServer):
    """`golive serve` on a free 127.0.0.1 port (golive.localserver), with its own data dir."""

    def __init__(self, *args: str):
        self._tmp = tempfile.TemporaryDirectory(prefix="golive-levers-")
        super().__init__(args, env={"GOLIVE_DATA_DIR": self._tmp.name},
                         log_path=Path(self._tmp.name) / "server.log", ready_timeout=180)

    def stop(self) -> None:
        super().stop()
        self._tmp.cleanup()


# ---- output ----------------------------------------------------------------------------


def _fmt_cost(c: float) -> str:
    return f"${c:.7f}"


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}x" if a else "-"


def table_rows(results: list[LeverResult]) -> list[list[str]]:
    rows = []
    for r in results:
        for label, m, extra in ((r.baseline, r.before, ""), (r.variant, r.after, r.note)):
            rows.append([r.lever if m is r.before else "", label, f"{m.latency_s:.2f} s",
                         str(m.prompt_tokens), str(m.cached_tokens), str(m.completion_tokens),
                         str(m.requests), _fmt_cost(m.cost_usd),
                         _ratio(r.before.latency_s, r.after.latency_s) if m is r.after else "",
                         extra])
    return rows


HEADERS = ["lever", "variant", "latency", "prompt tok", "cached tok", "output tok", "requests",
           "cost", "latency ratio", "note"]


def markdown_table(results: list[LeverResult], header: str = "") -> str:
    lines = [header] if header else []
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |"
              for row in table_rows(results)]
    return "\n".join(lines) + "\n"


def update_doc(path: Path, results: list[LeverResult], header: str) -> None:
    start, end = f"<!-- {DOC_MARKER} -->", f"<!-- /{DOC_MARKER} -->"
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{markdown_table(results, header)}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def demo(url: str | None = None, json_out: Path | None = None, doc: Path | None = None,
         threads: int = 0) -> None:
    """Run each lever on the embedded model (or the server at `url`, its root without /v1)
    and print a before/after table; `golive levers demo` (golive.commands.levers)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    server = None
    t0 = time.monotonic()
    try:
        if url is None:
            with console.status("starting a golive server on the embedded model…"):
                server = DemoServer("--threads", str(threads)).start()
            url = server.url
        with console.status("running the levers…") as status:
            def done(r: LeverResult) -> None:
                console.print(f"[green]✓[/green] {r.lever}")
                status.update(f"running the levers… ({len(LEVERS) - LEVERS.index(r.lever) - 1}"
                              " left)")
            results = asyncio.run(run_demo(url, on_done=done))
    finally:
        if server is not None:
            server.stop()
    elapsed = time.monotonic() - t0
    t = Table(*HEADERS, title="golive levers demo: before / after, measured here")
    for row in table_rows(results):
        t.add_row(*row)
    console.print(t)
    console.print(f"[dim]{elapsed:.0f} s in all; cost at the price table's reference prices[/dim]")
    if json_out:
        json_out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    if doc:
        where = f"{os.cpu_count()} cores" + (f", server on {threads} thread(s)" if threads else "")
        update_doc(doc, results, f"Measured by `golive levers demo` in {elapsed:.0f} s "
                                 f"({where}).\n")
