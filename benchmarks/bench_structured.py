"""Structured outputs: fewer requests, shorter keys, and golive vs llama-cpp-python's JSON mode.

    python benchmarks/bench_structured.py [--quick] [--model PATH.gguf] [--threads N]

1. N = 2, 4, 8 small extraction tasks on one text, sent as N requests (all at once)
   against one combined request (`golive.patterns.combine`): requests, prompt and
   completion tokens, latency, valid results.
2. The 8-task combined request with long, descriptive field names against short keys
   (`short_keys=True`): completion tokens and latency.
3. The same schemas (the extraction schemas plus the test suite in tests/schemas) on
   golive (`response_format` json_schema, grammar-constrained) and on
   `python -m llama_cpp.server` in its JSON-schema mode
   (`response_format={"type": "json_object", "schema": ...}`), one request at a
   time, same prompts: time per valid object and validity rate (the answer parses
   and validates against the schema). golive also runs them all at once.

Writes benchmarks/results/structured.json and the `structured` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
# benchmarks/ is a folder of scripts, not a package: import its helpers by path.
from bench_serving import server_commands  # noqa: E402
from common import (  # noqa: E402
    ROOT,
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

from golive.api.schemas import ChatCompletionRequest  # noqa: E402
from golive.api.structured import render_messages  # noqa: E402
from golive.api.schema_check import check_strict_schema  # noqa: E402
from golive.engine.types import InvalidRequest  # noqa: E402
from golive.patterns.combine import Combined, Task, combine  # noqa: E402

console = Console(stderr=True)
NAME = "structured"
MAX_TOKENS = 160
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER

TEXT = (
    "From: Maria Gonzalez <maria.g@example.org>\n"
    "Subject: Order AB-20417 arrived damaged\n\n"
    "Hello, I ordered 3 ceramic coffee mugs (order AB-20417) and they were delivered on "
    "2024-05-14. Two of them were cracked. I am quite disappointed and would like a refund "
    "for the broken ones. You can reach me at +1 555 0134. Thanks, Maria"
)

# (long descriptive name, instruction, schema): small, independent extraction tasks
TASKS = [
    Task("full_name_of_the_customer", "The customer's full name.",
         {"type": "string", "maxLength": 40}),
    Task("order_number_mentioned_in_the_message", "The order number.",
         {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{5}$"}),
    Task("product_that_was_ordered", "The product ordered.", {"type": "string", "maxLength": 40}),
    Task("number_of_items_ordered", "How many items were ordered.",
         {"type": "integer", "minimum": 1, "maximum": 100}),
    Task("overall_sentiment_of_the_message", "The sentiment of the message.",
         {"type": "string", "enum": ["positive", "neutral", "negative"]}),
    Task("customer_wants_a_refund", "Does the customer ask for a refund?", {"type": "boolean"}),
    Task("date_the_order_was_delivered", "The delivery date.",
         {"type": "string", "format": "date"}),
    Task("phone_number_of_the_customer", "The customer's phone number, or null.",
         {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}]}),
]
N_VALUES = (2, 4, 8)


def is_strict(schema: dict[str, Any]) -> bool:
    try:
        check_strict_schema(schema)
        return True
    except InvalidRequest:
        return False


def valid(text: str | None, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(json.loads(text or ""), schema, format_checker=FORMATS)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


# ---- 1 and 2: fewer requests, shorter keys (golive) -----------------------------------------


async def separate_vs_combined(server: Server, n: int) -> dict[str, Any]:
    client = make_client(server)
    tasks = TASKS[:n]
    t0 = time.monotonic()
    singles = await asyncio.gather(*(
        combine(client, server.model_id, [t], TEXT, retries=0, max_tokens=MAX_TOKENS,
                temperature=0) for t in tasks))
    t1 = time.monotonic()
    together = await combine(client, server.model_id, tasks, TEXT, retries=0,
                             max_tokens=MAX_TOKENS, temperature=0)
    t2 = time.monotonic()
    await client.close()
    return {
        "n": n,
        "separate": {"requests": sum(s.requests for s in singles),
                     "prompt_tokens": sum(s.prompt_tokens for s in singles),
                     "cached_tokens": sum(s.cached_tokens for s in singles),
                     "completion_tokens": sum(s.completion_tokens for s in singles),
                     "latency_s": t1 - t0,
                     "valid": sum(len(s.values) for s in singles)},
        "combined": {"requests": together.requests, "prompt_tokens": together.prompt_tokens,
                     "cached_tokens": together.cached_tokens,
                     "completion_tokens": together.completion_tokens,
                     "latency_s": t2 - t1, "valid": len(together.values)},
    }


async def long_vs_short(server: Server) -> dict[str, Any]:
    client = make_client(server)
    out = {}
    for label, short in (("long", False), ("short", True)):
        t0 = time.monotonic()
        r = await combine(client, server.model_id, TASKS, TEXT, short_keys=short, retries=0,
                          max_tokens=MAX_TOKENS, temperature=0)
        out[label] = {"completion_tokens": r.completion_tokens, "prompt_tokens": r.prompt_tokens,
                      "latency_s": time.monotonic() - t0, "valid": len(r.values),
                      "answer": r.raw[0] if r.raw else None}
    await client.close()
    return out


# ---- 3: the same schemas on golive and on llama_cpp.server ---------------------------------


def schema_cases(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    cases = [(f"task_{i}", Combined([t]).schema) for i, t in enumerate(TASKS)]
    cases += [(f"combined_{n}", Combined(TASKS[:n]).schema) for n in N_VALUES]
    suite = sorted((ROOT / "tests" / "schemas").glob("*.json"))
    if quick:
        suite = suite[::3]
    cases += [(p.stem, json.loads(p.read_text())) for p in suite]
    return cases


def messages_for(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt golive builds for a json_schema request, sent as-is to the peer too."""
    body = ChatCompletionRequest(model="m", messages=[
        {"role": "user", "content": f"{TEXT}\n\nExtract the data as JSON."}])
    return render_messages(body, [], schema)


