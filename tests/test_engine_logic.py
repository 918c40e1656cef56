"""Pure logic of the engine, without llama.cpp: text streaming, prefix cache, scheduler."""

from __future__ import annotations

from golive.engine.prefix_cache import PrefixCache
from golive.engine.scheduler import Scheduler
from golive.engine.sequence import Group, Sequence, Status
from golive.engine.textstream import TextStream
from golive.engine.types import GenerationRequest, Tier

# ---- text stream ---------------------------------------------------------------


def _run(stream: TextStream, pieces: list[bytes]) -> tuple[list[str], str]:
    out = []
    for i, p in enumerate(pieces):
        c = stream.push(i, p)
        if c is not None:
            out.append(c.text)
    c = stream.flush()
    if c is not None:
        out.append(c.text)
    return out, "".join(out)


def test_stop_string_across_token_boundaries_never_shown():
    chunks, text = _run(TextStream(["END"]), [b"hello E", b"N", b"D and more"])
    assert text == "hello "
    assert not any("E" in c for c in chunks)


def test_false_stop_prefix_is_released():
    _, text = _run(TextStream(["END"]), [b"an E", b"N", b"gine"])
    assert text == "an ENgine"


def test_held_back_text_is_not_emitted_early():
    s = TextStream(["###"])
    first = s.push(0, b"abc#")
    assert first is not None and first.text == "abc"
    assert s.push(1, b"#") is None or s.text.endswith("##")
    last = s.push(2, b"x")
    assert last is not None and last.text == "##x"


def test_utf8_split_across_tokens_is_joined():
    euro = "€".encode()  # three bytes
    chunks, text = _run(TextStream([]), [b"price ", euro[:1], euro[1:2], euro[2:], b"5"])
    assert text == "price €5"
    assert all("\ufffd" not in c for c in chunks)


def test_every_token_is_accounted_for_once():
    s = TextStream(["zz"])
    seen = []
    for i, p in enumerate([b"a", b"z", b"b", b"c"]):
        c = s.push(i, p)
        if c:
            seen += c.tokens
    c = s.flush()
    if c:
        seen += c.tokens
    assert seen == [0, 1, 2, 3]
    assert s.text == "azbc"


# ---- prefix cache ------------------------------------------------------------------


def test_prefix_cache_match_insert_split_and_remove():
    pc = PrefixCache()
    assert pc.match([1, 2, 3]) == (0, None)
    pc.insert([1, 2, 3, 4, 5], holder=7)
    assert pc.match([1, 2, 3, 9]) == (3, 7)
    assert pc.match([1, 2, 3, 4, 5, 6]) == (5, 7)
    pc.insert([1, 2, 8], holder=9)  # splits the edge at 2
    assert pc.n_tokens == 6  # 1,2 shared + 3,4,5 + 8
    n, h = pc.match([1, 2, 8, 8])
    assert (n, h) == (3, 9)
    n, h = pc.match([1, 2, 0])
    assert n == 2 and h in (7, 9)
    pc.remove(7)
    assert not pc.holds(7)
    assert pc.match([1, 2, 3, 4]) == (2, 9)
    pc.remove(9)
    assert pc.match([1, 2]) == (0, None)
    assert pc.n_tokens == 0


# ---- scheduler -------------------------------------------------------------------


def _seq(tier: Tier, timeout: float | None = None) -> Sequence:
    req = GenerationRequest(prompt=[1, 2, 3], tier=tier, queue_timeout=timeout)
    g = Group(req, lambda ev: None, 10)
    s = Sequence(g, 0)
    g.seqs.append(s)
    return s


def _always(_s: Sequence) -> bool:
    return True


def test_admission_order_is_priority_default_flex_batch():
    sch = Scheduler(slots=4)
    b, f, d, p = _seq(Tier.BATCH), _seq(Tier.FLEX), _seq(Tier.DEFAULT), _seq(Tier.PRIORITY)
    for s in (b, f, d, p):
        sch.add(s)
    assert sch.admit(_always) == [p, d, f, b]
    assert all(s.status is Status.RUNNING for s in (p, d, f, b))


