"""Serving behaviour: cache on/off equivalence, continuous batching, disconnects, bad input."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from conftest import EXACT, MODEL, Server, assert_same_or_near_tie


@pytest.fixture(scope="module")
def nocache_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("golive-nocache"), "--no-prefix-cache", "--slots", "2",
               *EXACT)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fresh_exact(tmp_path_factory):
    """A one-thread deterministic server with an empty KV cache. llama.cpp's attention
    sums over KV cells in the order they sit in the pool; on a server that has run
    other tests, a sequence's cells may sit in another order than on a fresh one, and
    the sums round differently. Both sides of the cache comparison start fresh."""
    s = Server(tmp_path_factory.mktemp("golive-fresh-exact"), "--slots", "2", *EXACT)
    yield s
    s.stop()


def _long_system() -> dict:
    rules = " ".join(f"Rule {i}: when the user says word {i}, reply with number {i * 7}."
                     for i in range(80))
    return {"role": "system", "content": "You follow these rules exactly. " + rules}


@pytest.mark.slow  # two extra one-thread servers and long prompts: ~30 s on 2 cores
def test_cached_prefix_gives_same_output_as_cache_off(fresh_exact, nocache_server):
    client = fresh_exact.client()
    system = _long_system()
    warm = [system, {"role": "user", "content": "Tell me about rule 3."}]
    ask = [system, {"role": "user", "content": "Summarise the rules in one sentence."}]
    kw = dict(model=MODEL, max_tokens=40, temperature=0, logprobs=True, top_logprobs=2)
    client.chat.completions.create(messages=warm, **kw)
    cached = client.chat.completions.create(messages=ask, **kw)
    assert cached.usage.prompt_tokens >= 1000
    assert cached.usage.prompt_tokens_details.cached_tokens >= 900
    ref = nocache_server.client().chat.completions.create(messages=ask, **kw)
    assert ref.usage.prompt_tokens_details.cached_tokens == 0
    if assert_same_or_near_tie(ref.choices[0].logprobs.content,
                               cached.choices[0].logprobs.content):
        assert cached.choices[0].message.content == ref.choices[0].message.content


def test_16_concurrent_streams_are_batched_and_none_starves(server):
    peak = {"running": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak["running"] = max(peak["running"], server.health()["running"])
            time.sleep(0.02)

    async def one(client, i: int) -> list[float]:
        stamps = []
        s = await client.chat.completions.create(
            model=MODEL, max_tokens=48, temperature=0.7, seed=i, stream=True,
            messages=[{"role": "user", "content": f"Story number {i}: tell me about a cat."}])
        async for ch in s:
            if ch.choices and ch.choices[0].delta.content:
                stamps.append(time.monotonic())
        return stamps

    async def main() -> list[list[float]]:
        client = server.aclient()
        return await asyncio.gather(*(one(client, i) for i in range(16)))

    w = threading.Thread(target=watch)
    w.start()
    try:
        results = asyncio.run(main())
    finally:
        stop.set()
        w.join()
    assert all(len(r) > 0 for r in results), "a stream got no tokens"
    first_done = min(r[-1] for r in results)
    # continuous batching: every stream has started before any stream has finished
    assert all(r[0] < first_done for r in results)
    assert peak["running"] == 16


# logit_bias bans the end-of-generation tokens, so only max_tokens could end these
NO_EOS = {"0": -100, "2": -100, "4": -100}


def test_disconnect_frees_the_slot(server):
    server.wait_idle()
    body = {"model": MODEL, "stream": True, "max_tokens": 3000, "temperature": 1.0,
            "logit_bias": NO_EOS,
            "messages": [{"role": "user", "content": "Write an endless poem."}]}
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=60) as r:
        got = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                got += 1
            if got >= 5:
                assert server.health()["running"] == 1
                break  # leaving the line iterator closes the connection
    server.wait_idle(timeout=5)  # the sequence was cancelled, not run to 3000 tokens


def test_disconnect_non_streaming_frees_the_slot(server):
    server.wait_idle()
    body = {"model": MODEL, "max_tokens": 3000, "temperature": 1.0, "logit_bias": NO_EOS,
            "messages": [{"role": "user", "content": "Write an endless poem."}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base + "/v1/chat/completions", json=body, timeout=1.0)
    server.wait_idle(timeout=5)


GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _with(**kw):
    b = dict(GOOD)
    for k, v in kw.items():
        if v is ...:
            b.pop(k)
        else:
            b[k] = v
    return b


BAD = [
    ("missing messages", _with(messages=...), "messages"),
    ("empty messages", _with(messages=[]), "messages"),
    ("messages wrong type", _with(messages="hello"), "messages"),
    ("message without role", _with(messages=[{"content": "x"}]), "messages[0].role"),
    ("unknown role", _with(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    ("temperature wrong type", _with(temperature="hot"), "temperature"),
    ("temperature out of range", _with(temperature=3.5), "temperature"),
    ("top_p out of range", _with(top_p=1.5), "top_p"),
    ("missing model", _with(model=...), "model"),
    ("n = 0", _with(n=0), "n"),
    ("negative max_tokens", _with(max_tokens=-5), "max_tokens"),
    ("too many stop strings", _with(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("top_logprobs too large", _with(logprobs=True, top_logprobs=50), "top_logprobs"),
    ("unknown service tier", _with(service_tier="gold"), "service_tier"),
    ("logit_bias key not a token id", _with(logit_bias={"hello": 5}), "logit_bias"),
    ("logit_bias value out of range", _with(logit_bias={"5": 500}), "logit_bias.5"),
    ("logit_bias token outside vocab", _with(logit_bias={"999999": 5}), "logit_bias"),
]


@pytest.mark.parametrize("name,body,param", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_400_naming_the_field(server, name, body, param):
    r = httpx.post(server.base + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param, err
    assert err["message"]


def test_malformed_json_and_too_long_prompt(server, client):
    r = httpx.post(server.base + "/v1/chat/completions", content=b'{"model": "x", "messages": [',
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]
    huge = "lorem ipsum dolor " * 4000  # > 8,192 tokens of context
    r = httpx.post(server.base + "/v1/chat/completions", timeout=60,
                   json=_with(messages=[{"role": "user", "content": huge}]))
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "messages" and err["code"] == "context_length_exceeded"
    # and the server keeps serving
    ok = client.chat.completions.create(**GOOD)
    assert ok.choices[0].message.content is not None


def test_openai_client_raises_bad_request(client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       temperature=9)
    assert e.value.body["param"] == "temperature"
