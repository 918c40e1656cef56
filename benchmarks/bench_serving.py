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
import tempfile
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
# benchmarks/ is a folder of scripts, not a package: import its helpers by path.
from common import (
    Results,
    Server,
    StreamSample,
    concurrent_streams,
    cpu_busy,
    default_gguf,
    fmt,
    make_client,
    markdown_table,
    median,
    ratio,
    running_server,
    served_weights,
    sample_dicts,
    stream_chat,
    update_doc_section,
)

console = Console(stderr=True)


def say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


NAME = "serving"
MAX_TOKENS = 128  # per stream, for decode and concurrency
TTFT_MAX_TOKENS = 8  # TTFT runs only need the first token
CONCURRENCY = (1, 4, 16)
PEER_NOTE = (
    "llama_cpp.server runs one request at a time; it is started with "
    "`--interrupt_requests False` so concurrent streams queue and all complete "
    "(its default, True, ends the running stream when a new request arrives). Its "
    "aggregate throughput is at best its single-stream speed, and the per-stream TTFT "
    "rows show the queueing. It also runs with `--logits_all False` (its default "
    "computes logits for every prompt token, which slows prefill) and does not "
    "report usage in streams, so its completion tokens are its content chunks, one "
    "per token (checked against its non-streaming usage)."
)
TARGETS = {"decode": 1.2, "aggregate_16": 2.0, "cached_over_uncached": 0.2}

# No ignore_eos in the OpenAI API: these prompts make the model write at length,
# and the table reports the completion tokens it actually produced.
TALKATIVE = [
    (
        "Write a long, detailed story about a lighthouse keeper who finds a strange map. "
        "Describe every scene, every character and every conversation in detail."
    ),
    (
        "Explain in great detail how a steam engine works, step by step, with examples, "
        "its history, and its uses today."
    ),
    (
        "Write a long travel guide to a small coastal town: places to visit, food to try, "
        "history, walks, and advice for each season."
    ),
]
TOPICS = [
    "volcanoes",
    "the history of bread",
    "honeybees",
    "the printing press",
    "glaciers",
    "chess openings",
    "the Roman roads",
    "coral reefs",
    "bicycles",
    "the moon landing",
    "tea ceremonies",
    "rainforests",
    "lighthouses",
    "paper making",
    "deep sea fish",
    "windmills",
]
ESSAY = "Write a detailed essay about {}. Cover its history, how it works, and why it matters."
QUESTIONS = [
    "How do I return a damaged item?",
    "Can I change my delivery address?",
    "What is the warranty on headphones?",
    "How do I reset my password?",
    "Do you ship to Canada?",
    "How long does a refund take?",
    "Can I pay in installments?",
    "What happens if my parcel is lost?",
    "How do I cancel my subscription?",
    "Is gift wrapping available?",
    "Can I order by phone?",
    "Where is my invoice?",
]


def handbook(n_rules: int = 37) -> str:
    """A deterministic ~1,000-token system prompt (SmolLM2's tokenizer; measured in results)."""
    rng = random.Random(0)
    subjects = [
        "returns",
        "refunds",
        "shipping",
        "warranties",
        "accounts",
        "payments",
        "subscriptions",
        "gift cards",
        "invoices",
        "repairs",
        "deliveries",
    ]
    actions = [
        "check the order number first",
        "apologise once and then solve the problem",
        "offer the standard fourteen day window",
        "escalate to a senior agent",
        "confirm the customer's email address",
        "never promise a date you cannot keep",
        "explain the fee before charging it",
        "log the case in the ticket system",
    ]
    rules = [
        f"Rule {i}: for questions about {rng.choice(subjects)}, {rng.choice(actions)}, "
        f"and {rng.choice(actions)}."
        for i in range(1, n_rules + 1)
    ]
    return (
        "You are the support assistant of Northwind Goods. Follow the handbook below.\n"
        + "\n".join(rules)
    )


def count_tokens(model: Path, text: str) -> int:
    """Tokens of `text` under the model's own tokenizer (vocab_only: no weights loaded)."""
    from llama_cpp import Llama

    vocab = Llama(str(model), vocab_only=True, verbose=False)
    return len(vocab.tokenize(text.encode(), add_bos=False))


def user(text: str, system: str | None = None) -> list[ChatCompletionMessageParam]:
    msgs: list[ChatCompletionMessageParam] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": text})
    return msgs


