"""Predicted outputs: same output with or without a prediction, OpenAI's counts, 400s."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from conftest import MODEL
from golive.engine.model import Model, default_model_path
from golive.engine.sampling import Sampler
from golive.engine.types import SamplingParams

PROMPTS = [
    "List the planets of the solar system, one per line, with one fact each.",
    "Write a Python function that returns the factorial of n, with a docstring.",
    "Give five tips for writing clear emails, as a numbered list.",
    "Describe the water cycle in four short sentences.",
    "Write a short shopping list for a pancake breakfast, one item per line.",
]
UNRELATED = ("The old lighthouse keeper counted ships every evening and wrote their names "
             "in a leather book that smelled of salt and rain.")
MAX_TOKENS = 64


@pytest.fixture(scope="module")
def tok():
    model = Model(default_model_path())
    return lambda text: model.tokenize(text, add_special=False, parse_special=False)


def _msgs(p: str) -> list[dict]:
    return [{"role": "user", "content": p}]


def _draft_counters(server) -> tuple[float, float]:
    text = httpx.get(server.base + "/metrics", timeout=10).text
    get = lambda name: float(re.search(rf"^{name}(?:_total)?(?:\{{[^}}]*\}})? (\S+)$", text, re.M).group(1))  # noqa: E731
    return get("golive_draft_tokens_proposed"), get("golive_draft_tokens_accepted")


def _edits(ref: str) -> dict[str, str]:
    lines = ref.splitlines(keepends=True)
    mid = len(lines) // 2
    words = ref.split(" ")
    w = len(words) // 2
    return {
        "exact": ref,
        "middle line removed": "".join(lines[:mid] + lines[mid + 1:]) if len(lines) > 2 else ref[: len(ref) // 2],
        "line inserted": "".join(lines[:mid] + ["This line is not in the answer at all.\n"] + lines[mid:]),
        "word changed": " ".join(words[:w] + ["zebra"] + words[w + 1:]),
        "first half only": ref[: len(ref) // 2],
        "unrelated": UNRELATED,
        "empty": "",
    }


def _near_tie_at_parting(ref_lp, ref_text: str, other: str, gap: float = 0.1) -> float:
    """The reference's top-2 logit gap where `other` parts from it (the token holding the
    first differing character, or the one before it when a shorter token was chosen)."""
    c = next((i for i, (a, b) in enumerate(zip(ref_text, other)) if a != b),
             min(len(ref_text), len(other)))
    pos, gaps = 0, []
    for item in ref_lp:
        end = pos + len(item.token)
        d = item.top_logprobs[0].logprob - item.top_logprobs[1].logprob
        gaps.append((pos, end, d))
        if end > c:
            break
        pos = end
    near = [d for (s, e, d) in gaps[-2:]]
    return min(near)


def test_output_with_prediction_equals_output_without(exact):
    server = exact
    """The property: at temperature 0 a prediction, right or wrong, changes nothing
    but speed; partings only at numerical near-ties, and rare."""
    server.wait_idle()
    # One request at a time, each prediction run right after its own reference run:
    # concurrent runs, or a KV cache that grew between the two, would add
    # numerical noise of their own on top of the draft rows this test is about.
    client = server.client()
    ref_kw = dict(model=MODEL, max_tokens=MAX_TOKENS, temperature=0, logprobs=True,
                  top_logprobs=2)
    cases, outs = [], []
    for p in PROMPTS:
        first = client.chat.completions.create(messages=_msgs(p), **ref_kw)
        for name, pred in _edits(first.choices[0].message.content).items():
            r = client.chat.completions.create(messages=_msgs(p), **ref_kw)
            cases.append((p, r, name, pred))
            outs.append(client.chat.completions.create(
                model=MODEL, messages=_msgs(p), max_tokens=MAX_TOKENS, temperature=0,
                prediction={"type": "content", "content": pred}))
    partings = []
    for (p, r, name, pred), out in zip(cases, outs):
        ref_text = r.choices[0].message.content
        got = out.choices[0].message.content
        u = out.usage.completion_tokens_details
        if pred:
            assert u.accepted_prediction_tokens + u.rejected_prediction_tokens > 0
        else:
            assert u.accepted_prediction_tokens == u.rejected_prediction_tokens == 0
        if got != ref_text:
            d = _near_tie_at_parting(r.choices[0].logprobs.content, ref_text, got)
            assert d <= 0.1, f"{p!r} / {name}: parted where the top-2 gap was {d:.3f}"
            partings.append((p, name))
    assert len(cases) == len(PROMPTS) * 7 and len(outs) == len(cases)
    # near-ties are rare: most cases must match token for token
    assert len(partings) <= max(2, len(cases) // 8), partings


def _ref(client, prompt: str, **kw):
    kw.setdefault("max_tokens", MAX_TOKENS)
    return client.chat.completions.create(model=MODEL, messages=_msgs(prompt), temperature=0,
                                          **kw)


def test_counts_full_match_and_speculation_happens(exact, tok):
    server, client = exact, exact.client()
    server.wait_idle()
    prompt = PROMPTS[0]
    ref = _ref(client, prompt).choices[0].message.content
    n = len(tok(ref))
    before = _draft_counters(server)
    out = _ref(client, prompt, prediction={"type": "content", "content": ref})
    after = _draft_counters(server)
    assert out.choices[0].message.content == ref
    u = out.usage.completion_tokens_details
    assert (u.accepted_prediction_tokens, u.rejected_prediction_tokens) == (n, 0)
    # the prediction was really used as a draft: most tokens came from verified drafts
    assert after[1] - before[1] >= 0.8 * n


def _split_at_line(tok, text: str) -> tuple[str, str]:
    """A cut after a newline where tokenizing the halves equals tokenizing the whole."""
    lines = text.splitlines(keepends=True)
    for i in range(len(lines) // 2, len(lines)):
        a, b = "".join(lines[:i]), "".join(lines[i:])
        if a and b and not b.startswith("\n") and tok(a) + tok(b) == tok(text):
            return a, b
    pytest.fail(f"no clean cut in {text!r}")


def test_counts_insertion_in_the_middle(exact, tok):
    client = exact.client()
    # The answer holds a block the prediction lacks: every prediction token appears.
    prompt = PROMPTS[4]
    ref = _ref(client, prompt).choices[0].message.content
    a, b = _split_at_line(tok, ref)
    lines_b = b.splitlines(keepends=True)
    pred = a + "".join(lines_b[1:])  # drop one line of the answer from the prediction
    assert tok(pred) == tok(a) + tok("".join(lines_b[1:]))
    out = _ref(client, prompt, prediction={"type": "content", "content": pred})
    assert out.choices[0].message.content == ref
    u = out.usage.completion_tokens_details
    assert (u.accepted_prediction_tokens, u.rejected_prediction_tokens) == (len(tok(pred)), 0)


def test_counts_deletion(exact, tok):
    client = exact.client()
    # The prediction holds a block the answer lacks: exactly those tokens are rejected.
    prompt = PROMPTS[4]
    ref = _ref(client, prompt).choices[0].message.content
    a, b = _split_at_line(tok, ref)
    extra = "Also buy a bag of purple marbles.\n"
    pred = a + extra + b
    assert tok(pred) == tok(a) + tok(extra) + tok(b)
    out = _ref(client, prompt, prediction={"type": "content", "content": pred})
    assert out.choices[0].message.content == ref
    u = out.usage.completion_tokens_details
    assert u.rejected_prediction_tokens == len(tok(extra))
    assert u.accepted_prediction_tokens == len(tok(a)) + len(tok(b))


def test_counts_unrelated_prediction(exact, tok):
    client = exact.client()
    prompt = PROMPTS[3]
    ref = _ref(client, prompt).choices[0].message.content
    out = _ref(client, prompt, prediction={"type": "content", "content": UNRELATED})
    assert out.choices[0].message.content == ref
    u = out.usage.completion_tokens_details
    n = len(tok(UNRELATED))
    assert u.accepted_prediction_tokens + u.rejected_prediction_tokens == n
    assert u.accepted_prediction_tokens <= n // 4  # a few common words may line up, no more
    # rejected tokens are billed as output: the cost header says more than without
    plain = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=_msgs(prompt), temperature=0, max_tokens=MAX_TOKENS)
    pred = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=_msgs(prompt), temperature=0, max_tokens=MAX_TOKENS,
        prediction={"type": "content", "content": UNRELATED})
    assert float(pred.headers["x-golive-cost-usd"]) > float(plain.headers["x-golive-cost-usd"])


def test_prediction_with_stream_stop_max_tokens_and_tier(exact):
    client = exact.client()
    prompt = PROMPTS[2]
    ref = _ref(client, prompt).choices[0].message.content
    pred = {"type": "content", "content": ref}
    # streaming gives the same text, and the counts in the usage chunk
    stream = client.chat.completions.create(
        model=MODEL, messages=_msgs(prompt), temperature=0, max_tokens=MAX_TOKENS,
        prediction=pred, stream=True, stream_options={"include_usage": True},
        service_tier="priority")
    text, usage, tiers = "", None, set()
    for ch in stream:
        tiers.add(ch.service_tier)
        if ch.choices and ch.choices[0].delta.content:
            text += ch.choices[0].delta.content
        if ch.usage:
            usage = ch.usage
    assert text == ref
    assert tiers == {"priority"}
    assert usage.completion_tokens_details.accepted_prediction_tokens > 0
    # max_tokens cuts a run of accepted drafts exactly
    short = _ref(client, prompt, prediction=pred, max_tokens=7)
    # completion_tokens counts the rejected prediction tokens too (OpenAI bills them)
    rejected = short.usage.completion_tokens_details.rejected_prediction_tokens
    assert short.usage.completion_tokens - rejected == 7
    assert short.choices[0].finish_reason == "length"
    assert ref.startswith(short.choices[0].message.content)
    # a stop string inside the predicted text ends the output before it
    words = [w for w in re.findall(r"[A-Za-z]{5,}", ref)]
    stop = words[len(words) // 2]
    cut = _ref(client, prompt, prediction=pred, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == ref[: ref.index(stop)]


def test_prediction_at_temperature_above_zero_keeps_the_seeded_output(exact, tok):
    client = exact.client()
    """Verification draws one uniform per token, as plain sampling does, and keeps a
    draft token only when that draw picks it: a seeded request says the same thing
    with or without a prediction, only faster."""
    prompt = PROMPTS[1]
    kw = dict(model=MODEL, messages=_msgs(prompt), temperature=0.8, seed=3,
              max_tokens=MAX_TOKENS)
    plain = client.chat.completions.create(**kw).choices[0].message.content
    again = client.chat.completions.create(**kw).choices[0].message.content
    assert again == plain
    out = client.chat.completions.create(prediction={"type": "content", "content": plain}, **kw)
    assert out.choices[0].message.content == plain
    u = out.usage.completion_tokens_details
    assert (u.accepted_prediction_tokens, u.rejected_prediction_tokens) == (len(tok(plain)), 0)


BAD = [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"prediction": {"type": "text", "content": "x"}}, "prediction.type"),
    ({"prediction": {"type": "content"}}, "prediction.content"),
    ({"prediction": "just a string"}, "prediction"),
]


@pytest.mark.parametrize("extra,param", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_prediction_bad_combinations_get_400(server, extra, param):
    body = {"model": MODEL, "messages": _msgs("hi"), "max_tokens": 4,
            "prediction": {"type": "content", "content": "hello"}, **extra}
    r = httpx.post(server.base + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_sampling_follows_the_distribution():
    """Pure logic: the inverse-CDF pick the verifier compares drafts against is a
    faithful sample of softmax(logits / T)."""
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    n = 40000
    s = Sampler(SamplingParams(temperature=1.0, seed=1))
    freq = np.bincount([s.choose(logits) for _ in range(n)], minlength=4) / n
    assert np.abs(freq - np.array([0.5, 0.3, 0.15, 0.05])).max() < 0.015
    # the same seed, the same stream
    a = Sampler(SamplingParams(temperature=1.0, seed=9))
    b = Sampler(SamplingParams(temperature=1.0, seed=9))
    assert [a.choose(logits) for _ in range(50)] == [b.choose(logits) for _ in range(50)]
