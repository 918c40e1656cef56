"""`golive eval` end to end against the real server: runs, the cache, resume, judges,
the CLI gate, compare, and the example's HTML report in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from golive.commands import app
from golive.evals.runner import RunOptions, run_eval
from golive.evals.store import EvalStore

from conftest import MODEL, chromium

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "evals" / "qa.yaml"

DATA = [
    {"id": "fr", "input": "What is the capital of France?", "expected": "Paris"},
    {"id": "jp", "input": "What is the capital of Japan?", "expected": "Tokyo"},
]


def make_eval(tmp: Path, name: str, system: str, graders: str, extra: str = "") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DATA))
    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        dataset: data.jsonl
        defaults:
          model: {MODEL}
          system: "{system}"
          parameters: {{temperature: 0, max_tokens: 6}}
        variants:
          - name: plain
          - name: short
            prompt: "{{{{ input }}}} One word."
        """) + graders + extra)
    return path


STRING_GRADERS = """\
graders:
  - type: contains
    case_insensitive: true
    weight: 2
  - type: rouge
    variant: rouge1
    threshold: 0
"""


def requests_served(server) -> float:
    """Chat requests the server has finished, from its Prometheus /metrics."""
    text = httpx.get(server.base + "/metrics", timeout=10).text
    return sum(float(m[1]) for m in re.finditer(
        r'^golive_requests_total\{[^}]*endpoint="/v1/chat/completions"[^}]*\} (\S+)$', text, re.M))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = EvalStore(tmp_path_factory.mktemp("evals") / "evals.db")
    yield s
    s.close()


def run(path: Path, server, store: EvalStore, **kw):
    opts = RunOptions(base_url=server.base + "/v1", progress=False, **kw)
    return asyncio.run(run_eval(path, opts, store))


def test_run_then_cached_rerun_makes_no_model_calls(server, store, tmp_path):
    path = make_eval(tmp_path, "cache", "You are a helpful assistant.", STRING_GRADERS)
    server.wait_idle()  # nothing left over from other test files may finish during the count
    before = requests_served(server)
    first = run(path, server, store)
    after_first = requests_served(server)
    assert after_first - before == 4  # 2 cases x 2 variants
    s = first.summary
    assert s["calls"] == {"model_calls": 4, "cache_hits": 0, "judge_calls": 0,
                          "judge_cost_usd": 0.0}
    assert [v["name"] for v in s["variants"]] == ["plain", "short"]
    for v in s["variants"]:
        assert v["errors"] == 0 and v["results"] == 2
        assert 0 <= v["score"]["mean"] <= 1 and v["latency_s"]["p50"] > 0
        assert v["tokens"]["completion"] > 0
        assert v["cost_usd"]["total"] > 0 and v["cost_usd"]["source"] == ["golive"]
    for r in first.results:
        c = r["completion"]
        assert 0 < c["completion_tokens"] <= 6 and c["cost_usd"] > 0
        assert set(r["grades"]) == {"contains", "rouge"}
        # The case score is the weighted mean of the two graders.
        g = r["grades"]
        assert r["score"] == pytest.approx((2 * g["contains"]["score"] + g["rouge"]["score"]) / 3)
        assert r["passed"] == (g["contains"]["score"] == 1.0)

    second = run(path, server, store)
    assert requests_served(server) == after_first  # the server saw nothing
    assert second.summary["calls"]["model_calls"] == 0
    assert second.summary["calls"]["cache_hits"] == 4
    key = lambda r: (r["variant"], r["case_id"])  # noqa: E731
    assert sorted((key(r), r["output"], r["score"]) for r in second.results) == \
        sorted((key(r), r["output"], r["score"]) for r in first.results)
    # Latency and cost are the original calls', so cached reruns report the same numbers.
    assert [v["latency_s"] for v in second.summary["variants"]] == \
        [v["latency_s"] for v in first.summary["variants"]]
    assert second.run_id != first.run_id
    assert {r["id"] for r in store.list_runs()} >= {first.run_id, second.run_id}

    # --no-cache really calls the model again.
    third = run(path, server, store, use_cache=False, variants=["short"], limit=1)
    assert third.summary["calls"]["model_calls"] == 1
    assert requests_served(server) == after_first + 1


def test_repeats_give_mean_and_std(server, store, tmp_path):
    path = make_eval(tmp_path, "repeats", "You are a helpful assistant.", STRING_GRADERS)
    res = run(path, server, store, repeats=2, limit=1, variants=["plain"],
              concurrency=2)
    (v,) = res.summary["variants"]
    assert len(v["score"]["per_repeat"]) == 2 and v["score"]["std"] is not None
    assert sorted(r["repeat"] for r in res.results) == [0, 1]
    # Repeats are distinct samples: never served from each other's cache entry.
    calls = res.summary["calls"]
    assert calls["model_calls"] + calls["cache_hits"] == 2 and calls["model_calls"] >= 1


