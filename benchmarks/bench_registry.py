"""What a second embedded model costs the first, and how to split the cores.

    python benchmarks/bench_registry.py [--quick] [--rounds N]

Model A is the default model; model B is the same GGUF under another id (its
own engine, context and llama.cpp thread pool). A is measured (single-stream
decode tok/s, 8-stream aggregate tok/s) on:

- alone: a server with A only (all cores);
- default, B idle / B busy: A and B with `threads` unset, so the engines share
  the cores step by step (engine/cores.py: all of them to whoever alone has
  work, an even share while both have);
- split, B idle / B busy: one fixed half of the cores each (`threads` set);
- overlap, B idle / B busy: all cores each, fixed, so the pools overlap.

"B busy" runs 4 streams on B for the whole measurement of A. The peer of each
row is A alone in the same round; rounds alternate the configurations and
restart the servers, and the table reports medians over rounds and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Results,
    concurrent_streams,
    fmt,
    make_client,
    markdown_table,
    median,
    ratio,
    running_server,
    stream_chat,
    update_doc_section,
)

A, B = "model-a", "model-b"
PROMPT = "Write a short story about a lighthouse keeper and a storm."
CORES = os.cpu_count() or 2


def config(two: bool, threads: int | None) -> str:
    lines = []
    for mid in (A, B) if two else (A,):
        lines.append(f"[models.{mid}]")
        if threads:
            lines += [f"[models.{mid}.engine]", f"threads = {threads}"]
    return "\n".join(lines) + "\n"


SCENARIOS = {
    "alone": (False, None, False),
    "default, B idle": (True, None, False),
    "default, B busy": (True, None, True),
    "split, B idle": (True, max(1, CORES // 2), False),
    "split, B busy": (True, max(1, CORES // 2), True),
    "overlap, B idle": (True, CORES, False),
    "overlap, B busy": (True, CORES, True),
}


def golive_argv(cfg: Path):
    exe = Path(sys.executable).parent / "golive"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "golive.commands"]
    return lambda port: [*cmd, "serve", "--port", str(port), "--config", str(cfg),
                         "--no-request-log", "--slots", "8", "--ctx", "8192"]


async def load_b(client, stop: asyncio.Event) -> int:
    """Keep 4 streams running on B until told to stop; returns tokens generated."""
    total = 0

    async def one() -> None:
        nonlocal total
        while not stop.is_set():
            s = await stream_chat(client, B, [{"role": "user", "content": PROMPT}], 64)
            total += s.completion_tokens

    await asyncio.gather(*(one() for _ in range(4)))
    return total


async def measure(server, busy: bool, singles: int, max_tokens: int) -> dict[str, float | None]:
    client = make_client(server)
    msgs = [{"role": "user", "content": PROMPT}]
    await stream_chat(client, A, msgs, 8)  # warm-up: grammar-free, prefix cached
    stop = asyncio.Event()
    b_client = make_client(server)
    loader = asyncio.ensure_future(load_b(b_client, stop)) if busy else None
    if busy:
        await asyncio.sleep(1.0)  # B's streams are decoding before A is timed
    try:
        single = [await stream_chat(client, A, msgs, max_tokens) for _ in range(singles)]
        convs = [[{"role": "user", "content": f"{PROMPT} Variant {i}."}] for i in range(8)]
        agg, _ = await concurrent_streams(client, A, convs, max_tokens)
    finally:
        stop.set()
        if loader is not None:
            await loader
        await b_client.close()
        await client.close()  # before asyncio.run closes the loop under them
    return {"single_tps": median([s.decode_tps for s in single]), "agg8_tps": agg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and shorter answers")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    singles, max_tokens = (3, 64) if args.quick else (5, 128)
    runs: dict[str, list[dict[str, float | None]]] = {k: [] for k in SCENARIOS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = list(SCENARIOS) if r % 2 == 0 else list(reversed(SCENARIOS))
            for name in order:
                two, threads, busy = SCENARIOS[name]
                cfg = Path(tmp) / f"{name.replace(', ', '-').replace(' ', '_')}.toml"
                cfg.write_text(config(two, threads))
                with running_server(f"registry-{r}", golive_argv(cfg),
                                    env={"GOLIVE_DATA_DIR": tmp}) as server:
                    m = asyncio.run(measure(server, busy, singles, max_tokens))
                runs[name].append(m)
                print(f"round {r + 1} {name:16s} single {fmt(m['single_tps'])} tok/s  "
                      f"8 streams {fmt(m['agg8_tps'])} tok/s", flush=True)
    med = {k: {"single_tps": median([x["single_tps"] for x in v]),
               "agg8_tps": median([x["agg8_tps"] for x in v])} for k, v in runs.items()}
    base = med["alone"]
    ratios = {}
    rows = []
    for k, v in med.items():
        rs, ra = ratio(v["single_tps"], base["single_tps"]), ratio(v["agg8_tps"], base["agg8_tps"])
        ratios[f"{k}: single"] = rs
        ratios[f"{k}: 8 streams"] = ra
        rows.append([k, fmt(v["single_tps"]), fmt(rs, 2, "x"), fmt(v["agg8_tps"]),
                     fmt(ra, 2, "x")])
    res = Results("registry", {"rounds": rounds, "singles": singles, "max_tokens": max_tokens,
                               "cores": CORES, "slots": 8}, med, ratios, {"runs": runs})
    path = res.write()
    table = markdown_table(["model A's server", "single stream tok/s", "vs alone",
                            "8 streams tok/s", "vs alone"], rows)
    update_doc_section("registry", f"""## A second model beside the first

`benchmarks/bench_registry.py{' --quick' if args.quick else ''}`: model A (the
default model) measured alone, and beside a second embedded model B (same GGUF,
its own engine) that is idle or serving 4 streams. "default" leaves `threads`
unset: the engines share the {CORES} cores step by step (all to whoever alone
has work, an even share while both have); "split" fixes {max(1, CORES // 2)}
thread(s) each, "overlap" fixes all {CORES} each. Medians over {rounds} round(s), servers restarted
each time; ratios against A alone in the same run.

{table}

Results: `benchmarks/results/registry.json`.
""")
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
