"""Step planning and the KV pool: pure logic, no llama.cpp, no model."""

from __future__ import annotations

import pytest

from golive.engine.kv_pool import FILL_LIMIT, KVPool
from golive.engine.step_plan import LARGE_BATCH, Limits, Slot, plan_step, prefill_chunk, solo_priority
from golive.engine.types import Tier

P, D, F = Tier.PRIORITY, Tier.DEFAULT, Tier.FLEX


def prefilling(key: int, tier: Tier, pending: int) -> Slot:
    return Slot(key, tier, pending, in_prefill=True)


def decoding(key: int, tier: Tier, room: int = 100) -> Slot:
    return Slot(key, tier, 1, in_prefill=False, draft_room=room)


def no_drafts(key: int, limit: int, lookup_ok: bool) -> list[int]:
    return []


# ---- solo priority steps -----------------------------------------------------------


def test_priority_prefill_runs_alone_then_shares_a_step():
    slots = [prefilling(0, P, 300), decoding(1, D), decoding(2, F)]
    run = 0
    taken = []
    for _ in range(4):
        part, run = solo_priority(slots, run, limit=2)
        taken.append([s.key for s in part])
    # two steps alone, then the lower tiers' turn (never starved), then alone again
    assert taken == [[0], [0], [0, 1, 2], [0]]


def test_no_solo_steps_once_priority_decodes_or_when_off():
    slots = [decoding(0, P), decoding(1, D)]
    assert solo_priority(slots, 0, 2) == (slots, 0)
    busy = [prefilling(0, P, 50), decoding(1, D)]
    assert solo_priority(busy, 0, 0) == (busy, 0)


# ---- budgets ------------------------------------------------------------------------


def test_decodes_go_first_and_prefill_fills_the_budget():
    slots = [prefilling(0, D, 500), decoding(1, D), prefilling(2, F, 100)]
    plan = plan_step(slots, Limits(step_tokens=256), 0, False, no_drafts)
    assert [(it.key, it.n, it.samples) for it in plan.items] == [
        (1, 1, True), (0, 256, False)]  # the budget ran out before flex's prompt
    assert plan.n_tokens == 257


def test_a_prompt_that_fits_samples_after_its_last_token():
    plan = plan_step([prefilling(0, D, 40)], Limits(step_tokens=256), 0, False, no_drafts)
    assert [(it.n, it.samples) for it in plan.items] == [(40, True)]


def test_guard_keeps_lower_tier_prefill_small_and_drafts_off():
    calls = []

    def propose(key, limit, lookup_ok):
        calls.append(key)
        return [7] * limit

    slots = [decoding(0, P, room=5), decoding(1, D, room=5), prefilling(2, D, 200)]
    plan = plan_step(slots, Limits(step_tokens=256, guard_prefill_tokens=16), 0, True, propose)
    items = {it.key: it for it in plan.items}
    assert items[2].n == 16  # lower-tier prefill chunk under the guard
    assert items[0].draft == [7] * 5 and items[1].draft == []  # priority still drafts
    assert calls == [0]


def test_draft_budget_is_shared_and_room_respected():
    slots = [decoding(0, D, room=3), decoding(1, D, room=50), decoding(2, D, room=50)]
    plan = plan_step(slots, Limits(draft_budget=40), 0, False,
                     lambda key, limit, ok: list(range(limit)))
    assert [len(it.draft) for it in plan.items] == [3, 37, 0]


def test_prompt_lookup_only_while_few_run():
    seen = []
    slots = [decoding(i, D) for i in range(6)]
    plan_step(slots, Limits(lookup_max_running=4), 0, False,
              lambda key, limit, ok: seen.append(ok) or [])
    assert seen and not any(seen)
    seen.clear()
    plan_step(slots[:3], Limits(lookup_max_running=4), 0, False,
              lambda key, limit, ok: seen.append(ok) or [])
    assert seen == [True, True, True]


@pytest.mark.parametrize("pending,budget,expect", [
    (300, 256, 236),  # leaves LARGE_BATCH for the next step, not a small remainder
    (100, 256, 100),  # all of it fits
    (200, 50, 0),  # too little room this step: wait for a full one
    (200, 80, 80),
    (90, 256, 90),
])
def test_deterministic_chunks_stay_large(pending, budget, expect):
    n = prefill_chunk(pending, budget, 256, deterministic=True)
    assert n == expect
    assert n == 0 or n == pending or (n >= LARGE_BATCH and pending - n >= LARGE_BATCH)


def test_deterministic_keeps_decode_steps_below_the_large_batch_kernels():
    slots = [decoding(i, D, room=100) for i in range(4)]
    plan = plan_step(slots, Limits(draft_budget=128, deterministic=True), 0, False,
                     lambda key, limit, ok: [1] * limit)
    assert plan.n_tokens < LARGE_BATCH


# ---- the KV pool ----------------------------------------------------------------------


class Cells:
    """Records the two llama.cpp calls the pool makes."""

    def __init__(self, kv_size: int = 1000):
        self.kv_size = kv_size
        self.calls: list[tuple] = []

    def seq_cp(self, src, dst, p0, p1):
        self.calls.append(("cp", src, dst, p0, p1))

    def seq_rm(self, seq, p0=-1, p1=-1):
        self.calls.append(("rm", seq, p0, p1))


def test_parked_prefix_is_copied_to_the_next_sequence():
    cells = Cells()
    pool = KVPool(cells, n_ids=4)
    a = pool.take_id()
    pool.park(a, [1, 2, 3, 4, 9, 9], n_computed=4)  # two draft cells beyond what was computed
    assert ("rm", a, 4, -1) in cells.calls
    b = pool.take_id()
    assert b != a
    assert pool.attach(b, [1, 2, 3, 5]) == 3
    assert cells.calls[-1] == ("cp", a, b, 0, 3)
    assert pool.attach(b, [1, 2, 3, 4, 5], max_match=2) == 2


def test_cache_off_only_forced_reuse():
    pool = KVPool(Cells(), n_ids=4, prefix_cache=False)
    a = pool.take_id()
    pool.park(a, [1, 2, 3], 3)
    b = pool.take_id()
    assert pool.attach(b, [1, 2, 3]) == 0
    assert pool.attach(b, [1, 2, 3], force=True) == 3


def test_ids_run_out_and_the_oldest_entry_is_evicted():
    cells = Cells()
    pool = KVPool(cells, n_ids=2)
    a, b = pool.take_id(), pool.take_id()
    pool.park(a, [1, 1], 2)
    pool.park(b, [2, 2], 2)
    pool.attach(a, [1, 1, 0])  # a reused (as a holder): b is now the oldest
    c = pool.take_id()
    assert c == b and pool.n_entries == 1
    assert pool.attach(c, [2, 2, 0]) == 0 and pool.attach(c, [1, 1, 0]) == 2


def test_unused_id_goes_back_free():
    pool = KVPool(Cells(), n_ids=1)
    a = pool.take_id()
    pool.park(a, [5], 0)
    assert pool.n_entries == 0 and pool.take_id() == a


def test_make_room_evicts_until_under_the_fill_limit():
    pool = KVPool(Cells(kv_size=100), n_ids=8)
    for t in range(4):  # four distinct 20-token entries: 80 cached cells
        sid = pool.take_id()
        pool.park(sid, [t] * 20, 20)
    assert pool.cached_tokens == 80
    pool.make_room(incoming=30, running_extra=0)
    assert pool.cached_tokens + 30 <= int(100 * FILL_LIMIT)
    assert pool.n_entries == 3  # just one evicted
    assert pool.evict_all() and pool.n_entries == 0 and not pool.evict_all()
