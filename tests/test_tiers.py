"""Service tiers, flex refusals, preemption, ramp protection, cost and the request log."""

from __future__ import annotations

import re
import threading
import time
import tomllib
from importlib import resources

import httpx
import openai
import pytest

from conftest import EXACT, MODEL, Server, assert_same_or_near_tie
from golive.observe.requestlog import RequestLog

NO_EOS = {"0": -100, "2": -100, "4": -100}  # only max_tokens can end these


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory):
    """One sequence at a time: any second request must queue, preempt or be refused."""
    s = Server(tmp_path_factory.mktemp("golive-one-slot"), "--slots", "1", "--flex-timeout", "1",
               *EXACT)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("golive-ramp"), "--priority-tpm", "30")
    yield s
    s.stop()


def _msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("asked,served", [
    (None, "default"), ("auto", "default"), ("default", "default"), ("scale", "default"),
    ("flex", "flex"), ("priority", "priority"),
])
def test_tier_is_echoed_in_response_and_every_chunk(client, asked, served):
    kw = {} if asked is None else {"service_tier": asked}
    r = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=_msgs("Say hi."), max_tokens=5, **kw)
    assert r.parse().service_tier == served
    assert r.headers["x-golive-service-tier"] == served
    stream = client.chat.completions.create(model=MODEL, messages=_msgs("Say hi."), max_tokens=5,
                                            stream=True, **kw)
    tiers = {ch.service_tier for ch in stream}
    assert tiers == {served}
    # the SDK's legacy completions method has no service_tier argument: send it as body
    c = client.completions.create(model=MODEL, prompt="Once upon", max_tokens=3,
                                  extra_body=kw or None)
    assert c.service_tier == served


def _hold_the_slot(server: Server, started: threading.Event, n_tokens: int = 400) -> threading.Thread:
    """A default request that keeps the only slot busy for a while."""
    def run() -> None:
        stream = server.client().chat.completions.create(
            model=MODEL, messages=_msgs("Write a long story."), max_tokens=n_tokens,
            temperature=0.9, seed=1, logit_bias=NO_EOS, stream=True)
        for ch in stream:
            if ch.choices and ch.choices[0].delta.content:
                started.set()

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    return t


