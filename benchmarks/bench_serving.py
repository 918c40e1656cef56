"""golive serve vs llama-cpp-python's own OpenAI server, same GGUF, same threads, same run.

    python benchmarks/bench_serving.py [--quick] [--model PATH.gguf] [--threads N]

Measures single-stream decode tokens/s, time to first token (TTFT), aggregate
tokens/s at 1, 4 and 16 concurrent streams, and TTFT with a cached ~1,000-token
shared prefix against an uncached one. Writes benchmarks/results/serving.json
and the `serving` table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
    Results,
    Server,
    StreamSample,
    concurrent_streams,
    default_gguf,
    fmt,
    make_client,
    markdown_table,
    median,
    ratio,
    running_server,
    sample_dicts,
    stream_chat,
    update_doc_section,
)

console = Console(stderr=True)

NAME = "serving"
MAX_TOKENS = 128  # per stream, for decode and concurrency
TTFT_MAX_TOKENS = 8  # TTFT runs only need the first token
CONCURRENCY = (1, 4, 16)
TARGETS = {"decode": 1.2, "aggregate_16": 2.0, "cached_over_uncached": 0.2}

# No ignore_eos in the OpenAI API: these prompts make the model write at length,
# and the table reports the completion tokens it actually produced.
TALKATIVE = [
    "Write a long, detailed story about a lighthouse keeper who finds a strange map. "
    "Describe every scene, every character and every conversation in detail.",
    "Explain in great detail how a steam engine works, step by step, with examples, "
    "its history, and its uses today.",
    "Write a long travel guide to a small coastal town: places to visit, food to try, "
    "history, walks, and advice for each season.",
]
TOPICS = [
    "volcanoes", "the history of bread", "honeybees", "the printing press", "glaciers",
    "chess openings", "the Roman roads", "coral reefs", "bicycles", "the moon landing",
    "tea ceremonies", "rainforests", "lighthouses", "paper making", "deep sea fish",
    "windmills",
]
QUESTIONS = [
    "How do I return a damaged item?", "Can I change my delivery address?",
    "What is the warranty on headphones?", "How do I reset my password?",
    "Do you ship to Canada?", "How long does a refund take?", "Can I pay in installments?",
    "What happens if my parcel is lost?", "How do I cancel my subscription?",
    "Is gift wrapping available?", "Can I order by phone?", "Where is my invoice?",
]


def handbook(n_rules: int = 44) -> str:
    """A deterministic ~1,000-token system prompt (SmolLM2's tokenizer; measured in results)."""
    rng = random.Random(0)
    subjects = ["returns", "refunds", "shipping", "warranties", "accounts", "payments",
                "subscriptions", "gift cards", "invoices", "repairs", "deliveries"]
    actions = ["check the order number first", "apologise once and then solve the problem",
               "offer the standard fourteen day window", "escalate to a senior agent",
               "confirm the customer's email address", "never promise a date you cannot keep",
               "explain the fee before charging it", "log the case in the ticket system"]
    rules = [
        f"Rule {i}: for questions about {rng.choice(subjects)}, {rng.choice(actions)}, "
        f"and {rng.choice(actions)}."
        for i in range(1, n_rules + 1)
    ]
    return ("You are the support assistant of Northwind Goods. Follow the handbook below.\n"
            + "\n".join(rules))


def user(text: str, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": text}]


async def measure(server: Server, reps: dict[str, int]) -> dict[str, Any]:
    """The whole workload against one running server, in a fixed order."""
    client = make_client(server)
    model = server.model_id
    out: dict[str, Any] = {}
    await stream_chat(client, model, user("Hello!"), 16)  # warm-up, not measured

    console.print(f"  [{server.name}] TTFT, short prompt")
    out["ttft_short"] = [await stream_chat(client, model, user("What is the capital of France?"),
                                           TTFT_MAX_TOKENS) for _ in range(reps["ttft"])]

    console.print(f"  [{server.name}] single-stream decode")
    out["decode"] = [await stream_chat(client, model, user(TALKATIVE[i % len(TALKATIVE)]),
                                       MAX_TOKENS) for i in range(reps["decode"])]

    # Uncached first, cached after: the peer keeps only its last prompt's KV, so
    # this order gives it its best case for the cached run.
    book = handbook()
    console.print(f"  [{server.name}] TTFT, ~1,000-token prefix, uncached")
    out["prefix_uncached"] = [  # a nonce at the very start: nothing to reuse
        await stream_chat(client, model, user(QUESTIONS[i % len(QUESTIONS)],
                                              f"Session {uuid.uuid4().hex}.\n{book}"),
                          TTFT_MAX_TOKENS)
        for i in range(reps["prefix"])
    ]
    console.print(f"  [{server.name}] TTFT, ~1,000-token prefix, cached")
    out["prefix_warm"] = await stream_chat(client, model, user(QUESTIONS[-1], book),
                                           TTFT_MAX_TOKENS)
    out["prefix_cached"] = [
        await stream_chat(client, model, user(QUESTIONS[i % len(QUESTIONS)], book),
                          TTFT_MAX_TOKENS)
        for i in range(reps["prefix"])
    ]

    for n in CONCURRENCY:
        console.print(f"  [{server.name}] {n} concurrent stream(s) x {reps['concurrency']}")
        convs = [user(f"Write a detailed essay about {TOPICS[i % len(TOPICS)]}. Cover its "
                      "history, how it works, and why it matters.") for i in range(n)]
        out[f"concurrent_{n}"] = [await concurrent_streams(client, model, convs, MAX_TOKENS)
                                  for _ in range(reps["concurrency"])]
    await client.close()
    return out


def summarize(raw: dict[str, Any]) -> dict[str, float | None]:
    def m(key: str, attr: str) -> float | None:
        return median([getattr(s, attr) for s in raw[key]])

    s: dict[str, float | None] = {
        "ttft_short_ms": _ms(m("ttft_short", "ttft_s")),
        "decode_tps": m("decode", "decode_tps"),
        "decode_completion_tokens": m("decode", "completion_tokens"),
        "prefix_prompt_tokens": m("prefix_cached", "prompt_tokens"),
        "prefix_uncached_ttft_ms": _ms(m("prefix_uncached", "ttft_s")),
        "prefix_cached_ttft_ms": _ms(m("prefix_cached", "ttft_s")),
        "prefix_cached_tokens": m("prefix_cached", "cached_tokens"),
    }
    s["cached_over_uncached"] = ratio(s["prefix_cached_ttft_ms"], s["prefix_uncached_ttft_ms"])
    for n in CONCURRENCY:
        runs: list[tuple[float, list[StreamSample]]] = raw[f"concurrent_{n}"]
        s[f"aggregate_{n}_tps"] = median([agg for agg, _ in runs])
        s[f"aggregate_{n}_completion_tokens"] = median(
            [sum(x.completion_tokens for x in ss) for _, ss in runs])
        # Per-stream TTFT shows queueing: a one-at-a-time server makes the last
        # stream wait for all the others.
        s[f"concurrent_{n}_ttft_median_ms"] = _ms(median([x.ttft_s for _, ss in runs for x in ss]))
        s[f"concurrent_{n}_ttft_max_ms"] = _ms(median([max(x.ttft_s for x in ss)
                                                        for _, ss in runs]))
    return s


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def raw_for_json(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in raw.items():
        if key.startswith("concurrent_"):
            out[key] = [{"aggregate_tps": agg, "streams": sample_dicts(ss),
                         "finish_reasons": dict(Counter(x.finish_reason for x in ss))}
                        for agg, ss in val]
        elif isinstance(val, StreamSample):
            out[key] = sample_dicts([val])[0]
        else:
            out[key] = sample_dicts(val)
    return out


def compute_ratios(g: dict[str, float | None], p: dict[str, float | None]) -> dict[str, Any]:
    r: dict[str, Any] = {
        "decode": ratio(g.get("decode_tps"), p.get("decode_tps")),
        "ttft_short": ratio(g.get("ttft_short_ms"), p.get("ttft_short_ms")),
        "prefix_cached_ttft": ratio(g.get("prefix_cached_ttft_ms"), p.get("prefix_cached_ttft_ms")),
        "golive_cached_over_uncached": g.get("cached_over_uncached"),
        "peer_cached_over_uncached": p.get("cached_over_uncached"),
    }
    for n in CONCURRENCY:
        r[f"aggregate_{n}"] = ratio(g.get(f"aggregate_{n}_tps"), p.get(f"aggregate_{n}_tps"))
    return r


def verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "—"
    ok = value >= target if higher_is_better else value <= target
    return "pass" if ok else "**fail**"


def table(g: dict[str, float | None], p: dict[str, float | None], r: dict[str, Any],
          meta: dict[str, Any]) -> str:
    def row(label: str, key: str, rkey: str | None, digits: int = 1, target: str = "",
            met: str = "") -> list[str]:
        return [label, fmt(g.get(key), digits), fmt(p.get(key), digits),
                fmt(r.get(rkey) if rkey else None, 2, "x"), target, met]

    rows = [
        row("single-stream decode (tok/s)", "decode_tps", "decode", 1, "≥ 1.2x",
            verdict(r["decode"], TARGETS["decode"], True)),
        row("  completion tokens produced (median)", "decode_completion_tokens", None, 0),
        row("TTFT, short prompt (ms)", "ttft_short_ms", "ttft_short"),
    ]
    for n in CONCURRENCY:
        target, met = ("≥ 2x", verdict(r["aggregate_16"], TARGETS["aggregate_16"], True)) \
            if n == 16 else ("", "")
        rows.append(row(f"aggregate, {n} stream{'s' if n > 1 else ''} (tok/s)",
                        f"aggregate_{n}_tps", f"aggregate_{n}", 1, target, met))
        if n > 1:
            rows.append(row(f"  per-stream TTFT at {n}: median / max (ms)",
                            f"concurrent_{n}_ttft_median_ms", None, 0))
            rows[-1][1] += f" / {fmt(g.get(f'concurrent_{n}_ttft_max_ms'), 0)}"
            rows[-1][2] += f" / {fmt(p.get(f'concurrent_{n}_ttft_max_ms'), 0)}"
    rows += [
        row("TTFT, ~1,000-token prefix, uncached (ms)", "prefix_uncached_ttft_ms", None),
        row("TTFT, same prefix, cached (ms)", "prefix_cached_ttft_ms", "prefix_cached_ttft"),
        row("  cached tokens reported (median)", "prefix_cached_tokens", None, 0),
        row("cached / uncached TTFT", "cached_over_uncached", None, 2, "golive ≤ 0.2x",
            verdict(r["golive_cached_over_uncached"], TARGETS["cached_over_uncached"], False)),
    ]
    header = ["metric (median)", "golive serve", "llama_cpp.server", "golive / peer",
              "target", "met"]
    v = meta["versions"]
    return "\n\n".join([
        markdown_table(header, rows),
        f"Run {meta['timestamp']} on {meta['machine']['cpu']} "
        f"({meta['machine']['cpu_count']} cores), {meta['threads']} threads, model "
        f"`{meta['model']}` (prefix prompt {fmt(p.get('prefix_prompt_tokens') or
                                                g.get('prefix_prompt_tokens'), 0)} tokens); "
        f"golive {v.get('golive') or '—'}, llama-cpp-python {v.get('llama-cpp-python')}, "
        f"openai {v.get('openai')}; reps {meta['reps']}. "
        "Raw samples: `benchmarks/results/serving.json`.",
        *[f"- {note}" for note in meta["notes"]],
    ])


