"""The engine thread: continuous batching over one llama.cpp context.

Each step: take commands (new requests, cancels), let the scheduler admit
and preempt, give every admitted sequence its cached prefix, build one batch
(one token per decoding sequence, a chunk per prefilling one, within a
token budget), run one llama_decode, sample, and send events back.

Sequence ids are one pool. A running sequence owns an id; when it finishes,
is cancelled or is preempted, the id and its KV stay behind as a prefix-cache
entry until the least recently used entries are evicted.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from golive.engine.grammar import apply_mask
from golive.engine.model import Model
from golive.engine.prefix_cache import PrefixCache
from golive.engine.runner import Aborted, KVFull, Runner
from golive.engine.sampling import log_softmax_at
from golive.engine.scheduler import Scheduler
from golive.engine.sequence import Group, Sequence, Status
from golive.engine.speculation import PredictionDrafter, PromptLookup, prediction_counts
from golive.engine.types import (
    ChoiceFinished,
    Delta,
    EngineError,
    EngineStats,
    Event,
    Finished,
    GenerationRequest,
    InvalidRequest,
    ResourceUnavailable,
    Tier,
    TierChange,
    Timings,
    TokenLogprob,
    Usage,
)

log = logging.getLogger("golive.engine")

LARGE_BATCH = 64  # from this many tokens per decode llama.cpp's CPU matmuls switch kernels


@dataclass
class EngineConfig:
    slots: int = 16  # sequences decoded together
    kv_size: int = 16384  # KV cells shared by running sequences and the prefix cache
    cache_entries: int = 48  # sequence ids kept for finished/preempted KV
    threads: int = 0  # 0 = all cores
    step_tokens: int = 256  # prefill tokens per step, so long prompts never stall streams
    default_every: int = 4  # under priority load, every Nth admission goes to default
    flex_reserve: int = 0  # slots flex may not take
    prefix_cache: bool = True
    prompt_lookup: bool = True  # draft from n-grams of prompt and output
    lookup_max_running: int = 4  # beyond this many running sequences lookup drafts cost more than they save
    draft_budget: int = 128  # draft tokens verified per step, over all sequences
    # a priority prefill gets steps of its own (lower tiers sit them out), at most this
    # many in a row, so its first token comes as fast as on an idle server
    priority_solo_steps: int = 2
    # for this many seconds after a priority request arrives, lower tiers prefill at
    # most guard_prefill_tokens per step and draft nothing, so that the step a new
    # priority request lands in is short (0 = off)
    priority_guard_s: float = 10.0
    guard_prefill_tokens: int = 16
    # a priority request stops a step that holds lower tiers only (llama.cpp's abort
    # callback), so it need not wait for that step to end; never twice in a row
    priority_abort: bool = True
    # Batch-invariant prompts: llama.cpp's CPU matmuls take one kernel path below
    # LARGE_BATCH tokens per decode and another from there on, and the two round
    # differently. In this mode every prompt position is computed in a large batch
    # whatever the cache holds, so with one thread the output does not depend on
    # what was cached (costs up to LARGE_BATCH recomputed tokens per cached request).
    deterministic: bool = False


class Engine:
    def __init__(self, model: Model, config: EngineConfig | None = None):
        self.model = model
        self.config = cfg = config or EngineConfig()
        self.threads = threads = cfg.threads or os.cpu_count() or 1
        self.n_ids = cfg.slots + max(cfg.cache_entries, 1)
        self.max_batch = cfg.step_tokens + cfg.slots + cfg.draft_budget
        self.runner = Runner(model, cfg.kv_size, self.n_ids, self.max_batch, threads)
        self.max_context = min(model.n_ctx_train or self.runner.kv_size, self.runner.kv_size)
        self.scheduler = Scheduler(cfg.slots, cfg.default_every, cfg.flex_reserve)
        self.cache = PrefixCache()
        self._free_ids = list(range(self.n_ids - 1, -1, -1))
        self._lru: OrderedDict[int, None] = OrderedDict()  # cache entries, oldest first
        self._groups: dict[str, Group] = {}
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._n = dict(prompt=0, cached=0, generated=0, steps=0, preempt=0, proposed=0,
                       accepted=0, aborted=0)
        self._stats_lock = threading.Lock()
        self._solo_run = 0  # consecutive steps given to priority prefills alone
        self._last_priority = float("-inf")  # monotonic time of the last priority arrival
        self._abortable = False  # the decode in flight holds no priority work
        self._aborted_last = False

    # ---- public, thread-safe ----------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="golive-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._commands.put(("stop", None))
        if self._thread:
            self._thread.join(timeout=30)
        self.runner.close()

    def submit(self, req: GenerationRequest, sink: Callable[[Event | EngineError], None]) -> None:
        """Queue a request; events arrive on `sink`, called from the engine thread."""
        if not req.prompt:
            raise InvalidRequest("the prompt is empty", "messages")
        if len(req.prompt) >= self.max_context:
            raise InvalidRequest(
                f"This model's maximum context length is {self.max_context} tokens; "
                f"the prompt has {len(req.prompt)} tokens.",
                "messages",
                "context_length_exceeded",
            )
        room = self.max_context - len(req.prompt)
        max_new = room if req.max_tokens is None else min(req.max_tokens, room)
        self._commands.put(("add", Group(req, sink, max_new)))
        if req.tier is Tier.PRIORITY and self._abortable:
            self.runner.request_abort()

    def cancel(self, req: GenerationRequest) -> None:
        req.cancelled.set()
        self._commands.put(("wake", None))

    def stats(self) -> EngineStats:
        with self._stats_lock:
            s = self.scheduler
            by_tier: dict[str, int] = {}
            for seq in list(s.running):
                by_tier[seq.tier.wire] = by_tier.get(seq.tier.wire, 0) + 1
            running_uncached = sum(q.n_computed for q in list(s.running))
            return EngineStats(
                slots=self.config.slots,
                running=len(s.running),
                waiting={t.wire: len(q) for t, q in s.waiting.items()},
                running_by_tier=by_tier,
                kv_used=min(self.cache.n_tokens + running_uncached, self.runner.kv_size),
                kv_size=self.runner.kv_size,
                cache_entries=len(self._lru),
                prompt_tokens=self._n["prompt"],
                cached_tokens=self._n["cached"],
                generated_tokens=self._n["generated"],
                steps=self._n["steps"],
                preemptions=self._n["preempt"],
                aborted_steps=self._n["aborted"],
                draft_proposed=self._n["proposed"],
                draft_accepted=self._n["accepted"],
            )

    # ---- the loop -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            block = not self.scheduler.has_work()
            if not self._drain(block):
                break
            try:
                with self._stats_lock:
                    self._schedule()
                self._step()
            except Exception as exc:  # keep serving; fail what was running
                log.exception("engine step failed")
                for seq in list(self.scheduler.running):
                    self._fail(seq.group, EngineError(f"engine error: {exc}"))

    def _drain(self, block: bool) -> bool:
        try:
            cmd = self._commands.get(timeout=0.5) if block else self._commands.get_nowait()
        except queue.Empty:
            return True
        while True:
            kind, payload = cmd
            if kind == "stop":
                return False
            if kind == "add":
                self._add(payload)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _add(self, group: Group) -> None:
        self._groups[group.req.id] = group
        req = group.req
        if req.tier is Tier.PRIORITY:
            self._last_priority = time.monotonic()
        for i in range(req.n):
            seq = Sequence(group, i)
            if req.grammar is not None:
                seq.matcher = req.grammar.matcher()
            if req.prediction:
                seq.predictor = PredictionDrafter(req.prediction)
            if self.config.prompt_lookup:
                seq.lookup = PromptLookup(req.prompt)
            group.seqs.append(seq)
            self.scheduler.add(seq)

    # ---- scheduling -----------------------------------------------------------

    def _schedule(self) -> None:
        now = time.monotonic()
        for group in list(self._groups.values()):
            if group.req.cancelled.is_set():
                self._cancel(group)
        for seq in self.scheduler.expired(now):
            g = seq.group
            if not g.failed:
                budget = g.req.queue_timeout or 0.0
                self._fail(g, ResourceUnavailable(
                    f"Flex capacity is unavailable: no slot freed within {budget:g}s. "
                    "Retry later or use the default tier.", retry_after=max(1.0, budget)))
        for victim in self.scheduler.victims(self._ready):
            self._preempt(victim)
        for seq in self.scheduler.admit(self._ready):
            self._attach(seq)

    def _ready(self, seq: Sequence) -> bool:
        # Choices 2..n wait until choice 1 has prefilled, then copy its KV.
        if seq.index == 0 or seq.preempted:
            return True
        lead = seq.group.seqs[0]
        return lead.status is Status.FINISHED or (
            lead.status is Status.RUNNING and not lead.in_prefill)

    def _attach(self, seq: Sequence) -> None:
        """Give an admitted sequence an id and whatever prefix the cache holds."""
        sid = self._take_id()
        seq.seq_id = sid
        self.runner.seq_rm(sid)
        matched = 0
        if self.config.prefix_cache or seq.index > 0 or seq.preempted:
            matched, holder = self.cache.match(seq.tokens[:-1])
            if self.config.deterministic and not seq.preempted and seq.n_prompt >= LARGE_BATCH:
                # recompute the prompt's tail as one large batch, as an uncached run would
                matched = max(0, min(matched, seq.n_prompt - LARGE_BATCH))
            if matched and holder is not None:
                self.runner.seq_cp(holder, sid, 0, matched)
                if holder in self._lru:
                    self._lru.move_to_end(holder)
        seq.n_computed = matched
        g = seq.group
        if seq.preempted:
            g.sink(TierChange(seq.index, preempted=False))
            return
        if g.admitted_at is None:
            g.admitted_at = time.monotonic()
        if seq.index == 0 and g.cached_tokens is None:
            g.cached_tokens = matched
            self._n["prompt"] += seq.n_prompt
            self._n["cached"] += matched

    def _take_id(self) -> int:
        if not self._free_ids:
            self._evict_one()
        return self._free_ids.pop()

    def _evict_one(self) -> bool:
        if not self._lru:
            return False
        sid, _ = self._lru.popitem(last=False)
        self.cache.remove(sid)
        self.runner.seq_rm(sid)
        self._free_ids.append(sid)
        return True

    def _park(self, seq: Sequence) -> None:
        """Leave a sequence's KV behind as a cache entry and free its slot."""
        sid = seq.seq_id
        seq.seq_id = None
        if sid is None:
            return
        if seq.n_computed > 0:
            self.runner.seq_rm(sid, seq.n_computed, -1)  # cells of rejected or unread drafts
            self.cache.insert(seq.tokens[: seq.n_computed], sid)
            self._lru[sid] = None
        else:
            self.runner.seq_rm(sid)
            self._free_ids.append(sid)

    def _preempt(self, seq: Sequence) -> None:
        self._n["preempt"] += 1
        seq.preempted = True
        self._park(seq)
        self.scheduler.requeue_front(seq)
        seq.group.sink(TierChange(seq.index, preempted=True))

    # ---- one step --------------------------------------------------------------

    def _step(self) -> None:
        running = sorted(self.scheduler.running, key=lambda s: (s.tier, s.admitted_seq))
        if not running:
            return
        running = self._solo_priority(running)
        budget = self.config.step_tokens
        draft_budget = self.config.draft_budget
        if self.config.deterministic:  # keep decode-only steps below the large-batch kernels
            draft_budget = min(draft_budget, LARGE_BATCH - 1 - len(running))
        lookup_ok = len(running) <= self.config.lookup_max_running
        cfg = self.config
        # Priority traffic is about: keep lower tiers' steps short, since a priority
        # request that arrives mid-step waits for the step to end (not in
        # deterministic mode, whose prefill chunks must stay large).
        guarded = (cfg.priority_guard_s > 0 and not cfg.deterministic
                   and time.monotonic() - self._last_priority < cfg.priority_guard_s)
        low_budget = cfg.guard_prefill_tokens if guarded else budget
        toks: list[int] = []
        pos: list[int] = []
        sids: list[int] = []
        want: list[bool] = []
        # (seq, tokens fed before any draft, logits index of the first sampled row, draft)
        plan: list[tuple[Sequence, int, int, list[int]]] = []
        # decoding sequences first: a stream never waits for someone's prefill
        for seq in sorted(running, key=lambda s: s.pending > 1):
            n = seq.pending
            draft: list[int] = []
            low = seq.tier is not Tier.PRIORITY
            if n > 1:
                n = self._chunk(n, min(budget, low_budget) if low else budget)
                if n <= 0:
                    continue
                budget -= n
                if low:
                    low_budget -= n
            elif draft_budget > 0 and not (guarded and low):
                draft = self._draft(seq, draft_budget, lookup_ok)
                draft_budget -= len(draft)
            start = seq.n_computed
            feed = seq.tokens[start:start + n] + draft
            toks.extend(feed)
            pos.extend(range(start, start + len(feed)))
            sids.extend([seq.seq_id] * len(feed))  # type: ignore[list-item]
            ends = start + n == len(seq.tokens)
            want.extend([False] * (n - 1) + [ends] + [True] * len(draft))
            plan.append((seq, n, len(toks) - len(draft) - 1 if ends else -1, draft))
        self._make_room(len(toks))
        self.runner.clear_abort()
        self._abortable = (self.config.priority_abort and not self._aborted_last
                           and all(seq.tier is not Tier.PRIORITY for seq, *_ in plan))
        try:
            self.runner.decode(toks, pos, sids, want)
        except KVFull:
            self._recover_kv()
            return  # retry next step with the freed cells
        except Aborted:
            # a priority request came in: drop whatever cells the step wrote and plan
            # again with it; the lower tiers redo this step right after
            for seq, *_ in plan:
                self.runner.seq_rm(seq.seq_id, seq.n_computed, -1)  # type: ignore[arg-type]
            self._n["aborted"] += 1
            self._aborted_last = True
            return
        finally:
            self._abortable = False
        self._aborted_last = False
        self._n["steps"] += 1
        now = time.monotonic()
        for seq, fed, idx, draft in plan:
            seq.n_computed += fed
            if idx < 0:
                continue
            if seq.n_prompt <= seq.n_computed and not self.cache.holds(seq.seq_id):
                # prompt done: share it with later requests while this one runs
                self.cache.insert(seq.tokens[: seq.n_prompt], seq.seq_id)  # type: ignore[arg-type]
            self._verify(seq, idx, draft, now)

    def _chunk(self, pending: int, budget: int) -> int:
        """Prefill tokens to feed this step. In deterministic mode no chunk of a long
        prompt is small, and none leaves a small remainder for the next step."""
        n = min(pending, budget)
        if not self.config.deterministic or n == pending:
            return n
        if pending - n < LARGE_BATCH:
            n = pending - LARGE_BATCH
        if n >= LARGE_BATCH:
            return n
        # too little room left this step: wait for the next, unless this is all there is
        return min(pending, budget) if budget >= self.config.step_tokens else 0

    def _solo_priority(self, running: list[Sequence]) -> list[Sequence]:
        """While a priority request prefills, run priority sequences only.

        A step's cost grows with every token in it (the CPU is compute-bound), so a
        priority prompt batched beside a full server's decodes would wait several
        times its idle prefill. Lower tiers sit out at most `priority_solo_steps`
        steps in a row, then share one, so a stream of priority arrivals slows
        them but never stops them.
        """
        limit = self.config.priority_solo_steps
        prefilling = any(s.tier is Tier.PRIORITY and s.in_prefill for s in running)
        if not prefilling or limit <= 0 or all(s.tier is Tier.PRIORITY for s in running):
            self._solo_run = 0
            return running
        if self._solo_run >= limit:
            self._solo_run = 0
            return running
        self._solo_run += 1
        return [s for s in running if s.tier is Tier.PRIORITY]

    def _draft(self, seq: Sequence, budget: int, lookup_ok: bool) -> list[int]:
        """Tokens to verify after the sequence's next one, or none."""
        room = min(seq.group.max_new - seq.n_generated,
                   self.max_context - len(seq.tokens)) - 1
        limit = min(budget, room)
        if limit <= 0:
            return []
        draft: list[int] = []
        seq.draft_src = None
        if seq.matcher is not None:
            # tokens the grammar forces are certain: a free draft
            draft = seq.matcher.forced_tokens()[:limit]
            seq.draft_src = "grammar"
        if not draft and seq.predictor is not None:
            draft = seq.predictor.propose(seq.tokens[seq.n_prompt:])[:limit]
            seq.draft_src = "prediction"
        if not draft and seq.lookup is not None and lookup_ok:
            draft = seq.lookup.propose(seq.tokens)[:limit]
            seq.draft_src = "lookup"
        if draft and seq.matcher is not None and seq.draft_src != "grammar":
            draft = draft[: seq.matcher.validate_draft(draft)]
        return draft

    def _verify(self, seq: Sequence, idx: int, draft: list[int], now: float) -> None:
        """Sample the row after the fed tokens and, while it agrees with the draft,
        the rows after each draft token; drop the KV of the rejected rest."""
        masks = None
        if seq.matcher is not None and draft:
            masks = seq.matcher.allocate_mask(len(draft) + 1)
            seq.matcher.fill_draft_masks(draft, masks)
        accepted = 0
        emitted: list[int] = []
        finished = False
        for i in range(len(draft) + 1):
            raw = self.runner.logits(idx + i)
            row = seq.sampler.adjust(raw)
            if seq.matcher is not None:
                if row is raw:
                    row = raw.copy()  # raw stays intact for logprobs
                if masks is not None:
                    apply_mask(row, masks[i])
                else:
                    seq.matcher.apply(row)
            d = draft[i] if i < len(draft) else None
            tok = seq.sampler.choose(row)
            emitted.append(tok)
            if self._emit(seq, tok, raw, now):
                finished = True
                break
            if tok != d:
                break
            accepted += 1
        if draft:
            self._n["proposed"] += len(draft)
            self._n["accepted"] += accepted
            if seq.draft_src == "prediction":
                seq.predictor.k.update(len(draft), accepted)  # type: ignore[union-attr]
            elif seq.draft_src == "lookup":
                seq.lookup.feedback(len(draft), accepted)  # type: ignore[union-attr]
        if seq.predictor is not None:
            seq.predictor.advance(emitted)
        if finished:
            return
        # the accepted draft tokens have KV; the last sampled token is pending
        seq.n_computed += accepted
        if accepted < len(draft):
            self.runner.seq_rm(seq.seq_id, seq.n_computed, -1)  # type: ignore[arg-type]

    def _make_room(self, incoming: int) -> None:
        """Evict old cache entries before the KV pool runs out."""
        limit = int(self.runner.kv_size * 0.92)
        while self._lru:
            used = self.cache.n_tokens + sum(
                max(0, s.n_computed - s.n_prompt) for s in self.scheduler.running)
            if used + incoming <= limit:
                break
            self._evict_one()

    def _recover_kv(self) -> bool:
        """llama.cpp found no cells: drop cache entries, else preempt someone."""
        if self._lru:
            while self._evict_one():
                pass
            return True
        running = self.scheduler.running
        if len(running) > 1:
            victim = max(running, key=lambda s: (s.tier, s.admitted_seq))
            self._preempt(victim)
            return True
        for seq in list(running):
            self._fail(seq.group, InvalidRequest(
                "the request does not fit in the KV cache; lower max_tokens or raise --ctx",
                "max_tokens"))
        return False

    def _emit(self, seq: Sequence, tok: int, logits: np.ndarray, now: float) -> bool:
        """Append one sampled token and stream it; True when the choice ended."""
        g = seq.group
        seq.sampler.record(tok)
        seq.tokens.append(tok)
        self._n["generated"] += 1
        if g.first_token_at is None:
            g.first_token_at = now
        if seq.matcher is not None:
            seq.matcher.accept(tok)
        if self.model.is_eog(tok):
            self._finish(seq, "stop")
            return True
        lp = None
        if g.req.sampling.logprobs:
            lp = self._logprob(logits, tok, g.req.sampling.top_logprobs)
        chunk = seq.text.push(tok, self.model.piece(tok), lp)
        if chunk is not None and (chunk.text or chunk.tokens):
            g.sink(Delta(seq.index, chunk.text, chunk.tokens,
                         chunk.extras if g.req.sampling.logprobs else None))
        if seq.text.stopped:
            self._finish(seq, "stop", flush=False)
        elif seq.matcher is not None and seq.matcher.is_done():
            self._finish(seq, "stop")
        elif seq.n_generated >= g.max_new:
            self._finish(seq, "length")
        else:
            return False
        return True

    def _logprob(self, logits: np.ndarray, tok: int, top: int) -> TokenLogprob:
        lp, tops = log_softmax_at(logits, tok, top)
        piece = self.model.piece(tok)
        return TokenLogprob(
            token=piece.decode("utf-8", errors="replace"), logprob=lp, bytes=list(piece),
            top=[(self.model.piece(t).decode("utf-8", errors="replace"), v,
                  list(self.model.piece(t))) for t, v in tops])

    # ---- endings ---------------------------------------------------------------

    def _finish(self, seq: Sequence, reason: str, flush: bool = True) -> None:
        g = seq.group
        if flush:
            chunk = seq.text.flush()
            if chunk is not None and (chunk.text or chunk.tokens):
                g.sink(Delta(seq.index, chunk.text, chunk.tokens,
                             chunk.extras if g.req.sampling.logprobs else None))
        seq.finish_reason = reason
        self._release(seq)
        g.sink(ChoiceFinished(seq.index, reason, self._choice_usage(seq)))
        self._close_if_done(g)

    def _choice_usage(self, seq: Sequence) -> Usage:
        accepted = rejected = 0
        if seq.predictor is not None:
            out = [t for t in seq.tokens[seq.n_prompt:] if not self.model.is_eog(t)]
            accepted, rejected = prediction_counts(seq.predictor.prediction, out)
        # OpenAI counts rejected prediction tokens in completion_tokens (and bills them)
        return Usage(completion_tokens=seq.n_generated + rejected, accepted_prediction_tokens=accepted,
                     rejected_prediction_tokens=rejected)

    def _release(self, seq: Sequence) -> None:
        if seq.status is Status.FINISHED:
            return
        self.scheduler.remove(seq)
        seq.status = Status.FINISHED
        self._park(seq)
        seq.group.open -= 1

    def _close_if_done(self, g: Group) -> None:
        if g.open > 0 or g.failed:
            return
        self._groups.pop(g.req.id, None)
        usage = Usage(prompt_tokens=len(g.req.prompt), cached_tokens=g.cached_tokens or 0)
        for s in g.seqs:
            usage.add(self._choice_usage(s))
        now = time.monotonic()
        t0 = g.req.arrived
        timings = Timings(
            queued=(g.admitted_at or now) - t0,
            first_token=None if g.first_token_at is None else g.first_token_at - t0,
            total=now - t0,
        )
        g.sink(Finished(usage, timings, g.tier))

    def _cancel(self, g: Group) -> None:
        for seq in g.seqs:
            self._release(seq)
        g.failed = True
        self._groups.pop(g.req.id, None)

    def _fail(self, g: Group, err: EngineError) -> None:
        for seq in g.seqs:
            self._release(seq)
        g.failed = True
        self._groups.pop(g.req.id, None)
        g.sink(err)