def test_flex_gets_429_when_no_capacity_and_is_not_charged(one_slot):
    one_slot.wait_idle()
    started = threading.Event()
    t = _hold_the_slot(one_slot, started)
    try:
        client = one_slot.client()
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=MODEL, messages=_msgs("hi"), max_tokens=4,
                                           service_tier="flex", extra_body={"queue_timeout": 0.3})
        assert e.value.code == "resource_unavailable"
        assert e.value.status_code == 429
        assert float(e.value.response.headers["retry-after"]) >= 1
        # streaming flex is refused with an HTTP status too, not inside a 200 stream
        r = httpx.post(one_slot.base + "/v1/chat/completions", timeout=30, json={
            "model": MODEL, "messages": _msgs("hi"), "max_tokens": 4, "stream": True,
            "service_tier": "flex", "queue_timeout": 0.3})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "resource_unavailable"
        assert "retry-after" in r.headers
        # the server-wide budget (--flex-timeout 1) applies without an override
        t0 = time.monotonic()
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=MODEL, messages=_msgs("hi"), max_tokens=4,
                                           service_tier="flex")
        assert time.monotonic() - t0 >= 0.9
    finally:
        t.join()
    # refused requests are logged, at no cost
    log = RequestLog(f"sqlite:///{one_slot.data_dir / 'requests.db'}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        refused = log.query(status=429)
        if len(refused) >= 3:
            break
        time.sleep(0.2)
    assert len(refused) == 3
    assert all(r.cost_usd == 0 and r.tier_requested == "flex" for r in refused)
    log.close()


def _preemptions(server: Server) -> float:
    text = httpx.get(server.base + "/metrics", timeout=10).text
    return float(re.search(r"^golive_preemptions(?:_total)?(?:\{[^}]*\})? (\S+)$", text, re.M).group(1))


def test_priority_preempts_and_the_preempted_output_is_unchanged(one_slot):
    one_slot.wait_idle()
    client = one_slot.client()
    ask = dict(model=MODEL, messages=_msgs("Explain how bread is made, step by step."),
               max_tokens=120, temperature=0, logprobs=True, top_logprobs=2)
    alone = client.chat.completions.create(**ask)
    assert alone.usage.completion_tokens >= 60  # long enough to be interrupted

    before = _preemptions(one_slot)
    result: dict = {}
    seen_tokens = threading.Event()

    def victim() -> None:
        text, lps = "", []
        stream = client.chat.completions.create(stream=True, **ask)
        for ch in stream:
            if ch.choices and ch.choices[0].delta.content:
                text += ch.choices[0].delta.content
                lps.extend(ch.choices[0].logprobs.content)
                if len(lps) >= 10:
                    seen_tokens.set()
        result["text"], result["lps"] = text, lps

    t = threading.Thread(target=victim)
    t.start()
    assert seen_tokens.wait(60)
    pri = client.chat.completions.create(model=MODEL, messages=_msgs("Say yes."), max_tokens=8,
                                         service_tier="priority")
    t.join(120)
    assert pri.service_tier == "priority"
    assert _preemptions(one_slot) == before + 1
    # the priority request finished while the victim was paused: the victim ends later
    assert assert_same_or_near_tie(alone.choices[0].logprobs.content, result["lps"]), \
        "preemption changed the output at a near-tie"
    assert result["text"] == alone.choices[0].message.content


def _metric(server: Server, name: str) -> float:
    text = httpx.get(server.base + "/metrics", timeout=10).text
    return float(re.search(rf"^{name}(?:_total)?(?:\{{[^}}]*\}})? (\S+)$", text, re.M).group(1))


def test_priority_arrival_stops_the_step_in_flight_and_changes_no_output(one_slot):
    """A priority request stops the lower-tier decode in flight (llama.cpp's abort
    callback) instead of waiting for it; the stopped step is redone, so the lower-tier
    answer is the one it gives alone."""
    one_slot.wait_idle()
    client = one_slot.client()
    ask = dict(model=MODEL, messages=_msgs("List ten animals, one per line, with a fact."),
               max_tokens=160, temperature=0, logit_bias=NO_EOS)
    alone = client.chat.completions.create(**ask)
    before = _metric(one_slot, "golive_aborted_steps")
    started = threading.Event()
    result: dict = {}

    def background() -> None:
        text = ""
        for ch in client.chat.completions.create(stream=True, **ask):
            if ch.choices and ch.choices[0].delta.content:
                text += ch.choices[0].delta.content
                started.set()
        result["text"] = text

    t = threading.Thread(target=background)
    t.start()
    assert started.wait(60)
    for i in range(4):  # several arrivals: one may land between two steps
        r = client.chat.completions.create(model=MODEL, messages=_msgs(f"Say {i}."),
                                           max_tokens=2, service_tier="priority")
        assert r.service_tier == "priority"
        time.sleep(0.05)
    t.join(120)
    assert _metric(one_slot, "golive_aborted_steps") >= before + 1
    assert result["text"] == alone.choices[0].message.content


def test_default_is_served_while_flex_waits(one_slot):
    """Flex never takes a slot a default request is waiting for."""
    one_slot.wait_idle()
    started = threading.Event()
    t = _hold_the_slot(one_slot, started, n_tokens=150)
    out: dict = {}

    def flex() -> None:
        out["flex"] = one_slot.client().chat.completions.create(
            model=MODEL, messages=_msgs("hi"), max_tokens=4, service_tier="flex",
            extra_body={"queue_timeout": 120}, stream=False)
        out["flex_done"] = time.monotonic()

    def default() -> None:
        out["default"] = one_slot.client().chat.completions.create(
            model=MODEL, messages=_msgs("hi"), max_tokens=4)
        out["default_done"] = time.monotonic()

    f = threading.Thread(target=flex)
    f.start()
    time.sleep(0.5)  # flex is queued first
    d = threading.Thread(target=default)
    d.start()
    for th in (t, f, d):
        th.join(120)
    assert out["flex"].service_tier == "flex"
    assert out["default_done"] < out["flex_done"]


def test_priority_ramp_protection_serves_default(ramp):
    client = ramp.client()
    first = client.chat.completions.create(model=MODEL, messages=_msgs("Count to ten."),
                                           max_tokens=40, service_tier="priority")
    assert first.service_tier == "priority"
    # past 30 priority tokens per minute, priority requests are served (and echo) default
    second = client.chat.completions.create(model=MODEL, messages=_msgs("hi"), max_tokens=4,
                                            service_tier="priority")
    assert second.service_tier == "default"


def _prices() -> dict:
    raw = tomllib.loads(resources.files("golive.observe").joinpath("prices.toml").read_text())
    return raw


def test_request_log_rows_carry_tokens_tiers_and_cost(server, client):
    system = {"role": "system", "content": "You are a terse assistant. " * 40}
    msgs = [system, {"role": "user", "content": "Name a colour."}]
    client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=6)  # warm the cache
    r = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=msgs, max_tokens=6, service_tier="priority", user="alice")
    resp = r.parse()
    u = resp.usage
    assert u.prompt_tokens_details.cached_tokens > 0
    raw = _prices()
    p = raw["models"][MODEL]
    mult = raw["tiers"]["priority"]
    want = ((u.prompt_tokens - u.prompt_tokens_details.cached_tokens) * p["input"]
            + u.prompt_tokens_details.cached_tokens * p["cached_input"]
            + u.completion_tokens * p["output"]) / 1e6 * mult
    assert float(r.headers["x-golive-cost-usd"]) == pytest.approx(want, rel=1e-6)

    log = RequestLog(f"sqlite:///{server.data_dir / 'requests.db'}")
    row = None
    deadline = time.monotonic() + 10
    while row is None and time.monotonic() < deadline:
        row = next((x for x in log.query(limit=50) if x.id == resp.id), None)
        time.sleep(0.1)
    log.close()
    assert row is not None, "the request is not in the log"
    assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens) == (
        u.prompt_tokens, u.prompt_tokens_details.cached_tokens, u.completion_tokens)
    assert row.tier_requested == "priority" and row.tier_served == "priority"
    assert row.cost_usd == pytest.approx(want, rel=1e-6)
    assert row.model == MODEL and row.endpoint == "/v1/chat/completions"
    assert row.finish_reason in ("stop", "length") and row.status == 200
    assert row.ttft_s is not None and 0 < row.ttft_s <= row.total_s
    assert row.client_id and "test-key" not in row.client_id  # never the key itself
    assert row.request_body is None  # bodies only with --log-bodies


def test_per_tier_metrics(server, client):
    client.chat.completions.create(model=MODEL, messages=_msgs("hi"), max_tokens=3,
                                   service_tier="flex")
    text = httpx.get(server.base + "/metrics", timeout=10).text
    assert re.search(r'golive_time_to_first_token_seconds_count\{[^}]*tier="flex"[^}]*\} [1-9]', text)
    assert re.search(r'golive_queue_depth\{model="[^"]+",tier="priority"\}', text)


@pytest.mark.parametrize("body,param", [
    ({"service_tier": "gold"}, "service_tier"),
    ({"service_tier": 3}, "service_tier"),
    ({"queue_timeout": "soon"}, "queue_timeout"),
    ({"queue_timeout": -1}, "queue_timeout"),
])
def test_bad_tier_or_override_gets_400(server, body, param):
    r = httpx.post(server.base + "/v1/chat/completions", timeout=30, json={
        "model": MODEL, "messages": _msgs("hi"), "max_tokens": 2, **body})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param
