"""Throughput with a busy co-tenant: golive against llama_cpp.server when one core is taken.

    python benchmarks/bench_contention.py [--quick] [--rounds N]

On a shared machine another process may hold a core. This runs each server
(golive with GOLIVE_YIELD_BUSY_CORES=1, which leaves cores other processes keep busy,
golive fixed at 2 and at 1 thread, llama-cpp-python's server with 2 threads;
same GGUF) quiet and then beside a co-tenant that spins on one core
for the length of the measurement (a bounded busy loop, stopped afterwards),
and reports 16-stream aggregate tokens/s and single-stream decode tokens/s,
their ratio loaded/quiet per server, and golive against the peer under load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import ESSAY, TOPICS, server_commands, user  # noqa: E402
from common import (  # noqa: E402
    Results,
    concurrent_streams,
    default_gguf,
    fmt,
    make_client,
    markdown_table,
    median,
    ratio,
    running_server,
    stream_chat,
    update_doc_section,
)

MAX_TOKENS = 64


@contextlib.contextmanager
def busy_core(seconds: float):
    """One process spinning on one core, for at most `seconds` (it stops by itself)."""
    p = subprocess.Popen([sys.executable, "-c",
                          f"import time\nend = time.monotonic() + {seconds}\n"
                          "while time.monotonic() < end: pass\n"])
    try:
        yield
    finally:
        p.kill()
        p.wait()


async def measure(server, streams: int) -> dict[str, float | None]:
    client = make_client(server)
    await stream_chat(client, server.model_id, user(ESSAY.format(TOPICS[0])), 8)  # warm-up
    single = [await stream_chat(client, server.model_id, user(ESSAY.format(TOPICS[1])),
                                MAX_TOKENS) for _ in range(2)]
    convs = [user(ESSAY.format(TOPICS[i % len(TOPICS)]) + f" ({i})") for i in range(streams)]
    agg, _ = await concurrent_streams(client, server.model_id, convs, MAX_TOKENS)
    await client.close()
    return {"single_tps": median([s.decode_tps for s in single]), "agg_tps": agg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--streams", type=int, default=16)
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    model = default_gguf()
    two = server_commands(model, 2, None)
    one = server_commands(model, 1, None)
    auto = server_commands(model, 0, None)  # --threads 0: golive decides (engine/cores.py)
    servers = {"golive, yielding busy cores": auto["golive"], "golive, 2 threads": two["golive"],
               "golive, 1 thread": one["golive"], "llama_cpp.server, 2 threads": two["peer"]}
    runs: dict[str, dict[str, list]] = {n: {"quiet": [], "loaded": []} for n in servers}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, argv in (servers.items() if r % 2 == 0 else reversed(servers.items())):
                env = {"GOLIVE_DATA_DIR": tmp}
                if name.startswith("golive, yielding"):
                    env["GOLIVE_YIELD_BUSY_CORES"] = "1"  # engine/cores.py, opt-in
                with running_server(f"contention-{r}", argv, env) as server:
                    quiet = asyncio.run(measure(server, args.streams))
                    with busy_core(600):
                        loaded = asyncio.run(measure(server, args.streams))
                runs[name]["quiet"].append(quiet)
                runs[name]["loaded"].append(loaded)
                print(f"round {r + 1} {name:28s} quiet {fmt(quiet['agg_tps'])} tok/s, "
                      f"one core busy {fmt(loaded['agg_tps'])} tok/s", flush=True)
    med = {n: {f"{k}_{m}": median([x[m] for x in v[k]]) for k in ("quiet", "loaded")
               for m in ("single_tps", "agg_tps")} for n, v in runs.items()}
    peer = med["llama_cpp.server, 2 threads"]
    ratios, rows = {}, []
    for n, v in med.items():
        keep = ratio(v["loaded_agg_tps"], v["quiet_agg_tps"])
        vs_peer = ratio(v["loaded_agg_tps"], peer["loaded_agg_tps"])
        ratios[f"{n}: loaded/quiet"] = keep
        ratios[f"{n}: loaded vs peer"] = vs_peer
        rows.append([n, fmt(v["quiet_agg_tps"]), fmt(v["loaded_agg_tps"]), fmt(keep, 2, "x"),
                     fmt(vs_peer, 2, "x"), fmt(v["quiet_single_tps"]),
                     fmt(v["loaded_single_tps"])])
    Results("contention", {"rounds": rounds, "streams": args.streams, "max_tokens": MAX_TOKENS,
                           "model": str(model)}, med, ratios, {"runs": runs}).write()
    table = markdown_table([f"server ({args.streams} streams)", "quiet tok/s",
                            "one core busy tok/s", "kept", "vs peer, busy",
                            "single quiet", "single busy"], rows)
    update_doc_section("contention", f"""## With a busy co-tenant

`benchmarks/bench_contention.py{' --quick' if args.quick else ''}`: each server quiet, then
beside a process spinning on one of the two cores; {args.streams}-stream aggregate and
single-stream decode tokens/s ({MAX_TOKENS} tokens a stream), medians over {rounds}
round(s), same GGUF.

{table}

Results: `benchmarks/results/contention.json`.
""")
    print(table)


if __name__ == "__main__":
    main()