def test_interrupted_run_resumes(server, store, tmp_path):
    path = make_eval(tmp_path, "resume", "Answer briefly.", STRING_GRADERS)

    async def interrupt() -> str:
        task = asyncio.ensure_future(run_eval(path, RunOptions(
            base_url=server.base + "/v1", progress=False, concurrency=1), store))
        while True:  # stop once some, but not all, results are stored
            await asyncio.sleep(0.05)
            runs = [r for r in store.list_runs(5) if r["name"] == "resume"]
            if runs and store.results(runs[0]["id"]):
                task.cancel()
                break
        with pytest.raises(asyncio.CancelledError):
            await task
        return runs[0]["id"]

    run_id = asyncio.run(interrupt())
    assert store.get_run(run_id)["status"] == "interrupted"
    partial = {(r["variant"], r["case_id"]): r for r in store.results(run_id)}
    assert 0 < len(partial) < 4
    resumed = run(path, server, store, resume=run_id)
    assert resumed.run_id == run_id and store.get_run(run_id)["status"] == "completed"
    assert len(resumed.results) == 4
    for r in resumed.results:  # what was stored before the interruption is kept as it was
        if (r["variant"], r["case_id"]) in partial:
            assert r == partial[(r["variant"], r["case_id"])]
    # A different eval file cannot resume this run.
    other = make_eval(tmp_path / "other", "resume", "Something else.", STRING_GRADERS)
    from golive.evals.errors import EvalError

    with pytest.raises(EvalError, match="different eval file"):
        run(other, server, store, resume=run_id)


def test_backend_errors_are_reported_not_cached(server, store, tmp_path):
    path = make_eval(tmp_path, "errors", "You are a helpful assistant.", STRING_GRADERS)
    res = run(path, server, store, model="no-such-model", limit=1)
    for v in res.summary["variants"]:
        assert v["errors"] == 1 and v["score"]["mean"] == 0.0 and v["pass_rate"]["mean"] == 0
    r = res.results[0]
    assert r["error"].startswith("HTTP 404") and "no-such-model" in r["error"]
    assert "(param: model)" in r["error"]
    again = run(path, server, store, model="no-such-model", limit=1)
    assert again.summary["calls"]["model_calls"] == 2  # errors are retried, never cached


# The 135M default model is no judge: left free it replies in any shape, and
# parse_score finds no score as often as not. Here each judge's reply is
# constrained (response_format through the parameters' extra_body) to the shape
# the parsers read, so every call must yield a score or a verdict: what this
# test checks is the judges' plumbing (prompts, calls, parsing, both orders,
# costs, the cache), not the 135M model's taste.
SCORE_FORMAT = {"type": "json_schema", "json_schema": {"name": "grade", "strict": True, "schema": {
    "type": "object", "properties": {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["score"], "additionalProperties": False}}}
VERDICT_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True,
    "schema": {"type": "object",
               "properties": {"verdict": {"type": "string", "enum": ["[[A]]", "[[B]]", "[[C]]"]}},
               "required": ["verdict"], "additionalProperties": False}}}
JUDGE_GRADERS = f"""\
graders:
  - type: judge
    criteria: The answer names the correct city.
    judge: {{parameters: {{temperature: 0, max_tokens: 16,
                         extra_body: {{response_format: {json.dumps(SCORE_FORMAT)}}}}}}}
  - type: pairwise
    against: plain
    judge: {{parameters: {{temperature: 0, max_tokens: 16,
                         extra_body: {{response_format: {json.dumps(VERDICT_FORMAT)}}}}}}}
"""


def test_llm_judges_against_the_real_server(server, store, tmp_path):
    path = make_eval(tmp_path, "judges", "You are a helpful assistant.", JUDGE_GRADERS)
    res = run(path, server, store, limit=1)
    out = {r["variant"]: r["output"] for r in res.results}
    # pointwise: 1 case x 2 variants; pairwise: both orders, unless the answers are identical
    pairwise_calls = 0 if out["plain"].strip() == out["short"].strip() else 2
    assert res.summary["calls"]["judge_calls"] == 2 + pairwise_calls
    assert res.summary["calls"]["judge_cost_usd"] > 0
    for r in res.results:
        j = r["grades"]["judge"]
        reply = json.loads(j["detail"]["judge_reply"])  # the raw reply is kept
        assert j["detail"]["judge_score"] == reply["score"] in (1, 2, 3, 4, 5), j
        assert j["score"] == (reply["score"] - 1) / 4
        assert j["reason"].startswith(f"{reply['score']}/5")
        pw = r["grades"]["pairwise"]
        if r["variant"] == "plain":
            assert pw["score"] is None and "baseline" in pw["reason"]
            continue
        assert len(pw["detail"]["judge_replies"]) == pairwise_calls
        assert pw["detail"]["outcome"] in ("win", "tie", "loss"), pw
        assert pw["score"] == {"win": 1.0, "tie": 0.5, "loss": 0.0}[pw["detail"]["outcome"]]
        if pairwise_calls:
            verdicts = [json.loads(x)["verdict"][2] for x in pw["detail"]["judge_replies"]]
            first, second = (pw["detail"]["verdict_candidate_first"],
                             pw["detail"]["verdict_candidate_second"])
            assert [first, second] == [{"C": "tie"}.get(v, v) for v in verdicts]
    again = run(path, server, store, limit=1)
    assert again.summary["calls"] == {"model_calls": 0, "cache_hits": 2, "judge_calls": 0,
                                      "judge_cost_usd": 0.0}
    assert [r["grades"] for r in again.results] == [r["grades"] for r in res.results]


