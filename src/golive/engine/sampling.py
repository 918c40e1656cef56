"""Token sampling from one row of logits: penalties, temperature, top_p, logprobs.

Runs once per sequence per step, so it avoids full-vocabulary sorts: top_p
works on the top candidates found with argpartition and falls back to a full
sort only when they do not hold enough probability mass.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from golive.engine.types import SamplingParams

_TOP_CANDIDATES = 512


class Sampler:
    """Per-sequence sampler; owns the sequence's random stream."""

    def __init__(self, params: SamplingParams, seed_offset: int = 0):
        self.params = params
        seed = None if params.seed is None else params.seed + seed_offset
        self.rng = np.random.default_rng(seed)
        self.counts: Counter[int] = Counter()

    @property
    def greedy(self) -> bool:
        return self.params.temperature <= 0.0

    def adjust(self, logits: np.ndarray) -> np.ndarray:
        """Logits after logit_bias and penalties (a copy when either applies)."""
        p = self.params
        if p.logit_bias:
            logits = logits.copy()
            for tok, bias in p.logit_bias.items():
                logits[tok] += bias
        if self.counts and (p.frequency_penalty or p.presence_penalty):
            if not p.logit_bias:
                logits = logits.copy()
            toks = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
            cnt = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
            logits[toks] -= cnt * p.frequency_penalty + p.presence_penalty
        return logits

    def probs(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate token ids, their probabilities) after temperature and top_p."""
        p = self.params
        scaled = logits / max(p.temperature, 1e-5)
        m = scaled.max()
        if p.top_p < 1.0:
            z = np.exp(scaled - m).sum()
            k = min(_TOP_CANDIDATES, scaled.shape[0])
            cand = np.argpartition(scaled, -k)[-k:]
            cand = cand[np.argsort(-scaled[cand])]
            w = np.exp(scaled[cand] - m)
            cum = np.cumsum(w) / z
            if cum[-1] < p.top_p:  # rare: the candidates hold too little mass
                cand = np.argsort(-scaled)
                w = np.exp(scaled[cand] - m)
                cum = np.cumsum(w) / z
            cut = int(np.searchsorted(cum, p.top_p)) + 1
            cand, w = cand[:cut], w[:cut]
            return cand, w / w.sum()
        w = np.exp(scaled - m)
        return np.arange(scaled.shape[0]), w / w.sum()

    def sample(self, logits: np.ndarray) -> int:
        return self.choose(self.adjust(logits))

    def choose(self, logits: np.ndarray) -> int:
        """Pick a token from logits already adjusted (and masked).

        Speculative verification compares this pick with the draft token. At
        temperature > 0 that is the speculative-sampling rule for a
        deterministic draft (keep it with probability p(draft), else a token
        from p without it), realised by coupling: the one uniform draw that
        picks the token also decides acceptance. So a draft never changes the
        distribution, and a seeded request gives the same text with or
        without drafts.
        """
        if self.greedy:
            return int(np.argmax(logits))
        cand, probs = self.probs(logits)
        # inverse CDF with one uniform draw per token keeps the stream reproducible
        i = int(np.searchsorted(np.cumsum(probs), self.rng.random() * probs.sum()))
        return int(cand[min(i, len(cand) - 1)])

    def record(self, token: int) -> None:
        self.counts[token] += 1


def log_softmax_at(logits: np.ndarray, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """Model log-probability of `token` and the `top` most likely tokens."""
    m = float(logits.max())
    lse = m + float(np.log(np.exp(logits - m).sum()))
    lp = float(logits[token]) - lse
    tops: list[tuple[int, float]] = []
    if top > 0:
        idx = np.argpartition(logits, -top)[-top:]
        idx = idx[np.argsort(-logits[idx])]
        tops = [(int(i), float(logits[i]) - lse) for i in idx]
    return lp, tops
