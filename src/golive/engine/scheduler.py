"""Which waiting sequences run next, and which running one gives way.

Pure bookkeeping over Sequence objects, no llama.cpp: the engine asks it
what to admit and whom to preempt, and does the KV work itself.

Policy:
- waiting queues per tier, admitted in the order priority, default, flex, batch;
- a priority sequence that finds every slot busy preempts the lowest-tier,
  most recently admitted running sequence (never another priority one);
  default and flex may preempt batch lines;
- default is not starved by priority: while both wait, every
  `default_every`-th admission goes to default;
- flex and batch run only in capacity nobody above them wants; flex waits
  at most its queue budget and is then refused.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Callable

from golive.engine.sequence import Sequence, Status
from golive.engine.types import Tier


class Scheduler:
    def __init__(self, slots: int, default_every: int = 4, flex_reserve: int = 0):
        self.slots = slots
        self.default_every = max(1, default_every)
        self.flex_reserve = flex_reserve
        self.waiting: dict[Tier, deque[Sequence]] = {t: deque() for t in Tier}
        self.running: list[Sequence] = []
        self._since_default = 0
        self._order = itertools.count()

    # ---- queues ----------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting[seq.tier].append(seq)

    def requeue_front(self, seq: Sequence) -> None:
        """A preempted sequence goes back first in its tier, so it resumes soon."""
        seq.status = Status.WAITING
        self.running.remove(seq)
        self.waiting[seq.tier].appendleft(seq)

    def remove(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        else:
            q = self.waiting[seq.tier]
            if seq in q:
                q.remove(seq)

    def depth(self, tier: Tier | None = None) -> int:
        if tier is None:
            return sum(len(q) for q in self.waiting.values())
        return len(self.waiting[tier])

    def has_work(self) -> bool:
        return bool(self.running) or any(self.waiting.values())

    def expired(self, now: float) -> list[Sequence]:
        """Flex sequences whose queue budget ran out before they could start."""
        out = []
        for seq in list(self.waiting[Tier.FLEX]):
            budget = seq.group.req.queue_timeout
            if budget is not None and not seq.preempted and now - seq.enqueued_at > budget:
                self.waiting[Tier.FLEX].remove(seq)
                out.append(seq)
        return out

    # ---- admission -------------------------------------------------------

    def admit(self, ready: Callable[[Sequence], bool]) -> list[Sequence]:
        """Move sequences from waiting to running while slots are free."""
        admitted = []
        while len(self.running) < self.slots:
            seq = self._next(ready)
            if seq is None:
                break
            self.waiting[seq.tier].remove(seq)
            seq.status = Status.RUNNING
            seq.admitted_seq = next(self._order)
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def _next(self, ready: Callable[[Sequence], bool]) -> Sequence | None:
        pri = _first(self.waiting[Tier.PRIORITY], ready)
        dflt = _first(self.waiting[Tier.DEFAULT], ready)
        if pri is not None:
            # The default share is for new defaults: re-admitting one that priority
            # just preempted would only undo that preemption.
            dflt = _first(self.waiting[Tier.DEFAULT], lambda s: ready(s) and not s.preempted)
        if pri is not None and dflt is not None and self._since_default + 1 >= self.default_every:
            self._since_default = 0
            return dflt
        if pri is not None:
            if dflt is not None:
                self._since_default += 1
            return pri
        if dflt is not None:
            self._since_default = 0
            return dflt
        if self.waiting[Tier.PRIORITY] or self.waiting[Tier.DEFAULT]:
            return None  # higher tiers are waiting on siblings; don't let flex jump in
        free = self.slots - len(self.running)
        if free > self.flex_reserve:
            for tier in (Tier.FLEX, Tier.BATCH):
                seq = _first(self.waiting[tier], ready)
                if seq is not None:
                    return seq
        return None

    def victims(self, ready: Callable[[Sequence], bool]) -> list[Sequence]:
        """Running sequences to push out so that waiting higher tiers can start.

        Priority may push out any lower tier; default and flex may push out
        batch lines (batches only ever use capacity nobody else wants). One
        victim per waiting sequence that finds no free slot, lowest tier and
        most recently admitted first, so that several priority arrivals all
        start in the same step.
        """
        free = self.slots - len(self.running)
        out: list[Sequence] = []
        taken: set[int] = set()
        for tier, below in ((Tier.PRIORITY, Tier.PRIORITY), (Tier.DEFAULT, Tier.FLEX),
                            (Tier.FLEX, Tier.FLEX)):
            for seq in self.waiting[tier]:
                if not ready(seq):
                    continue
                if free > 0:
                    free -= 1
                    continue
                cands = [s for s in self.running if s.tier > below and id(s) not in taken]
                if not cands:
                    break
                v = max(cands, key=lambda s: (s.tier, s.admitted_seq))
                taken.add(id(v))
                out.append(v)
        return out


def _first(q: deque[Sequence], ready: Callable[[Sequence], bool]) -> Sequence | None:
    for seq in q:
        if ready(seq):
            return seq
    return None