async def measure_round(server: Server, r: int, reps: dict[str, int]) -> dict[str, list[Any]]:
    """Round `r` of the workload against one running server: one repetition of each
    measurement that still needs one, in a fixed order."""
    client = make_client(server)
    model = server.model_id
    out: dict[str, list[Any]] = defaultdict(list)
    await stream_chat(client, model, user("Hello!"), 16)  # warm-up, not measured

    def due(what: str) -> bool:
        if r < reps[what]:
            say(f"  {server.name}: {what}")
        return r < reps[what]

    if due("ttft"):
        short = user("What is the capital of France?")
        out["ttft_short"].append(await stream_chat(client, model, short, TTFT_MAX_TOKENS))
    if due("decode"):
        talk = user(TALKATIVE[r % len(TALKATIVE)])
        out["decode"].append(await stream_chat(client, model, talk, MAX_TOKENS))
    if due("prefix"):
        # Uncached first, cached after: the peer keeps only its last prompt's KV,
        # so this order gives it its best case for the cached run.
        book, question = handbook(), QUESTIONS[r % len(QUESTIONS)]
        fresh = user(question, f"Session {uuid.uuid4().hex}.\n{book}")  # nonce first: no reuse
        out["prefix_uncached"].append(await stream_chat(client, model, fresh, TTFT_MAX_TOKENS))
        warm = user(QUESTIONS[-1], book)  # fills the cache, not measured
        out["prefix_warm"].append(await stream_chat(client, model, warm, TTFT_MAX_TOKENS))
        cached = user(question, book)
        out["prefix_cached"].append(await stream_chat(client, model, cached, TTFT_MAX_TOKENS))
    if due("concurrency"):
        for n in CONCURRENCY:
            convs = [user(ESSAY.format(TOPICS[i % len(TOPICS)])) for i in range(n)]
            out[f"concurrent_{n}"].append(
                await concurrent_streams(client, model, convs, MAX_TOKENS)
            )
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
            [sum(x.completion_tokens for x in ss) for _, ss in runs]
        )
        # Per-stream TTFT shows queueing: a one-at-a-time server makes the last
        # stream wait for all the others.
        s[f"concurrent_{n}_ttft_median_ms"] = _ms(median([x.ttft_s for _, ss in runs for x in ss]))
        s[f"concurrent_{n}_ttft_max_ms"] = _ms(
            median([max(x.ttft_s for x in ss) for _, ss in runs])
        )
    return s


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def raw_for_json(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in raw.items():
        if key.startswith("concurrent_"):
            out[key] = [
                {
                    "aggregate_tps": agg,
                    "streams": sample_dicts(ss),
                    "finish_reasons": dict(Counter(x.finish_reason for x in ss)),
                }
                for agg, ss in val
            ]
        else:
            out[key] = sample_dicts(val)
    return out


def compute_ratios(g: dict[str, float | None], p: dict[str, float | None]) -> dict[str, Any]:
    r: dict[str, Any] = {
        "decode": ratio(g.get("decode_tps"), p.get("decode_tps")),
        "ttft_short": ratio(g.get("ttft_short_ms"), p.get("ttft_short_ms")),
        "prefix_uncached_ttft": ratio(
            g.get("prefix_uncached_ttft_ms"), p.get("prefix_uncached_ttft_ms")
        ),
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


def table(
    g: dict[str, float | None], p: dict[str, float | None], r: dict[str, Any], meta: dict[str, Any]
) -> str:
    def row(
        label: str, key: str, rkey: str | None, digits: int = 1, target: str = "", met: str = ""
    ) -> list[str]:
        return [
            label,
            fmt(g.get(key), digits),
            fmt(p.get(key), digits),
            fmt(r.get(rkey) if rkey else None, 2, "x"),
            target,
            met,
        ]

    rows = [
        row(
            "single-stream decode (tok/s)",
            "decode_tps",
            "decode",
            1,
            "≥ 1.2x",
            verdict(r["decode"], TARGETS["decode"], True),
        ),
        row("single-stream completion tokens produced", "decode_completion_tokens", None, 0),
        row("TTFT, short prompt (ms)", "ttft_short_ms", "ttft_short", 0),
    ]
    for n in CONCURRENCY:
        target, met = (
            ("≥ 2x", verdict(r["aggregate_16"], TARGETS["aggregate_16"], True))
            if n == 16
            else ("", "")
        )
        rows.append(
            row(
                f"aggregate, {n} stream{'s' if n > 1 else ''} (tok/s)",
                f"aggregate_{n}_tps",
                f"aggregate_{n}",
                1,
                target,
                met,
            )
        )
        if n > 1:
            rows.append(
                row(
                    f"per-stream TTFT at {n} streams, median / max (ms)",
                    f"concurrent_{n}_ttft_median_ms",
                    None,
                    0,
                )
            )
            rows[-1][1] += f" / {fmt(g.get(f'concurrent_{n}_ttft_max_ms'), 0)}"
            rows[-1][2] += f" / {fmt(p.get(f'concurrent_{n}_ttft_max_ms'), 0)}"
    rows += [
        row(
            "TTFT, ~1,000-token prefix, uncached (ms)",
            "prefix_uncached_ttft_ms",
            "prefix_uncached_ttft",
            0,
        ),
        row("TTFT, same prefix, cached (ms)", "prefix_cached_ttft_ms", "prefix_cached_ttft", 0),
        row("cached tokens reported (`usage`)", "prefix_cached_tokens", None, 0),
        row(
            "cached / uncached TTFT",
            "cached_over_uncached",
            None,
            2,
            "golive ≤ 0.2x",
            verdict(r["golive_cached_over_uncached"], TARGETS["cached_over_uncached"], False),
        ),
    ]
    header = [
        "metric (median)",
        "golive serve",
        "llama_cpp.server",
        "golive / peer",
        "target",
        "met",
    ]
    v, machine, cfg = meta["versions"], meta["machine"], meta["config"]
    prefix_tokens = cfg["prefix_system_prompt_tokens"]
    n = cfg["reps"]
    reps = (
        f"repetitions: decode {n['decode']}, TTFT {n['ttft']}, prefix {n['prefix']}, each "
        f"concurrency level {n['concurrency']}, in {max(n.values())} rounds that alternate "
        "the servers and restart them"
    )
    busiest = {
        k: max((x for x in xs if x is not None), default=None)
        for k, xs in cfg["cpu_busy_before"].items()
    }
    busy = ", ".join(f"{k} {fmt(x and x * 100, 0)}%" for k, x in busiest.items())
    run = (
        f"Run {meta['timestamp']} (commit {meta['git_commit'] or '—'}) on {machine['cpu']} "
        f"({machine['cpu_count']} cores), {cfg['threads']} threads for both servers, model "
        f"`{Path(cfg['model']).name}`, shared system prompt {prefix_tokens} tokens; "
        f"golive {v.get('golive') or '—'}, llama-cpp-python {v.get('llama-cpp-python')}, "
        f"openai {v.get('openai')}; {reps}; highest CPU use by other work "
        f"before a server started: {busy}. Raw samples: `benchmarks/results/{meta['name']}.json`."
    )
    legend = "golive / peer: above 1x is better for tok/s, below 1x is better for times."
    return "\n\n".join(
        [markdown_table(header, rows), legend, run, *[f"- {n}" for n in meta["notes"]]]
    )


def server_commands(
    model: Path, threads: int, golive_ctx: int | None, peer_weights: str = "gguf"
) -> dict[str, Callable[[int], Sequence[str]]]:
    """peer_weights: "gguf" gives the peer the GGUF golive is given (what a user
    comparing the two servers runs); "golive" gives it the file golive loads
    (its Q8_0 copy of Q4_1 weights), which compares the engines on equal weights."""
    peer_file = served_weights(model) if peer_weights == "golive" else model
    golive_bin = Path(sys.executable).parent / "golive"

    def golive(port: int) -> list[str]:
        cmd = [
            str(golive_bin),
            "serve",
            "--model",
            str(model),
            "--threads",
            str(threads),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--slots",
            "16",
        ]
        return cmd + (["--ctx", str(golive_ctx)] if golive_ctx else [])

    def peer(port: int) -> list[str]:
        # interrupt_requests=False: the peer then queues concurrent requests
        # (one at a time) instead of cutting the running stream short, so every
        # client gets its full answer, as with golive. n_threads_batch is set
        # too so prompt processing uses the same thread count. logits_all=False:
        # the server's default (True) computes vocabulary logits for every
        # prompt token, which only echo/prompt logprobs need; off is its best case.
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(peer_file),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--n_ctx",
            "4096",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--interrupt_requests",
            "False",
            "--logits_all",
            "False",
        ]

    return {"golive": golive, "peer": peer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--servers", default="golive,peer", help="comma list: golive,peer")
    ap.add_argument("--golive-ctx", type=int, default=None, help="pass --ctx to golive serve")
    ap.add_argument("--no-docs", action="store_true", help="don't touch docs/benchmarks.md")
    ap.add_argument("--peer-weights", choices=("gguf", "golive"), default="gguf",
                    help="the peer loads the same GGUF (default) or golive's converted file")
    args = ap.parse_args()

    model = (args.model or default_gguf()).resolve()
    reps = (
        {"ttft": 2, "decode": 2, "prefix": 2, "concurrency": 1}
        if args.quick
        else {"ttft": 5, "decode": 5, "prefix": 5, "concurrency": 3}
    )
    commands = server_commands(model, args.threads, args.golive_ctx, args.peer_weights)
    notes = [PEER_NOTE]
    if args.peer_weights == "golive":
        notes.append("The peer ran on golive's converted weights (`--peer-weights golive`): "
                     f"`{served_weights(model).name}`, the file golive loads.")
    else:
        notes.append(
            "Both servers were given the same GGUF. golive loads a cached Q8_0 copy of Q4_1 "
            "weights (docs/architecture.md, Weights); part of its lead comes from that. "
            "`--peer-weights golive` gives the peer the converted file too: see "
            "`benchmarks/results/serving_peer_on_golive_weights.json` and the table below.")
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "golive" in wanted and not Path(commands["golive"](0)[0]).exists():
        console.print("[yellow]golive console script not found; skipping golive[/]")
        wanted.remove("golive")
        notes.append("golive was not run (no `golive serve` yet): re-run to fill its column.")

    # golive keeps its request log on (its cost is part of serving), but in a
    # scratch directory, so benchmark traffic stays out of the user's log.
    scratch = tempfile.TemporaryDirectory(prefix="golive-bench-")
    envs: dict[str, dict[str, str]] = {"golive": {"GOLIVE_DATA_DIR": scratch.name}, "peer": {}}
    raw: dict[str, dict[str, list[Any]]] = {n: defaultdict(list) for n in wanted}
    busy_before: dict[str, list[float | None]] = {n: [] for n in wanted}
    # Rounds alternate the servers (A B, B A, ...), restarting each one, so that
    # slow phases of a shared machine land on both sides rather than on one.
    # Only one server runs at a time.
    for r in range(max(reps.values())):
        for name in wanted if r % 2 == 0 else wanted[::-1]:
            console.print(f"[bold]round {r + 1}, {name}[/]")
            # Other work on the machine skews the numbers; record how busy it was.
            busy_before[name].append(busy := cpu_busy())
            if busy is not None and busy > 0.15:
                console.print(f"[yellow]CPU {busy:.0%} busy before start: other work runs[/]")
            with running_server(name, commands[name], envs[name]) as server:
                for key, samples in asyncio.run(measure_round(server, r, reps)).items():
                    raw[name][key] += samples
    scratch.cleanup()
    medians = {name: summarize(raw[name]) for name in wanted}
    for name in wanted:
        console.print(name, medians[name])

    g, p = medians.get("golive", {}), medians.get("peer", {})
    results = Results(
        name=NAME,
        config={
            "model": str(model),
            "threads": args.threads,
            "reps": reps,
            "max_tokens": MAX_TOKENS,
            "ttft_max_tokens": TTFT_MAX_TOKENS,
            "concurrency": list(CONCURRENCY),
            "targets": TARGETS,
            "cpu_busy_before": busy_before,
            "prefix_system_prompt_tokens": count_tokens(model, handbook()),
            "commands": {n: list(commands[n](0)) for n in wanted},
        },
        medians=medians,
        ratios=compute_ratios(g, p),
        samples={n: raw_for_json(v) for n, v in raw.items()},
        notes=notes,
    )
    path = results.write()
    console.print(f"results: {path}")
    if not args.no_docs:
        meta = json.loads(path.read_text())  # the timestamp, machine and versions just written
        update_doc_section(NAME, table(g, p, results.ratios, meta))
        console.print("docs/benchmarks.md updated")


if __name__ == "__main__":
    main()
