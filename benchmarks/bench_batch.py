"""golive's Batch API vs the same lines sent one by one to llama-cpp-python's server.

    python benchmarks/bench_batch.py [--quick] [--lines N] [--model PATH.gguf] [--threads N]

golive: the lines go in one JSONL file through /v1/files and /v1/batches and
its runner; the time is from batches.create to the batch seen completed.
Peer: `python -m llama_cpp.server` gets the same lines as chat completions
from a client that keeps at most --concurrency requests open. Both report
total time and completion tokens/s.

While each side works through the lines, a probe sends one streaming
request every half second and measures its time to first token (TTFT):
on golive at service_tier=priority (the batch runs below flex, so the probe
should barely notice it), on the peer as a plain request (it has no tiers).
The same probes on the idle server give the baseline. Writes
benchmarks/results/batch.json and the `batch` table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
# benchmarks/ is a folder of scripts, not a package: import its helpers by path.
from bench_serving import server_commands  # noqa: E402
from common import (  # noqa: E402
    Results,
    Server,
    cpu_busy,
    default_gguf,
    fmt,
    make_client,
    markdown_table,
    median,
    ratio,
    running_server,
    update_doc_section,
)

console = Console(stderr=True)
NAME = "batch"
MAX_TOKENS = 32  # per line: short answers, as in classification or extraction jobs
PROBE_MAX_TOKENS = 4
PROBE_EVERY_S = 0.5
IDLE_PROBES = 5
SUBJECTS = ["a volcano", "a library", "the ocean", "a bicycle", "a violin", "the moon",
            "a honeybee", "a glacier", "a train", "a lighthouse", "a forest", "a castle",
            "coffee", "a river", "a desert", "a clock"]
TASKS = ["Describe {} in one short sentence.", "Give one fact about {}.",
         "Name a color you associate with {}.", "Write a five-word title about {}."]


def make_lines(n: int, model: str) -> list[dict[str, Any]]:
    """n distinct short requests (deterministic), in OpenAI batch input format."""
    out = []
    for i in range(n):
        task = TASKS[i % len(TASKS)].format(SUBJECTS[(i // len(TASKS)) % len(SUBJECTS)])
        out.append({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": model, "max_tokens": MAX_TOKENS, "temperature": 0,
                             "messages": [{"role": "user", "content": f"{task} (#{i})"}]}})
    return out


async def ttft(client: AsyncOpenAI, model: str, tier: str | None) -> float:
    extra = {"service_tier": tier} if tier else {}
    start = time.monotonic()
    stream = await client.chat.completions.create(
        model=model, max_tokens=PROBE_MAX_TOKENS, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Say hello."}], **extra)
    first = None
    async for chunk in stream:
        if first is None and any(c.delta.content for c in chunk.choices):
            first = time.monotonic()
    return ((first or time.monotonic()) - start) * 1000


async def probe_while(client: AsyncOpenAI, model: str, tier: str | None,
                      busy: Callable[[], bool]) -> list[float]:
    """TTFT samples, one every PROBE_EVERY_S, for as long as `busy()` holds."""
    samples = []
    while busy():
        samples.append(await ttft(client, model, tier))
        await asyncio.sleep(PROBE_EVERY_S)
    return samples


async def idle_probes(client: AsyncOpenAI, model: str, tier: str | None) -> list[float]:
    return [await ttft(client, model, tier) for _ in range(IDLE_PROBES)]


async def run_golive(server: Server, lines: list[dict]) -> dict[str, Any]:
    client = make_client(server)
    model = server.model_id
    for ln in lines:
        ln["body"]["model"] = model
    await ttft(client, model, None)  # warm-up
    idle = await idle_probes(client, model, "priority")
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    f = await client.files.create(file=("bench.jsonl", data), purpose="batch")
    start = time.monotonic()
    batch = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    state = {"done": False}

    async def poll() -> Any:
        nonlocal batch
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            await asyncio.sleep(0.2)
            batch = await client.batches.retrieve(batch.id)
        state["done"] = True
        return time.monotonic()

    # Probes start once the runner has lines in the engine.
    while (await client.batches.retrieve(batch.id)).status == "validating":
        await asyncio.sleep(0.05)
    end, busy = await asyncio.gather(
        poll(), probe_while(client, model, "priority", lambda: not state["done"]))
    if batch.status != "completed":
        raise RuntimeError(f"golive batch ended {batch.status}: {batch}")
    total = end - start
    tokens = batch.usage.output_tokens
    return {"total_s": total, "completion_tokens": tokens, "tokens_per_s": tokens / total,
            "lines_failed": batch.request_counts.failed, "ttft_idle_ms": idle,
            "ttft_busy_ms": busy}


async def run_peer(server: Server, lines: list[dict], concurrency: int) -> dict[str, Any]:
    client = make_client(server)
    model = server.model_id
    await ttft(client, model, None)  # warm-up
    idle = await idle_probes(client, model, None)
    gate = asyncio.Semaphore(concurrency)
    state = {"done": False}
    failed = 0

    async def one(ln: dict) -> int:
        nonlocal failed
        async with gate:
            try:
                r = await client.chat.completions.create(**{**ln["body"], "model": model})
            except Exception:
                failed += 1
                return 0
            return r.usage.completion_tokens if r.usage else 0

    async def all_lines() -> tuple[float, int]:
        counts = await asyncio.gather(*(one(ln) for ln in lines))
        state["done"] = True
        return time.monotonic(), sum(counts)

    start = time.monotonic()
    (end, tokens), busy = await asyncio.gather(
        all_lines(), probe_while(client, model, None, lambda: not state["done"]))
    total = end - start
    return {"total_s": total, "completion_tokens": tokens, "tokens_per_s": tokens / total,
            "lines_failed": failed, "ttft_idle_ms": idle, "ttft_busy_ms": busy}


def summarize(raw: dict[str, Any]) -> dict[str, float | None]:
    return {
        "total_s": raw["total_s"],
        "completion_tokens": raw["completion_tokens"],
        "tokens_per_s": raw["tokens_per_s"],
        "lines_failed": raw["lines_failed"],
        "ttft_idle_ms": median(raw["ttft_idle_ms"]),
        "ttft_busy_ms": median(raw["ttft_busy_ms"]),
        "ttft_busy_p90_ms": sorted(raw["ttft_busy_ms"])[int(0.9 * (len(raw["ttft_busy_ms"]) - 1))]
        if raw["ttft_busy_ms"] else None,
        "busy_probes": len(raw["ttft_busy_ms"]),
    }


def table(g: dict, p: dict, r: dict, meta: dict) -> str:
    cfg = meta["config"]
    rows = [
        ["total time (s)", fmt(g.get("total_s")), fmt(p.get("total_s")),
         fmt(r.get("total_time"), 2, "x")],
        ["completion tokens", fmt(g.get("completion_tokens"), 0),
         fmt(p.get("completion_tokens"), 0), ""],
        ["completion tokens/s", fmt(g.get("tokens_per_s")), fmt(p.get("tokens_per_s")),
         fmt(r.get("tokens_per_s"), 2, "x")],
        ["interactive TTFT, idle server (ms)", fmt(g.get("ttft_idle_ms"), 0),
         fmt(p.get("ttft_idle_ms"), 0), fmt(r.get("ttft_idle"), 2, "x")],
        ["interactive TTFT while the lines run (ms)", fmt(g.get("ttft_busy_ms"), 0),
         fmt(p.get("ttft_busy_ms"), 0), fmt(r.get("ttft_busy"), 2, "x")],
        ["interactive TTFT while the lines run, p90 (ms)", fmt(g.get("ttft_busy_p90_ms"), 0),
         fmt(p.get("ttft_busy_p90_ms"), 0), ""],
        ["busy / idle TTFT", fmt(r.get("golive_busy_over_idle"), 2, "x"),
         fmt(r.get("peer_busy_over_idle"), 2, "x"), ""],
    ]
    header = ["metric", "golive Batch API", "llama_cpp.server, one by one", "golive / peer"]
    machine, v = meta["machine"], meta["versions"]
    busy = ", ".join(f"{k} {fmt(x and x * 100, 0)}%" for k, x in cfg["cpu_busy_before"].items())
    run = (
        f"Run {meta['timestamp']} (commit {meta['git_commit'] or '—'}) on {machine['cpu']} "
        f"({machine['cpu_count']} cores), {cfg['threads']} threads for both servers, model "
        f"`{Path(cfg['model']).name}`; {cfg['lines']} lines of at most {cfg['max_tokens']} "
        f"tokens at temperature 0; peer client concurrency {cfg['concurrency']}; golive "
        f"{v.get('golive') or '—'}, llama-cpp-python {v.get('llama-cpp-python')}; CPU use by "
        f"other work before each server started: {busy}. Raw samples: "
        f"`benchmarks/results/{NAME}.json`."
    )
    notes = [
        "golive / peer: above 1x is better for tokens/s, below 1x is better for times.",
        "golive's probe asks for `service_tier=priority`; the batch lines run at the batch "
        "tier, below flex, and a priority request preempts one of them when every slot is "
        "busy. The peer has no tiers: its probe queues behind the requests already sent.",
        "golive's total time runs from `batches.create` to the poll (every 0.2 s) that sees "
        "the batch completed, so it includes validation and writing the output file.",
    ]
    if any(x is not None and x > 0.15 for x in cfg["cpu_busy_before"].values()):
        notes.insert(0, "**Other work kept the CPU busy during this run** (see above): both "
                     "sides were slowed by an unknown amount; re-run on a quiet machine before "
                     "reading the ratios.")
    if cfg.get("quick") or cfg["lines"] < 1000:
        notes.insert(0, f"A short run ({cfg['lines']} lines): `--quick` proves the script "
                     "works; the full run sends 1,000 lines.")
    return "\n\n".join([markdown_table(header, rows), run, *[f"- {n}" for n in notes]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 lines instead of 1,000")
    ap.add_argument("--lines", type=int, default=None, help="number of lines (overrides --quick)")
    ap.add_argument("--concurrency", type=int, default=16,
                    help="requests the peer's client keeps open")
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--servers", default="golive,peer", help="comma list: golive,peer")
    ap.add_argument("--no-docs", action="store_true", help="don't touch docs/benchmarks.md")
    args = ap.parse_args()

    n = args.lines or (100 if args.quick else 1000)
    model = (args.model or default_gguf()).resolve()
    commands = server_commands(model, args.threads, None)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    lines = make_lines(n, "default")
    scratch = tempfile.TemporaryDirectory(prefix="golive-bench-batch-")
    envs = {"golive": {"GOLIVE_DATA_DIR": scratch.name}, "peer": {}}
    raw: dict[str, dict[str, Any]] = {}
    busy_before: dict[str, float | None] = {}
    for name in wanted:
        busy_before[name] = busy = cpu_busy()
        if busy is not None and busy > 0.15:
            console.print(f"[yellow]CPU {busy:.0%} busy before {name} started: other work runs[/]")
        console.print(f"[bold]{name}[/]: {n} lines")
        with running_server(name, commands[name], envs[name]) as server:
            if name == "golive":
                raw[name] = asyncio.run(run_golive(server, [json.loads(json.dumps(x))
                                                            for x in lines]))
            else:
                raw[name] = asyncio.run(run_peer(server, lines, args.concurrency))
        console.print(name, summarize(raw[name]))
    scratch.cleanup()

    medians = {name: summarize(v) for name, v in raw.items()}
    g, p = medians.get("golive", {}), medians.get("peer", {})
    ratios = {
        "tokens_per_s": ratio(g.get("tokens_per_s"), p.get("tokens_per_s")),
        "total_time": ratio(g.get("total_s"), p.get("total_s")),
        "ttft_idle": ratio(g.get("ttft_idle_ms"), p.get("ttft_idle_ms")),
        "ttft_busy": ratio(g.get("ttft_busy_ms"), p.get("ttft_busy_ms")),
        "golive_busy_over_idle": ratio(g.get("ttft_busy_ms"), g.get("ttft_idle_ms")),
        "peer_busy_over_idle": ratio(p.get("ttft_busy_ms"), p.get("ttft_idle_ms")),
    }
    results = Results(
        name=NAME,
        config={"model": str(model), "threads": args.threads, "lines": n,
                "max_tokens": MAX_TOKENS, "probe_max_tokens": PROBE_MAX_TOKENS,
                "concurrency": args.concurrency, "quick": args.quick,
                "cpu_busy_before": busy_before,
                "commands": {k: list(commands[k](0)) for k in wanted}},
        medians=medians,
        ratios=ratios,
        samples=raw,
    )
    path = results.write()
    console.print(f"results: {path}")
    console.print(ratios)
    if not args.no_docs:
        meta = json.loads(path.read_text())
        update_doc_section(NAME, table(g, p, ratios, meta))
        console.print("docs/benchmarks.md updated")


if __name__ == "__main__":
    main()
