"""golive.patterns.compress on fixtures: fewer tokens, and the answer survives.

Tokens are counted with the embedded model's real tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golive.patterns import compress
from golive.patterns.tokens import CallableTokenizer, count_chat, model_tokenizer

FIX = Path(__file__).parent / "fixtures" / "patterns"


@pytest.fixture(scope="module")
def tok():
    return model_tokenizer()


def test_html_to_text_keeps_the_article_and_drops_the_boilerplate(tok):
    html = (FIX / "article.html").read_text()
    r = compress.html_to_text(html, tok)
    assert r.tokens_before == len(tok.encode(html))
    assert r.tokens_after == len(tok.encode(r.value))
    assert r.tokens_after < r.tokens_before * 0.4
    assert "The Varnholt bridge was completed in 1887" in r.value
    assert "Margit Ellison" in r.value
    for junk in ("cookies", "Advertisement", "Privacy policy", "gtag", "font-family", "Subscribe"):
        assert junk not in r.value


def test_prune_chunks_fits_the_budget_and_keeps_the_answer(tok):
    fx = json.loads((FIX / "chunks.json").read_text())
    chunks = fx["chunks"]
    budget = 60
    r = compress.prune_chunks(chunks, fx["question"], budget, tok)
    assert r.tokens_before == sum(len(tok.encode(c)) for c in chunks)
    assert r.tokens_after == sum(len(tok.encode(c)) for c in r.value) <= budget
    assert chunks[fx["answer_chunk"]] in r.value
    assert max(range(len(chunks)), key=lambda i: r.scores[i]) == fx["answer_chunk"]
    # original order is kept, and dropped + kept partition the input
    kept_idx = [chunks.index(c) for c in r.value]
    assert kept_idx == sorted(kept_idx)
    assert sorted(kept_idx + r.dropped) == list(range(len(chunks)))
    # a zero budget keeps nothing; irrelevant chunks are never taken even with room
    assert compress.prune_chunks(chunks, fx["question"], 0, tok).value == []
    roomy = compress.prune_chunks(chunks, fx["question"], 10_000, tok)
    assert chunks[13] not in roomy.value  # the Oskerby sheep-fair chunk shares no query term
    with pytest.raises(ValueError, match="budget"):
        compress.prune_chunks(chunks, fx["question"], -1, tok)


def test_prune_chunks_takes_any_scorer(tok):
    chunks = ["alpha beta", "gamma", "delta epsilon zeta"]
    r = compress.prune_chunks(chunks, "q", 100, tok, scorer=lambda q, cs: [0.0, 2.0, 1.0])
    assert r.value == ["gamma", "delta epsilon zeta"] and r.dropped == [0]
    with pytest.raises(ValueError, match="scores"):
        compress.prune_chunks(chunks, "q", 100, tok, scorer=lambda q, cs: [1.0])


def test_dedupe_chunks_removes_near_duplicates_only(tok):
    fx = json.loads((FIX / "near_duplicates.json").read_text())
    chunks = fx["chunks"]
    r = compress.dedupe_chunks(chunks, tok)
    assert r.value == [chunks[i] for i in fx["unique"]]
    assert r.tokens_after < r.tokens_before
    assert r.tokens_after == sum(len(tok.encode(c)) for c in r.value)
    distinct = json.loads((FIX / "chunks.json").read_text())["chunks"]
    assert compress.dedupe_chunks(distinct, tok).dropped == []


def test_trim_history_keeps_system_and_latest_turns_within_budget(tok):
    conv = json.loads((FIX / "conversation.json").read_text())
    budget = 300
    r = compress.trim_history(conv, budget, tok)
    assert r.tokens_before == count_chat(tok, conv)
    assert r.tokens_after == count_chat(tok, r.value) <= budget
    assert r.tokens_after < r.tokens_before / 2
    assert r.value[0] == conv[0]  # the system prompt
    assert r.value[-1] == conv[-1]  # the question being asked
    assert "Varnholt bridge" in r.value[-1]["content"]
    assert r.value[1]["role"] == "user"  # the window opens on a user turn
    kept_rest = r.value[1:]
    assert kept_rest == conv[len(conv) - len(kept_rest):]  # the latest turns, contiguous
    # over a tiny budget the question itself is still kept
    tiny = compress.trim_history(conv, 5, tok)
    assert tiny.value == [conv[0], conv[-1]]


def test_a_caller_supplied_tokenizer_is_used():
    words = CallableTokenizer(lambda text: len(text.split()))  # a counting callable
    r = compress.prune_chunks(["one two three", "four five"], "three", 3, words)
    assert (r.tokens_before, r.tokens_after, r.value) == (5, 3, ["one two three"])