def server_commands(model: Path, threads: int, golive_ctx: int | None
                    ) -> dict[str, Callable[[int], Sequence[str]]]:
    golive_bin = Path(sys.executable).parent / "golive"

    def golive(port: int) -> list[str]:
        cmd = [str(golive_bin), "serve", "--model", str(model), "--threads", str(threads),
               "--port", str(port), "--host", "127.0.0.1", "--slots", "16"]
        return cmd + (["--ctx", str(golive_ctx)] if golive_ctx else [])

    def peer(port: int) -> list[str]:
        # interrupt_requests=False: the peer then queues concurrent requests
        # (one at a time) instead of cutting the running stream short, so every
        # client gets its full answer, as with golive. n_threads_batch is set
        # too so prompt processing uses the same thread count.
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                "--n_threads", str(threads), "--n_threads_batch", str(threads),
                "--n_ctx", "4096", "--port", str(port), "--host", "127.0.0.1",
                "--interrupt_requests", "False"]

    return {"golive": golive, "peer": peer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--servers", default="golive,peer", help="comma list: golive,peer")
    ap.add_argument("--golive-ctx", type=int, default=None, help="pass --ctx to golive serve")
    ap.add_argument("--no-docs", action="store_true", help="don't touch docs/benchmarks.md")
    args = ap.parse_args()

    model = (args.model or default_gguf()).resolve()
    reps = ({"ttft": 3, "decode": 2, "prefix": 3, "concurrency": 1} if args.quick
            else {"ttft": 5, "decode": 5, "prefix": 5, "concurrency": 3})
    commands = server_commands(model, args.threads, args.golive_ctx)
    notes = ["llama_cpp.server runs one request at a time; it is started with "
             "`--interrupt_requests False` so concurrent streams queue and all complete "
             "(its default, True, ends the running stream when a new request arrives). Its "
             "aggregate throughput is therefore its sequential speed, and the per-stream TTFT "
             "rows show the queueing."]
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "golive" in wanted and not Path(commands["golive"](0)[0]).exists():
        console.print("[yellow]golive console script not found; skipping golive[/]")
        wanted.remove("golive")
        notes.append("golive was not run (no `golive serve` yet): re-run to fill its column.")

    raw: dict[str, dict[str, Any]] = {}
    medians: dict[str, dict[str, float | None]] = {}
    for name in ("golive", "peer"):  # one after another: never two servers at once
        if name not in wanted:
            continue
        console.print(f"[bold]{name}[/]: {' '.join(commands[name](0))}")
        with running_server(name, commands[name]) as server:
            raw[name] = asyncio.run(measure(server, reps))
        medians[name] = summarize(raw[name])
        console.print(medians[name])

    g, p = medians.get("golive", {}), medians.get("peer", {})
    results = Results(
        name=NAME,
        config={"model": str(model), "threads": args.threads, "reps": reps,
                "max_tokens": MAX_TOKENS, "ttft_max_tokens": TTFT_MAX_TOKENS,
                "concurrency": list(CONCURRENCY), "targets": TARGETS,
                "commands": {n: list(commands[n](0)) for n in wanted}},
        medians=medians,
        ratios=compute_ratios(g, p),
        samples={n: raw_for_json(v) for n, v in raw.items()},
        notes=notes,
    )
    path = results.write()
    console.print(f"results: {path}")
    if not args.no_docs:
        meta = json.loads(path.read_text())  # the timestamp, machine and versions just written
        meta.update(threads=args.threads, model=model.name, reps=reps, notes=notes)
        update_doc_section(NAME, table(g, p, results.ratios, meta))
        console.print("docs/benchmarks.md updated")


if __name__ == "__main__":
    main()