async def one_schema(client: Any, server: Server, peer: bool, name: str,
                     schema: dict[str, Any]) -> dict[str, Any]:
    if peer:
        rf = {"type": "json_object", "schema": schema}
        msgs = messages_for(schema)
    else:
        rf = {"type": "json_schema",
              "json_schema": {"name": name, "schema": schema, "strict": is_strict(schema)}}
        msgs = [{"role": "user", "content": f"{TEXT}\n\nExtract the data as JSON."}]
    t0 = time.monotonic()
    try:
        r = await client.chat.completions.create(model=server.model_id, messages=msgs,
                                                 response_format=rf, max_tokens=MAX_TOKENS,
                                                 temperature=0)
    except Exception as e:  # a refused or failed schema counts as no valid object
        return {"name": name, "latency_s": time.monotonic() - t0, "valid": False,
                "error": f"{type(e).__name__}: {str(e)[:200]}", "completion_tokens": 0}
    text = r.choices[0].message.content
    ok = valid(text, schema)
    return {"name": name, "latency_s": time.monotonic() - t0, "valid": ok,
            "finish_reason": r.choices[0].finish_reason,
            "completion_tokens": r.usage.completion_tokens if r.usage else None,
            "text": (text or "")[:300] if ok else text}  # all of an invalid one, to look at


async def schema_suite(server: Server, peer: bool, cases: list, at_once: bool) -> dict[str, Any]:
    client = make_client(server)
    t0 = time.monotonic()
    if at_once:
        rows = await asyncio.gather(*(one_schema(client, server, peer, n, s) for n, s in cases))
    else:
        rows = [await one_schema(client, server, peer, n, s) for n, s in cases]
    wall = time.monotonic() - t0
    await client.close()
    n_valid = sum(r["valid"] for r in rows)
    return {"wall_s": wall, "valid": n_valid, "total": len(rows),
            "validity": n_valid / len(rows),
            "s_per_valid_object": wall / n_valid if n_valid else None, "rows": list(rows)}


# ---- report ---------------------------------------------------------------------------------


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {}
    for n in N_VALUES:
        runs = [r for r in raw["fewer_requests"] if r["n"] == n]
        for side in ("separate", "combined"):
            for k in ("requests", "prompt_tokens", "completion_tokens", "latency_s", "valid"):
                m[f"n{n}_{side}_{k}"] = median([r[side][k] for r in runs])
    for side in ("long", "short"):
        for k in ("completion_tokens", "prompt_tokens", "latency_s", "valid"):
            m[f"keys_{side}_{k}"] = median([r[side][k] for r in raw["keys"]])
    for who in ("golive", "golive_at_once", "peer"):
        runs = raw["schemas"].get(who, [])
        if runs:
            m[f"{who}_s_per_valid"] = median([r["s_per_valid_object"] for r in runs])
            m[f"{who}_validity"] = median([r["validity"] for r in runs])
    return m


