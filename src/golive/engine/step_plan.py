"""What goes into the next decode: a pure function over plain data.

Given the running sequences (as `Slot`s: tier, tokens pending, room for a
draft) and the step's limits, `plan_step` decides who takes part (solo
priority steps), how many prefill tokens each prefilling sequence feeds
(the step budget, the priority guard, deterministic chunking), and how many
draft tokens each decoding sequence may verify. Drafts themselves come from
a `propose` callback (grammar, prediction, prompt lookup live on the
sequence), so the planner is tested without llama.cpp or a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from golive.engine.types import Tier

# From this many tokens per decode llama.cpp's CPU matmuls switch kernels.
LARGE_BATCH = 64


@dataclass(frozen=True, slots=True)
class Slot:
    """One running sequence as the planner sees it."""

    key: int  # the caller's handle (index into its running list)
    tier: Tier
    pending: int  # tokens to feed before the next logits (1 = decoding)
    in_prefill: bool
    draft_room: int = 0  # draft tokens it could still use (output and context left)


@dataclass(frozen=True, slots=True)
class Limits:
    step_tokens: int = 256  # prefill tokens per step
    draft_budget: int = 128  # draft tokens per step, over all sequences
    lookup_max_running: int = 4  # prompt lookup only while this few run
    priority_solo_steps: int = 2
    guard_prefill_tokens: int = 16
    deterministic: bool = False


@dataclass(slots=True)
class Item:
    key: int
    n: int  # tokens fed from the sequence before any draft
    draft: list[int] = field(default_factory=list)
    samples: bool = True  # the fed tokens end the pending ones: logits wanted after them


@dataclass(slots=True)
class StepPlan:
    items: list[Item]
    solo_run: int  # consecutive solo-priority steps, including this one

    @property
    def n_tokens(self) -> int:
        return sum(it.n + len(it.draft) for it in self.items)


Propose = Callable[[int, int, bool], list[int]]  # (key, max tokens, lookup allowed) -> draft


def solo_priority(slots: list[Slot], solo_run: int, limit: int) -> tuple[list[Slot], int]:
    """While a priority request prefills, run priority sequences only.

    A step's cost grows with every token in it (the CPU is compute-bound), so a
    priority prompt batched beside a full server's decodes would wait several
    times its idle prefill. Lower tiers sit out at most `limit` steps in a row,
    then share one, so a stream of priority arrivals slows them but never stops
    them. Returns the slots that take part and the new solo-run count.
    """
    prefilling = any(s.tier is Tier.PRIORITY and s.in_prefill for s in slots)
    if not prefilling or limit <= 0 or all(s.tier is Tier.PRIORITY for s in slots):
        return slots, 0
    if solo_run >= limit:
        return slots, 0
    return [s for s in slots if s.tier is Tier.PRIORITY], solo_run + 1


def prefill_chunk(pending: int, budget: int, step_tokens: int, deterministic: bool) -> int:
    """Prefill tokens to feed this step. In deterministic mode no chunk of a long
    prompt is small, and none leaves a small remainder for the next step."""
    n = min(pending, budget)
    if not deterministic or n == pending:
        return n
    if pending - n < LARGE_BATCH:
        n = pending - LARGE_BATCH
    if n >= LARGE_BATCH:
        return n
    # too little room left this step: wait for the next, unless this is all there is
    return min(pending, budget) if budget >= step_tokens else 0


def plan_step(slots: list[Slot], limits: Limits, solo_run: int, guarded: bool,
              propose: Propose) -> StepPlan:
    """The next decode. `slots` in priority order (tier, then admission); `guarded`:
    a priority request arrived lately, so lower tiers prefill in small chunks and
    draft nothing, and the step a new priority request lands in stays short."""
    taking, solo_run = solo_priority(slots, solo_run, limits.priority_solo_steps)
    budget = limits.step_tokens
    draft_budget = limits.draft_budget
    if limits.deterministic:  # keep decode-only steps below the large-batch kernels
        draft_budget = min(draft_budget, LARGE_BATCH - 1 - len(taking))
    lookup_ok = len(taking) <= limits.lookup_max_running
    low_budget = limits.guard_prefill_tokens if guarded else budget
    items: list[Item] = []
    # decoding sequences first: a stream never waits for someone's prefill
    for s in sorted(taking, key=lambda s: s.pending > 1):
        low = s.tier is not Tier.PRIORITY
        n = s.pending
        draft: list[int] = []
        if n > 1:
            n = prefill_chunk(n, min(budget, low_budget) if low else budget,
                              limits.step_tokens, limits.deterministic)
            if n <= 0:
                continue
            budget -= n
            if low:
                low_budget -= n
        elif draft_budget > 0 and not (guarded and low):
            room = min(draft_budget, s.draft_room)
            if room > 0:
                draft = propose(s.key, room, lookup_ok)[:room]
                draft_budget -= len(draft)
        items.append(Item(s.key, n, draft, samples=n == s.pending))
    return StepPlan(items, solo_run)