def test_priority_preempts_lowest_tier_most_recent():
    sch = Scheduler(slots=3)
    d1, d2, f = _seq(Tier.DEFAULT), _seq(Tier.DEFAULT), _seq(Tier.FLEX)
    for s in (d1, d2, f):
        sch.add(s)
    sch.admit(_always)
    p = _seq(Tier.PRIORITY)
    sch.add(p)
    assert sch.victims(_always) == [f]
    sch.requeue_front(f)
    assert sch.admit(_always) == [p]
    p2 = _seq(Tier.PRIORITY)
    sch.add(p2)
    assert sch.victims(_always) == [d2]  # the default admitted last
    # priority never preempts priority
    sch2 = Scheduler(slots=1)
    a, b = _seq(Tier.PRIORITY), _seq(Tier.PRIORITY)
    sch2.add(a)
    sch2.admit(_always)
    sch2.add(b)
    assert sch2.victims(_always) == []


def test_several_priority_arrivals_preempt_in_one_step():
    sch = Scheduler(slots=3)
    running = [_seq(Tier.DEFAULT), _seq(Tier.FLEX), _seq(Tier.BATCH)]
    for s in running:
        sch.add(s)
    sch.admit(_always)
    for _ in range(2):
        sch.add(_seq(Tier.PRIORITY))
    assert sch.victims(_always) == [running[2], running[1]]  # batch first, then flex


def test_default_and_flex_preempt_batch_only():
    sch = Scheduler(slots=2)
    b, f = _seq(Tier.BATCH), _seq(Tier.FLEX)
    sch.add(b)
    sch.add(f)
    sch.admit(_always)
    d = _seq(Tier.DEFAULT)
    sch.add(d)
    assert sch.victims(_always) == [b]
    sch.requeue_front(b)
    assert sch.admit(_always) == [d]
    d2 = _seq(Tier.DEFAULT)
    sch.add(d2)
    assert sch.victims(_always) == []  # default never pushes out flex


def test_default_share_does_not_readmit_a_preempted_default():
    sch = Scheduler(slots=1, default_every=1)
    d = _seq(Tier.DEFAULT)
    sch.add(d)
    sch.admit(_always)
    p = _seq(Tier.PRIORITY)
    sch.add(p)
    (v,) = sch.victims(_always)
    v.preempted = True
    sch.requeue_front(v)
    assert sch.admit(_always) == [p]


def test_default_keeps_moving_under_priority_load():
    sch = Scheduler(slots=1, default_every=3)
    defaults = [_seq(Tier.DEFAULT) for _ in range(3)]
    prios = [_seq(Tier.PRIORITY) for _ in range(9)]
    for s in defaults + prios:
        sch.add(s)
    order = []
    for _ in range(12):
        (s,) = sch.admit(_always)
        order.append(s.tier)
        sch.remove(s)  # it finishes; the slot frees
    assert order[:3] == [Tier.PRIORITY, Tier.PRIORITY, Tier.DEFAULT]
    assert order.count(Tier.DEFAULT) == 3
    assert order.index(Tier.DEFAULT) < 9  # not starved until priority drains


def test_flex_waits_for_spare_capacity_and_expires():
    sch = Scheduler(slots=1)
    d = _seq(Tier.DEFAULT)
    sch.add(d)
    sch.admit(_always)
    f = _seq(Tier.FLEX, timeout=0.0)
    sch.add(f)
    assert sch.admit(_always) == []  # no free slot: flex does not preempt
    assert sch.victims(_always) == []
    assert sch.expired(f.enqueued_at + 1.0) == [f]
    assert sch.depth(Tier.FLEX) == 0


def test_flex_does_not_jump_a_waiting_default():
    sch = Scheduler(slots=2)
    d = _seq(Tier.DEFAULT)
    f = _seq(Tier.FLEX)
    sch.add(f)
    sch.add(d)
    # the default is not ready (a sibling waiting for its lead): flex must not take its slot
    assert sch.admit(lambda s: s is not d) == []
    assert sch.admit(_always) == [d, f]