def report(m: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = []
    for n in N_VALUES:
        s, c = f"n{n}_separate", f"n{n}_combined"
        rows.append([str(n), f"{fmt(m[s + '_requests'], 0)} → {fmt(m[c + '_requests'], 0)}",
                     f"{fmt(m[s + '_prompt_tokens'], 0)} → {fmt(m[c + '_prompt_tokens'], 0)}",
                     f"{fmt(m[s + '_completion_tokens'], 0)} → "
                     f"{fmt(m[c + '_completion_tokens'], 0)}",
                     f"{fmt(m[s + '_latency_s'], 2)} → {fmt(m[c + '_latency_s'], 2)}",
                     fmt(ratio(m[c + "_latency_s"], m[s + "_latency_s"]), 2, "x"),
                     f"{fmt(m[s + '_valid'], 0)}/{n} → {fmt(m[c + '_valid'], 0)}/{n}"])
    fewer = markdown_table(["tasks", "requests", "prompt tokens", "completion tokens",
                            "latency (s)", "combined / separate latency", "valid"], rows)
    keys = markdown_table(
        ["8 tasks, one request", "long keys", "short keys", "short / long"],
        [["completion tokens", fmt(m["keys_long_completion_tokens"], 0),
          fmt(m["keys_short_completion_tokens"], 0),
          fmt(ratio(m["keys_short_completion_tokens"], m["keys_long_completion_tokens"]), 2,
              "x")],
         ["prompt tokens", fmt(m["keys_long_prompt_tokens"], 0),
          fmt(m["keys_short_prompt_tokens"], 0),
          fmt(ratio(m["keys_short_prompt_tokens"], m["keys_long_prompt_tokens"]), 2, "x")],
         ["latency (s)", fmt(m["keys_long_latency_s"], 2), fmt(m["keys_short_latency_s"], 2),
          fmt(ratio(m["keys_short_latency_s"], m["keys_long_latency_s"]), 2, "x")],
         ["valid results", f"{fmt(m['keys_long_valid'], 0)}/8",
          f"{fmt(m['keys_short_valid'], 0)}/8", ""]])
    cfg = meta["config"]
    peer_rows = [["time per valid object (s)", fmt(m.get("golive_s_per_valid"), 2),
                  fmt(m.get("peer_s_per_valid"), 2),
                  fmt(ratio(m.get("golive_s_per_valid"), m.get("peer_s_per_valid")), 2, "x"),
                  fmt(m.get("golive_at_once_s_per_valid"), 2)],
                 ["validity rate", fmt(_pct(m.get("golive_validity")), 0, "%"),
                  fmt(_pct(m.get("peer_validity")), 0, "%"), "",
                  fmt(_pct(m.get("golive_at_once_validity")), 0, "%")]]
    versus = markdown_table(["same schemas, one at a time", "golive", "llama_cpp.server",
                             "golive / peer", "golive, all at once"], peer_rows)
    v, machine = meta["versions"], meta["machine"]
    run = (f"Run {meta['timestamp']} (commit {meta['git_commit'] or '—'}) on {machine['cpu']} "
           f"({machine['cpu_count']} cores), {cfg['threads']} threads, model "
           f"`{Path(cfg['model']).name}`, temperature 0, max_tokens {cfg['max_tokens']}, "
           f"{cfg['rounds']} round(s), {cfg['n_schemas']} schemas in the comparison; "
           f"golive {v.get('golive') or '—'}, llama-cpp-python {v.get('llama-cpp-python')}. "
           f"Medians over rounds. Raw samples: `benchmarks/results/{NAME}.json`.")
    return "\n\n".join([
        "### Fewer requests: N extraction tasks as N requests (sent at once) → one combined "
        "request", fewer,
        "### Shorter keys: long descriptive field names → short keys (`short_keys=True`)", keys,
        "### JSON schema mode: golive (grammar, `json_schema`) vs llama_cpp.server "
        "(`json_object` + `schema`)", versus,
        "Validity: the answer parses and validates against the schema (formats included). "
        "Both servers get the same prompt (golive's schema instruction is sent to the peer "
        "as a system message). Time per valid object: wall time of the whole sequence over "
        "the number of valid answers.", run,
        *[f"- {n}" for n in meta["notes"]]])


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


# ---- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round, a third of the suite")
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--servers", default="golive,peer", help="comma list: golive,peer")
    ap.add_argument("--no-docs", action="store_true", help="don't touch docs/benchmarks.md")
    args = ap.parse_args()

    model = (args.model or default_gguf()).resolve()
    commands = server_commands(model, args.threads, None)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    rounds = 1 if args.quick else 3
    cases = schema_cases(args.quick)
    scratch = tempfile.TemporaryDirectory(prefix="golive-bench-")
    envs = {"golive": {"GOLIVE_DATA_DIR": scratch.name}, "peer": {}}
    raw: dict[str, Any] = {"fewer_requests": [], "keys": [], "schemas": {}}
    busy: dict[str, list[float | None]] = {n: [] for n in wanted}
    notes = [
        "llama_cpp.server runs one request at a time and builds a GBNF grammar from the "
        "schema per request; golive compiles the schema once (llguidance, cached by hash), "
        "batches requests, and in the last quarter of max_tokens steers toward closing the "
        "JSON so that an answer cut short still parses.",
        "Separate requests share the input text, so golive's prefix cache serves most of "
        "their prompts; the prompt-token column counts every prompt token sent.",
    ]
    for r in range(rounds):
        for name in wanted if r % 2 == 0 else wanted[::-1]:
            console.print(f"[bold]round {r + 1}, {name}[/]")
            busy[name].append(b := cpu_busy())
            if b is not None and b > 0.15:
                console.print(f"[yellow]CPU {b:.0%} busy before start: other work runs[/]")
            with running_server(name, commands[name], envs[name]) as server:
                if name == "golive":
                    asyncio.run(one_schema_warmup(server))
                    for n in N_VALUES:
                        raw["fewer_requests"].append(asyncio.run(separate_vs_combined(server, n)))
                    raw["keys"].append(asyncio.run(long_vs_short(server)))
                    raw["schemas"].setdefault("golive", []).append(
                        asyncio.run(schema_suite(server, False, cases, at_once=False)))
                    raw["schemas"].setdefault("golive_at_once", []).append(
                        asyncio.run(schema_suite(server, False, cases, at_once=True)))
                else:
                    raw["schemas"].setdefault("peer", []).append(
                        asyncio.run(schema_suite(server, True, cases, at_once=False)))
    scratch.cleanup()
    if "golive" not in wanted:
        raise SystemExit("golive was not run: nothing to report")
    medians = summarize(raw)
    console.print(medians)
    results = Results(
        name=NAME,
        config={"model": str(model), "threads": args.threads, "rounds": rounds,
                "max_tokens": MAX_TOKENS, "n_values": list(N_VALUES),
                "n_schemas": len(cases), "schemas": [n for n, _ in cases],
                "cpu_busy_before": busy, "quick": args.quick,
                "commands": {n: list(commands[n](0)) for n in wanted}},
        medians={"all": medians},
        ratios={
            **{f"combined_over_separate_latency_n{n}": ratio(
                medians[f"n{n}_combined_latency_s"], medians[f"n{n}_separate_latency_s"])
               for n in N_VALUES},
            "short_over_long_completion_tokens": ratio(
                medians["keys_short_completion_tokens"], medians["keys_long_completion_tokens"]),
            "short_over_long_latency": ratio(medians["keys_short_latency_s"],
                                             medians["keys_long_latency_s"]),
            "golive_over_peer_s_per_valid": ratio(medians.get("golive_s_per_valid"),
                                                  medians.get("peer_s_per_valid")),
        },
        samples=raw,
        notes=notes + (["quick run: one round, a third of the schema suite"]
                       if args.quick else []),
    )
    path = results.write()
    console.print(f"results: {path}")
    if not args.no_docs:
        meta = json.loads(path.read_text())
        update_doc_section(NAME, report(medians, meta))
        console.print("docs/benchmarks.md updated")


async def one_schema_warmup(server: Server) -> None:
    """First structured request builds the grammar compiler (~1 s): keep it out of timings."""
    client = make_client(server)
    await one_schema(client, server, False, "warmup", Combined(TASKS[:1]).schema)
    await client.close()


if __name__ == "__main__":
    main()
