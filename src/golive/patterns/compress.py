"""Use fewer input tokens: clean HTML, prune and dedupe retrieved chunks, trim history.

Every function returns a `Compressed` result that says how many tokens went
in and how many came out, counted with the model's real tokenizer (see
`golive.patterns.tokens`), so the saving is a measurement, not a guess.

    from golive.patterns import compress

    page = compress.html_to_text(raw_html)                   # boilerplate gone
    kept = compress.prune_chunks(chunks, question, budget=300)  # most relevant first
    kept = compress.dedupe_chunks(kept.value)                # near-duplicates gone
    hist = compress.trim_history(messages, budget=1500)      # system + latest turns
    print(page.tokens_before, "->", page.tokens_after)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from golive.patterns.tokens import Message, Tokenizer, as_tokenizer, count, count_chat

T = TypeVar("T")
# (query, chunks) -> one relevance score per chunk, higher is more relevant
Scorer = Callable[[str, Sequence[str]], Sequence[float]]


@dataclass(slots=True)
class Compressed(Generic[T]):
    value: T
    tokens_before: int
    tokens_after: int
    # indices of the input items that were dropped (chunks, messages)
    dropped: list[int] = field(default_factory=list)
    # per-item relevance scores, where a scorer was used
    scores: list[float] | None = None

    @property
    def saved_tokens(self) -> int:
        return self.tokens_before - self.tokens_after

    @property
    def ratio(self) -> float:
        """tokens_after / tokens_before (1.0 for empty input)."""
        return self.tokens_after / self.tokens_before if self.tokens_before else 1.0


# ---- HTML -------------------------------------------------------------------------


def html_to_text(html: str, tokenizer: Tokenizer | Callable[[str], Any] | None = None, *,
                 include_tables: bool = True, include_links: bool = False,
                 url: str | None = None) -> Compressed[str]:
    """The main text of an HTML page (navigation, ads, footers, scripts removed).

    trafilatura finds the main content; pages too small or odd for its
    heuristics fall back to its plain HTML-to-text cleaner. tokens_before counts
    the raw HTML, which is what would otherwise have gone into the prompt.
    """
    import trafilatura

    tok = as_tokenizer(tokenizer)
    text = trafilatura.extract(html, url=url, include_comments=False,
                               include_tables=include_tables, include_links=include_links,
                               favor_recall=True, deduplicate=True)
    if not text:
        text = trafilatura.html2txt(html) or ""
    return Compressed(text, count(tok, html), count(tok, text))


# ---- retrieved chunks ----------------------------------------------------------------


def bm25_scores(query: str, chunks: Sequence[str]) -> list[float]:
    """Lexical relevance of each chunk to the query (BM25 over the chunks themselves)."""
    import bm25s

    if not chunks:
        return []
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(chunks), stopwords="en", show_progress=False),
                    show_progress=False)
    q = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
    if not q:
        return [0.0] * len(chunks)
    return [float(s) for s in retriever.get_scores(q)]


def prune_chunks(chunks: Sequence[str], query: str, budget: int,
                 tokenizer: Tokenizer | Callable[[str], Any] | None = None, *,
                 scorer: Scorer = bm25_scores, min_score: float = 0.0,
                 keep_order: bool = True) -> Compressed[list[str]]:
    """The most relevant chunks that fit in `budget` tokens.

    Chunks are taken by descending relevance while they fit; chunks scoring
    `min_score` or less (no overlap with the query at all) are never taken. The
    result keeps the chunks' original order (`keep_order`), which reads better
    than relevance order for documents split into consecutive chunks.
    """
    if budget < 0:
        raise ValueError("budget must be >= 0 tokens")
    tok = as_tokenizer(tokenizer)
    sizes = [count(tok, c) for c in chunks]
    scores = list(scorer(query, chunks))
    if len(scores) != len(chunks):
        raise ValueError(f"scorer returned {len(scores)} scores for {len(chunks)} chunks")
    ranked = sorted(range(len(chunks)), key=lambda i: (-scores[i], i))
    taken: list[int] = []
    used = 0
    for i in ranked:
        if scores[i] <= min_score:
            break
        if used + sizes[i] <= budget:
            taken.append(i)
            used += sizes[i]
    if keep_order:
        taken.sort()
    kept = set(taken)
    return Compressed([chunks[i] for i in taken], sum(sizes), used,
                      dropped=[i for i in range(len(chunks)) if i not in kept], scores=scores)


def dedupe_chunks(chunks: Sequence[str], tokenizer: Tokenizer | Callable[[str], Any] | None = None,
                  *, threshold: float = 0.7, shingle_words: int = 3,
                  num_perm: int = 128) -> Compressed[list[str]]:
    """Drop chunks that are near-duplicates of an earlier chunk.

    Near-duplicate = estimated Jaccard similarity of word shingles >= threshold
    (MinHash LSH, so it scales to many chunks); the first occurrence is kept.
    """
    from datasketch import MinHash, MinHashLSH

    tok = as_tokenizer(tokenizer)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: list[int] = []
    dropped: list[int] = []
    for i, chunk in enumerate(chunks):
        m = MinHash(num_perm=num_perm, seed=1)
        for s in _shingles(chunk, shingle_words):
            m.update(s.encode())
        if lsh.query(m):
            dropped.append(i)
            continue
        lsh.insert(str(i), m)
        kept.append(i)
    sizes = [count(tok, c) for c in chunks]
    return Compressed([chunks[i] for i in kept], sum(sizes), sum(sizes[i] for i in kept),
                      dropped=dropped)


def _shingles(text: str, k: int) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) <= k:
        return {" ".join(words)}
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


# ---- conversation history -------------------------------------------------------------


def trim_history(messages: Sequence[Message], budget: int,
                 tokenizer: Tokenizer | Callable[[str], Any] | None = None, *,
                 keep_last: int = 1) -> Compressed[list[Message]]:
    """System messages plus the latest turns that fit in `budget` prompt tokens.

    Tokens are counted on the rendered conversation (the model's chat template
    when the tokenizer knows it), so the figures match the server's
    `usage.prompt_tokens`. The last `keep_last` messages are always kept, even
    over budget: dropping the question itself would change the task. The kept
    window starts at a user turn where it can, so it never opens with an
    answer (or a tool result) whose question was dropped.
    """
    tok = as_tokenizer(tokenizer)
    system = [m for m in messages if m.get("role") in ("system", "developer")]
    rest = [(i, m) for i, m in enumerate(messages) if m.get("role") not in ("system", "developer")]
    base = count_chat(tok, system)
    kept: list[tuple[int, Message]] = []
    used = base
    for n, (i, m) in enumerate(reversed(rest)):
        cost = count_chat(tok, [*system, m]) - base
        if n >= keep_last and used + cost > budget:
            break
        kept.append((i, m))
        used += cost
    kept.reverse()
    while len(kept) > keep_last and kept[0][1].get("role") != "user":
        kept.pop(0)
    keep_idx = {i for i, _ in kept} | {i for i, m in enumerate(messages)
                                       if m.get("role") in ("system", "developer")}
    out = [m for i, m in enumerate(messages) if i in keep_idx]
    return Compressed(out, count_chat(tok, messages), count_chat(tok, out),
                      dropped=[i for i in range(len(messages)) if i not in keep_idx])
