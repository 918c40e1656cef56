"""The official openai client against a real golive server on the real default model."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import MODEL, assert_same_or_near_tie

ASK = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def test_chat_basic(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=24, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content.strip()
    assert c.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 10
    assert 0 < u.completion_tokens <= 24
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens is not None
    assert r.service_tier == "default"


def test_stream_matches_openai_chunk_format(server):
    body = {"model": MODEL, "messages": ASK, "max_tokens": 16, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # usage: null on every chunk but the last, which has no choices
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    assert "cached_tokens" in chunks[-1]["usage"]["prompt_tokens_details"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "length"


def test_stream_with_client_equals_non_stream(exact):
    client = exact.client()
    kw = dict(model=MODEL, messages=ASK, max_tokens=40, temperature=0, logprobs=True,
              top_logprobs=2)
    ref = client.chat.completions.create(**kw)
    stream = client.chat.completions.create(**kw, stream=True)
    text, lps = "", []
    for ch in stream:
        if ch.choices:
            text += ch.choices[0].delta.content or ""
            if ch.choices[0].logprobs:
                lps.extend(ch.choices[0].logprobs.content)
    if assert_same_or_near_tie(ref.choices[0].logprobs.content, lps):
        assert text == ref.choices[0].message.content


def test_max_tokens_and_max_completion_tokens(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, temperature=0)
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_completion_tokens=7,
                                       temperature=0)
    assert r.usage.completion_tokens == 7 and r.choices[0].finish_reason == "length"


def test_stop_strings_cut_output_and_are_never_shown(exact):
    client = exact.client()
    kw = dict(model=MODEL, messages=ASK, max_tokens=60, temperature=0, logprobs=True,
              top_logprobs=2)
    ref = client.chat.completions.create(**kw)
    full = ref.choices[0].message.content
    words = full.split()
    assert len(words) > 8
    stop = words[6][:4]  # a stop string that likely spans token boundaries
    cut = full.index(stop)
    r = client.chat.completions.create(**kw, stop=[stop, "zzqqxx"])
    out = r.choices[0].message.content
    assert stop not in out
    if assert_same_or_near_tie(ref.choices[0].logprobs.content, r.choices[0].logprobs.content):
        assert out == full[:cut]
        assert r.choices[0].finish_reason == "stop"
    # and in a stream, where text is held back until the stop is settled
    s = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=60, temperature=0,
                                       stop=stop, stream=True)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
    assert stop not in streamed


def test_n_choices(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, n=2,
                                       temperature=1.0, seed=7)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
    assert r.usage.completion_tokens == sum(
        12 if c.finish_reason == "length" else 0 for c in r.choices) or r.usage.completion_tokens > 0
    # streamed n=2: both indexes appear and each gets its own finish chunk
    s = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, n=2,
                                       temperature=1.0, stream=True)
    finished = set()
    seen = set()
    for ch in s:
        for c in ch.choices:
            seen.add(c.index)
            if c.finish_reason:
                finished.add(c.index)
    assert seen == {0, 1} and finished == {0, 1}


def test_seed_reproducible(client):
    kw = dict(model=MODEL, messages=ASK, max_tokens=30, temperature=1.0)
    a = client.chat.completions.create(**kw, seed=1234).choices[0].message.content
    b = client.chat.completions.create(**kw, seed=1234).choices[0].message.content
    assert a == b
    others = {client.chat.completions.create(**kw, seed=s).choices[0].message.content
              for s in (1, 2, 3)}
    assert len(others | {a}) >= 2  # different seeds explore different samples


def test_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=10, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 10
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        tops = [x.logprob for x in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # greedy: the chosen token is the most likely one
        assert t.token == t.top_logprobs[0].token
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token


def test_completions_endpoint(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8,
                                  temperature=0, logprobs=2, echo=True)
    c = r.choices[0]
    assert r.object == "text_completion"
    assert c.text.startswith("The capital of France is")
    assert len(c.logprobs.tokens) == r.usage.completion_tokens
    s = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6,
                                  stream=True, temperature=0)
    assert "".join(ch.choices[0].text for ch in s if ch.choices)


def test_models_health_metrics(server, client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    assert server.health()["status"] == "ok"
    text = httpx.get(server.base + "/metrics").text
    for name in ("golive_requests_total", "golive_time_to_first_token_seconds_bucket",
                 "golive_inter_token_latency_seconds_bucket", "golive_tokens_per_second",
                 "golive_queue_depth", "golive_kv_cache_usage_ratio",
                 "golive_prefix_cache_hit_rate"):
        assert name in text, name


@pytest.mark.parametrize("n_tokens", [1000])
def test_prefix_cache_reports_cached_tokens(client, n_tokens):
    # ~1,000-token static system prompt, then different questions
    facts = " ".join(f"Fact {i}: the color of box {i} is {['red', 'blue', 'green'][i % 3]}."
                     for i in range(90))
    system = {"role": "system", "content": "You answer questions about boxes. " + facts}
    first = client.chat.completions.create(
        model=MODEL, messages=[system, {"role": "user", "content": "What color is box 4?"}],
        max_tokens=8, temperature=0)
    assert first.usage.prompt_tokens >= n_tokens
    second = client.chat.completions.create(
        model=MODEL, messages=[system, {"role": "user", "content": "What color is box 7?"}],
        max_tokens=8, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= 900
    # in a stream too
    s = client.chat.completions.create(
        model=MODEL, messages=[system, {"role": "user", "content": "What color is box 9?"}],
        max_tokens=4, temperature=0, stream=True, stream_options={"include_usage": True})
    usage = [ch.usage for ch in s if ch.usage][0]
    assert usage.prompt_tokens_details.cached_tokens >= 900
