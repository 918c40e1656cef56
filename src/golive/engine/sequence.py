"""One choice of one request as it moves through the engine.

Prefill, decode, and resume after preemption are the same thing here: the
sequence owns `tokens` (prompt + generated) and `n_computed` (how many of
them have KV in its llama.cpp sequence). Each step feeds the next slice of
the uncomputed tail; when the slice reaches the end, its logits give the next
token.
"""

from __future__ import annotations

import enum
import time
from typing import Callable

from golive.engine.sampling import Sampler
from golive.engine.textstream import TextStream
from golive.engine.types import Event, GenerationRequest, Tier


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Group:
    """The n choices of one request share its sink and its final accounting."""

    def __init__(self, req: GenerationRequest, sink: Callable[[Event], None], max_new: int):
        self.req = req
        self.sink = sink
        self.max_new = max_new
        self.tier = req.tier
        self.seqs: list[Sequence] = []
        self.open = req.n
        self.cached_tokens: int | None = None  # reported once, from the first admission
        self.admitted_at: float | None = None
        self.first_token_at: float | None = None
        self.failed = False


class Sequence:
    def __init__(self, group: Group, index: int):
        req = group.req
        self.group = group
        self.index = index
        self.tokens: list[int] = list(req.prompt)
        self.n_prompt = len(req.prompt)
        self.n_computed = 0
        self.seq_id: int | None = None
        self.status = Status.WAITING
        self.sampler = Sampler(req.sampling, seed_offset=index)
        self.text = TextStream(req.stop)
        self.enqueued_at = time.monotonic()
        self.admitted_seq = 0  # admission order, to pick preemption victims
        self.preempted = False
        self.finish_reason: str | None = None
        # set by the engine: grammar state and draft sources
        self.matcher = None  # engine.grammar.Matcher
        self.predictor = None  # engine.speculation.PredictionDrafter
        self.lookup = None  # engine.speculation.PromptLookup
        self.draft_src: str | None = None  # who proposed the draft being verified

    @property
    def tier(self) -> Tier:
        return self.group.tier

    @property
    def n_generated(self) -> int:
        return len(self.tokens) - self.n_prompt

    @property
    def pending(self) -> int:
        """Tokens still to feed before the next logits."""
        return len(self.tokens) - self.n_computed

    @property
    def in_prefill(self) -> bool:
        return self.n_computed < self.n_prompt
