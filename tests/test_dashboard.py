"""The live dashboard: its JSON against /metrics on the shared real server, bad input, and
the page itself in headless Chromium showing the same numbers, with a screenshot."""

from __future__ import annotations

import json
import math
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL, chromium
from golive.api.dashboard import mean_token_gap, window_stats
from golive.observe.record import RequestRecord

TIERS = ("priority", "default", "flex")
# Long enough that a repeat is mostly served from the prefix cache.
PROMPT = ("You are the support assistant of a small bakery. Opening hours are 7 to 18 on "
          "weekdays and 8 to 14 on Saturdays; Sundays closed. We bake sourdough, rye, "
          "baguettes and croissants every morning and take cake orders two days ahead. ") * 3


def chat(client, tier: str, text: str, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": PROMPT},
                               {"role": "user", "content": text}],
        max_tokens=kw.pop("max_tokens", 6), temperature=0, service_tier=tier, **kw)


@pytest.fixture(scope="module")
def traffic(server):
    """Requests on every tier (repeats hit the cache; one predicted output makes drafts)
    and a finished two-line batch."""
    client = server.client()
    sent = dict.fromkeys(TIERS, 0)
    # First: for a while after a priority request lower tiers draft nothing (the guard)
    # (the prediction is the model's own answer, so its drafts are proposed and verified)
    ask = "When do you open on Saturday? Answer in one sentence."
    answer = chat(client, "default", ask, max_tokens=12).choices[0].message.content
    r = chat(client, "default", ask, prediction={"type": "content", "content": answer},
             max_tokens=12)
    sent["default"] += 2
    assert r.usage.completion_tokens > 0
    for tier in TIERS:  # the same system prompt: the second and third hit the cache
        assert chat(client, tier, "When do you open on Saturday?").service_tier == tier
        sent[tier] += 1
    stream = chat(client, "priority", "Say hello.", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) != ""
    sent["priority"] += 1

    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "max_tokens": 4, "temperature": 0,
                       "messages": [{"role": "user", "content": f"Count to {i}."}]}}
             for i in (2, 3)]
    f = client.files.create(file=("dash.jsonl", "".join(json.dumps(x) + "\n" for x in lines)
                                  .encode()), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 120
    while (batch := client.batches.retrieve(batch.id)).status not in (
            "completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        time.sleep(0.3)
    assert batch.status == "completed"
    server.wait_idle()
    return {"sent": sent, "batch": batch}


def scrape(server) -> dict[str, dict[tuple, float]]:
    """/metrics as {sample name: {sorted label items: value}}."""
    out: dict[str, dict[tuple, float]] = {}
    text = httpx.get(server.base + "/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by_tier(samples: dict[tuple, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in samples.items():
        tier = dict(labels)["tier"]
        out[tier] = out.get(tier, 0) + v
    return out


def data(server, **params) -> dict:
    # An hour's window: on a loaded machine this module's traffic can take over a minute.
    params.setdefault("window", 3600)
    r = httpx.get(server.base + "/dashboard/data", params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def consistent_read(server, timeout: float = 20) -> tuple[dict, dict]:
    """The dashboard's JSON and /metrics taken while nothing finished in between (another
    test's batch may still be trickling through the shared server)."""
    deadline = time.monotonic() + timeout
    while True:
        d, m, d2 = data(server), scrape(server), data(server)
        if d["total"] == d2["total"] and d["engine"]["generated_tokens"] == \
                d2["engine"]["generated_tokens"]:
            return d, m
        assert time.monotonic() < deadline, "server never settled"
        time.sleep(0.2)


# ---- the JSON endpoint ---------------------------------------------------------


def test_data_agrees_with_metrics(server, traffic):
    d, m = consistent_read(server)
    tiers = {t["tier"]: t for t in d["tiers"]}
    assert {"priority", "default", "flex", "batch"} <= set(tiers)
    assert d["model"] == MODEL

    requests = by_tier(m["golive_requests_total"])
    cached = by_tier(m["golive_cached_prompt_tokens_total"])
    prompt = by_tier(m["golive_prompt_tokens_total"])
    cost = by_tier(m["golive_cost_usd_total"])
    for name, t in tiers.items():
        assert t["total"]["requests"] == requests.get(name, 0), name
        assert t["total"]["cached_tokens"] == cached.get(name, 0), name
        assert t["total"]["prompt_tokens"] == prompt.get(name, 0), name
        assert math.isclose(t["total"]["cost_usd"], cost.get(name, 0), rel_tol=1e-9), name
    assert d["total"]["requests"] == sum(requests.values())

    # What this module sent is in the window, with real timings.
    for name, n in traffic["sent"].items():
        w = tiers[name]["window"]
        assert w["requests"] >= n, name
        assert 0 < w["ttft_p50"] <= w["ttft_p95"], name
        assert 0 < w["itl_p50"] <= w["itl_p95"], name
        assert w["cost_usd"] > 0, name
    # The repeated system prompt came from the prefix cache.
    assert tiers["flex"]["window"]["cached_tokens"] > 0
    assert 0 < tiers["flex"]["window"]["cache_hit_rate"] <= 1
    assert tiers["batch"]["total"]["requests"] >= 2

    e = d["engine"]
    one_model = (("model", MODEL),)  # engine series are per model
    assert e["draft_proposed"] == m["golive_draft_tokens_proposed_total"][one_model]
    assert e["draft_accepted"] == m["golive_draft_tokens_accepted_total"][one_model]
    assert e["draft_proposed"] > 0  # the predicted output was verified as drafts
    assert e["draft_acceptance"] == pytest.approx(e["draft_accepted"] / e["draft_proposed"])
    assert e["cached_tokens"] > 0 and e["cache_hit_rate"] == pytest.approx(
        e["cached_tokens"] / e["prompt_tokens"])
    assert e["running"] == 0 and e["waiting"] == 0
    depth = by_tier(m["golive_queue_depth"])
    assert all(tiers[t]["waiting"] == depth[t] for t in depth)

    jobs = {j["id"]: j for j in d["batches"]["jobs"]}
    job = jobs[traffic["batch"].id]
    assert job["status"] == "completed"
    assert job["request_counts"] == {"total": 2, "completed": 2, "failed": 0}


def test_window_narrows(server, traffic):
    time.sleep(0.2)  # everything this module sent finished at least this long ago
    d = data(server, window=0.1)
    assert d["window_s"] == 0.1
    assert d["window"]["requests"] < d["total"]["requests"]


@pytest.mark.parametrize("bad", ["abc", "0", "-5", "nan", "1e9", ""])
def test_bad_window(server, bad):
    r = httpx.get(server.base + "/dashboard/data", params={"window": bad}, timeout=10)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "window" and "window" in err["message"]
    assert err["type"] == "invalid_request_error"


def test_page_and_assets(server):
    r = httpx.get(server.base + "/dashboard", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'src="dashboard/static/dashboard.js"' in r.text
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        a = httpx.get(server.base + f"/dashboard/static/{name}", timeout=10)
        assert a.status_code == 200 and a.headers["content-type"].startswith(kind)
    for name in ("dashboard.html.bak", "..%2Fdashboard.py", "x"):
        r = httpx.get(server.base + f"/dashboard/static/{name}", timeout=10)
        assert r.status_code == 404
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


# ---- the page in a real browser --------------------------------------------------

SNAPSHOT_JS = """() => {
  const cells = (tr) => Object.fromEntries([...tr.cells].map(
      (td) => [td.dataset.col, {text: td.textContent, value: td.dataset.value}]));
  return {
    updated: document.body.dataset.updated,
    state: document.body.dataset.state,
    kpis: Object.fromEntries([...document.querySelectorAll('.kpi .big')].map(
        (e) => [e.id, {text: e.textContent, value: e.dataset.value}])),
    tiers: [...document.querySelectorAll('#tiers tbody tr')].map(
        (tr) => ({tier: tr.dataset.tier, cells: cells(tr)})),
    batches: [...document.querySelectorAll('#batch-table tbody tr')].map(
        (tr) => ({id: tr.dataset.batch, cells: cells(tr)})),
    batchesHidden: document.getElementById('batches').hidden,
    costBars: [...document.querySelectorAll('#chart-cost rect')].map((r) => r.dataset.tier),
    seqLines: document.querySelectorAll('#chart-seq polyline').length,
  };
}"""


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _value(cell: dict) -> float | None:
    return None if cell["value"] in ("", None) else float(cell["value"])


def test_page_in_chromium(server, traffic, tmp_path):
    from playwright import sync_api  # a test dependency; it drives Debian's chromium

    browser_path = chromium()

    seen: dict[float, dict] = {}  # every JSON the page received, by its time

    def capture(route):
        resp = route.fetch()
        body = resp.json()
        seen[float(body["time"])] = body
        route.fulfill(response=resp)

    client = server.client()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/dashboard/data*", capture)
            page.goto(server.base + "/dashboard?interval=250&window=3600")
            page.wait_for_selector("body[data-state=live]", timeout=20_000)

            # Live: streams in flight show up as running sequences on the page. The
            # workers keep streaming until the page has seen them, however fast the machine.
            seen_running = threading.Event()

            def stream(tier: str) -> None:
                deadline = time.monotonic() + 30
                while not seen_running.is_set() and time.monotonic() < deadline:
                    for _ in chat(client, tier, "Tell me everything you bake.", max_tokens=32,
                                  stream=True):
                        pass

            workers = [threading.Thread(target=stream, args=(t,)) for t in ("priority", "flex")]
            for w in workers:
                w.start()
            try:
                page.wait_for_function(
                    "Number(document.getElementById('kpi-running').dataset.value) > 0",
                    timeout=30_000, polling=50)
            finally:
                seen_running.set()
                for w in workers:
                    w.join()
            server.wait_idle()

            # Settled: the page catches up with what /metrics counts.
            _, m = consistent_read(server)
            total = int(sum(m["golive_requests_total"].values()))
            page.wait_for_function(
                f"Number(document.getElementById('kpi-requests').dataset.value) >= {total}",
                timeout=15_000)
            snap = page.evaluate(SNAPSHOT_JS)
            shown = seen[float(snap["updated"])]  # the response this DOM was drawn from

            assert snap["state"] == "live" and not errors, errors
            assert _num(snap["kpis"]["kpi-requests"]["text"]) == shown["total"]["requests"] \
                == total
            assert _value(snap["kpis"]["kpi-waiting"]) == shown["engine"]["waiting"]
            assert _value(snap["kpis"]["kpi-cache"]) == pytest.approx(
                shown["engine"]["cache_hit_rate"])
            assert _value(snap["kpis"]["kpi-accept"]) == pytest.approx(
                shown["engine"]["draft_acceptance"])
            assert _value(snap["kpis"]["kpi-cost"]) == pytest.approx(shown["total"]["cost_usd"])

            rows = {r["tier"]: r["cells"] for r in snap["tiers"]}
            assert list(rows) == [t["tier"] for t in shown["tiers"]]
            assert {"priority", "default", "flex", "batch"} <= set(rows)
            cached = by_tier(m["golive_cached_prompt_tokens_total"])
            for t in shown["tiers"]:
                c = rows[t["tier"]]
                assert _num(c["total_requests"]["text"]) == t["total"]["requests"]
                assert _num(c["total_cached_tokens"]["text"]) == t["total"]["cached_tokens"] \
                    == cached.get(t["tier"], 0)
                assert _num(c["window_requests"]["text"]) == t["window"]["requests"]
                for k in ("ttft_p50", "ttft_p95", "itl_p50", "itl_p95"):
                    assert _value(c[k]) == (None if t["window"][k] is None
                                            else pytest.approx(t["window"][k])), (t["tier"], k)
            for name in traffic["sent"]:
                assert rows[name]["ttft_p50"]["text"].endswith("s")  # a time, not "–"
            assert set(snap["costBars"]) == {t["tier"] for t in shown["tiers"]
                                             if t["total"]["requests"] > 0}
            assert snap["seqLines"] == 2

            assert not snap["batchesHidden"]
            job = next(b["cells"] for b in snap["batches"] if b["id"] == traffic["batch"].id)
            assert job["status"]["text"] == "completed"
            assert (_num(job["completed"]["text"]), _num(job["total"]["text"])) == (2, 2)

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    from PIL import Image

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as img:
        assert img.width == 1280 and img.height >= 600
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, charts, tier colours: not blank


# ---- pure logic -------------------------------------------------------------------


def _rec(tier: str, created: float, total: float, ttft: float | None, tokens: int,
         status: int = 200, rejected: int = 0) -> RequestRecord:
    return RequestRecord(id=f"r{created}", created=created, endpoint="/v1/chat/completions",
                         model=MODEL, tier_requested=tier, tier_served=tier, status=status,
                         ttft_s=ttft, total_s=total, prompt_tokens=10, cached_tokens=4,
                         completion_tokens=tokens, rejected_prediction_tokens=rejected)


def test_mean_token_gap():
    assert mean_token_gap(_rec("default", 0, 1.0, 0.1, 10)) == pytest.approx(0.1)
    # two choices of five tokens each: four gaps per stream
    assert mean_token_gap(_rec("default", 0, 1.0, 0.2, 10), choices=2) == pytest.approx(0.2)
    # rejected prediction tokens are billed but never streamed
    assert mean_token_gap(_rec("default", 0, 1.0, 0.1, 13, rejected=3)) == pytest.approx(0.1)
    assert mean_token_gap(_rec("default", 0, 1.0, 0.1, 1)) is None
    assert mean_token_gap(_rec("default", 0, 1.0, None, 10)) is None


def test_window_stats_by_finish_time():
    recent = [(_rec("flex", 100.0, 5.0, 1.0, 5), 1),  # finished at 105
              (_rec("flex", 90.0, 5.0, 3.0, 5), 1),  # finished at 95: outside
              (_rec("priority", 101.0, 1.0, 0.5, 3), 1),
              (_rec("priority", 102.0, 0.001, None, 0, status=429), 1)]
    w = window_stats(recent, since=100.0)
    assert set(w) == {"flex", "priority"}
    assert w["flex"].requests == 1 and w["flex"].summary()["ttft_p50"] == 1.0
    p = w["priority"].summary()
    assert p["requests"] == 2 and p["errors"] == 1
    assert p["ttft_p50"] == p["ttft_p95"] == 0.5  # the 429 does not flatter the tier
    assert p["cache_hit_rate"] == pytest.approx(0.4)