def test_cli_gate_exit_code_list_show_compare(server, store, tmp_path):
    gate = STRING_GRADERS + "  - type: equals\n    name: impossible\n    weight: 0\n" \
                            "    min_mean: 0.5\n"
    path = make_eval(tmp_path, "cache", "You are a helpful assistant.", gate)
    db = str(store.path)
    cli = CliRunner()
    r = cli.invoke(app, ["eval", str(path), "--base-url", server.base + "/v1", "--db", db,
                         "--no-progress", "--json", str(tmp_path / "out.json")])
    assert r.exit_code == 1, r.output  # the impossible grader's min_mean fails the gate
    assert "gate: FAILED" in r.output and "impossible mean 0.000 < min_mean 0.5" in r.output
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["summary"]["gate"]["passed"] is False and len(out["results"]) == 4
    calls = out["summary"]["calls"]
    assert calls["model_calls"] + calls["cache_hits"] == 4
    run_id = out["run"]["id"]

    ok = make_eval(tmp_path, "cache", "You are a helpful assistant.",
                   STRING_GRADERS + "gate: {min_pass_rate: 0.0}\n")
    r = cli.invoke(app, ["eval", "run", str(ok), "--base-url", server.base + "/v1", "--db", db,
                         "--no-progress"])
    assert r.exit_code == 0 and "gate: passed" in r.output

    r = cli.invoke(app, ["eval", "list", "--db", db, "--json"])
    assert run_id in {x["id"] for x in json.loads(r.output)}
    # a unique prefix works (ids are a timestamp and 6 hex digits: runs of the same
    # second share the first 16 characters)
    r = cli.invoke(app, ["eval", "show", run_id[:-2], "--db", db])
    assert r.exit_code == 0 and "plain" in r.output
    r = cli.invoke(app, ["eval", "compare", f"{run_id}:plain", f"{run_id}:short", "--db", db,
                         "--json"])
    assert r.exit_code == 0, r.output
    (c,) = json.loads(r.output)["comparisons"]
    assert c["n"] == 2 and c["ci_low"] <= c["diff"] <= c["ci_high"]
    r = cli.invoke(app, ["eval", "compare", run_id, "latest", "--db", db])
    assert r.exit_code == 0 and "n.s." in r.output  # same cached outputs
    r = cli.invoke(app, ["eval", "compare", run_id, "nope", "--db", db])
    assert r.exit_code == 2 and "no run 'nope'" in r.output


def test_cost_from_price_table_without_golive_header():
    """A backend that is not golive sends no cost header: tokens x golive's price table.
    (Pure logic: the response is canned, the client is the real openai one.)"""
    from openai import AsyncOpenAI

    from golive.evals.client import ModelCaller
    from golive.observe.cost import PriceTable

    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
                      "prompt_tokens_details": {"cached_tokens": 400}}}
    transport = httpx.MockTransport(lambda req: httpx.Response(200, json=body))

    async def go():
        caller = ModelCaller(None)
        caller._clients[("http://upstream/v1", None)] = AsyncOpenAI(
            base_url="http://upstream/v1", api_key="k",
            http_client=httpx.AsyncClient(transport=transport))
        c = await caller.complete("http://upstream/v1", None, "gpt-4.1-mini",
                                  [{"role": "user", "content": "Capital?"}], {})
        await caller.aclose()
        return c

    c = asyncio.run(go())
    want = PriceTable.load().cost("gpt-4.1-mini", "default", 1000, 400, 200)
    assert c.cost_source == "price table" and c.cost_usd == pytest.approx(want) and want > 0


# ---- the example and its HTML report in headless Chromium ----------------------------------

def test_example_html_report_in_headless_chromium(server, store, tmp_path):
    browser = chromium()
    html = tmp_path / "report.html"
    r = CliRunner().invoke(app, [
        "eval", "run", str(EXAMPLE), "--base-url", server.base + "/v1", "--db", str(store.path),
        "--limit", "2", "--max-tokens", "12", "--no-progress", "--html", str(html)])
    assert r.exit_code in (0, 1), r.output  # the gate may fail on 3 short cases
    for name in ("zero-shot", "few-shot", "short"):
        assert name in r.output

    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    # The script ran (it fills #js-summary) and the page has what the report promises.
    assert re.search(r'id="js-summary"[^>]*>2 cases, \d+ with a failing variant<', dom), dom[:500]
    assert dom.count('class="variant"') == 3
    assert dom.count('<tr class="case"') == 2
    for chart in ("chart-latency", "chart-cost"):
        svg = re.search(rf'<svg id="{chart}".*?</svg>', dom, re.S)
        assert svg and svg.group(0).count('class="point"') == 3
    assert "<ins>" in dom  # per-case diffs against the expected answer

    png = tmp_path / "report.png"
    subprocess.run(base + ["--window-size=1280,1600", f"--screenshot={png}", html.as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 1600)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, charts, diff colours: not blank
