"""Draft sources for draft-free speculative decoding: predictions and prompt lookup.

A drafter proposes the next few tokens of a sequence; the engine verifies
them in the same decode as the sequence's own next token and keeps the
longest agreeing prefix. Drafts never change what is generated (the
verification rule sees to that), only how many tokens one decode yields, so
a drafter may guess freely; it only has to guess cheaply and well.
"""

from __future__ import annotations

import difflib
from collections import defaultdict


PREDICTION_MAX_K = 63


class AdaptiveK:
    """Draft length that follows the acceptance: grow while drafts are taken
    whole; when they are not, shrink to just past what was accepted, or with
    `halve` only by half, and not at all when most of the draft was taken (a
    prediction that missed once, at an edit, is usually right again just after
    it)."""

    def __init__(self, start: int, lo: int, hi: int, halve: bool = False):
        self.k, self.lo, self.hi, self.halve = start, lo, hi, halve

    def update(self, proposed: int, accepted: int) -> None:
        if proposed == 0:
            return
        if accepted == proposed:
            self.k = min(self.hi, self.k * 2)
        elif self.halve:
            # a miss after most of the draft was taken is an isolated flip: keep k
            if accepted * 2 < proposed:
                self.k = max(self.lo, self.k // 2)
        else:
            self.k = max(self.lo, min(self.hi, accepted + 2))


class _NgramIndex:
    """Positions of every n-gram (n = 1..max_n) of a growing token list."""

    def __init__(self, max_n: int):
        self.max_n = max_n
        self.tokens: list[int] = []
        self.where: dict[tuple[int, ...], list[int]] = defaultdict(list)

    def extend(self, tokens: list[int]) -> None:
        for t in tokens:
            self.tokens.append(t)
            end = len(self.tokens)
            for n in range(1, self.max_n + 1):
                if end >= n:
                    # position just after the n-gram: where its continuation starts
                    self.where[tuple(self.tokens[end - n:end])].append(end)


class PredictionDrafter:
    """Drafts from the caller's predicted output, re-aligning after edits.

    `ptr` is where the output currently stands in the prediction. While the
    model agrees, drafts are the next k prediction tokens. After a
    divergence (an insertion, a deletion, a changed word) the last few
    output tokens are looked up in the prediction, so the text after the
    edit is drafted again.
    """

    ALIGN_N = (6, 4, 3, 2)

    def __init__(self, prediction: list[int]):
        self.prediction = prediction
        self.ptr: int | None = 0
        self.index = _NgramIndex(max(self.ALIGN_N))
        self.index.extend(prediction)
        # hi: a 64-token verification (63 drafts) reaches llama.cpp's large-batch CPU
        # kernels, which cost less per token than any smaller step (docs/architecture.md)
        self.k = AdaptiveK(start=8, lo=2, hi=PREDICTION_MAX_K, halve=True)
        self._last = 0

    def propose(self, output: list[int]) -> list[int]:
        if self.ptr is None:
            self.ptr = self._realign(output)
            if self.ptr is None:
                return []
        return self.prediction[self.ptr:self.ptr + self.k.k]

    def advance(self, emitted: list[int]) -> None:
        """Follow the output through the prediction, whoever drafted it."""
        for tok in emitted:
            if self.ptr is None:
                return
            if self.ptr < len(self.prediction) and tok == self.prediction[self.ptr]:
                self.ptr += 1
                self._last = self.ptr
            else:
                self.ptr = None  # diverged: re-align on the next proposal

    def _realign(self, output: list[int]) -> int | None:
        for n in self.ALIGN_N:
            if len(output) < n:
                continue
            ends = [e for e in self.index.where.get(tuple(output[-n:]), ())
                    if e < len(self.prediction)]
            if ends:
                # Edits move forward through a document: prefer the first match at
                # or after where the output last stood in the prediction.
                ahead = [e for e in ends if e >= self._last]
                return ahead[0] if ahead else ends[-1]
        return None


class PromptLookup:
    """Prompt-lookup decoding: if the last few output tokens occurred before,
    in the prompt or the output, propose what followed them there."""

    MIN_N, MAX_N = 2, 4

    def __init__(self, prompt: list[int]):
        self.index = _NgramIndex(self.MAX_N)
        self.index.extend(prompt)
        self.k = AdaptiveK(start=4, lo=2, hi=8)
        self.tries = 0
        self.hits = 0
        self.cooldown = 0

    def sync(self, tokens: list[int]) -> None:
        """Index tokens appended since the last call (tokens = prompt + output)."""
        if len(tokens) > len(self.index.tokens):
            self.index.extend(tokens[len(self.index.tokens):])

    def propose(self, tokens: list[int]) -> list[int]:
        if self.cooldown > 0:
            self.cooldown -= 1
            return []
        self.sync(tokens)
        n_all = len(tokens)
        for n in range(self.MAX_N, self.MIN_N - 1, -1):
            if n_all <= n:
                continue
            ends = self.index.where.get(tuple(tokens[-n:]))
            if not ends:
                continue
            # the latest earlier occurrence (not the suffix itself)
            for e in reversed(ends):
                if e < n_all:
                    draft = tokens[e:e + self.k.k]
                    if draft:
                        return draft
        return []

    def feedback(self, proposed: int, accepted: int) -> None:
        self.k.update(proposed, accepted)
        self.tries += proposed
        self.hits += accepted
        # Where lookups keep missing (ordinary chat), stop paying for them for a while.
        if self.tries >= 12 and self.hits < 0.25 * self.tries:
            self.cooldown = 16
            self.tries = self.hits = 0


def prediction_counts(prediction: list[int], output: list[int]) -> tuple[int, int]:
    """OpenAI's accepted/rejected prediction tokens: prediction tokens that
    appear in the completion (in order), and those that do not."""
    if not prediction:
        return 0, 0
    sm = difflib.SequenceMatcher(None, prediction, output, autojunk=False)
    accepted = sum(b.size for b in sm.get_matching_blocks())
    return accepted, len(prediction) - accepted
