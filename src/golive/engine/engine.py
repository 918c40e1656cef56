"""The engine thread: continuous batching over one llama.cpp context.

Each loop: take commands (new requests, cancels), schedule (the scheduler
admits and preempts, the KV pool gives every admitted sequence its cached
prefix), then one step: plan (`step_plan.plan_step`: who feeds how many
tokens and drafts), run (one `llama_decode`), postprocess (sample, verify
drafts, stream text, finish choices, send events back).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from golive.engine.grammar import apply_mask
from golive.engine.cores import SHARED, CoreShare
from golive.engine.counters import Counters
from golive.engine.kv_pool import KVPool
from golive.engine.model import Model
from golive.engine.runner import Aborted, KVFull, Runner
from golive.engine.sampling import log_softmax_at
from golive.engine.scheduler import Scheduler
from golive.engine.sequence import Group, Sequence, Status
from golive.engine.speculation import PredictionDrafter, PromptLookup, prediction_counts
from golive.engine.step_plan import LARGE_BATCH, Limits, Slot, StepPlan, plan_step
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


@dataclass
class EngineConfig:
    slots: int = 16  # sequences decoded together
    kv_size: int = 16384  # KV cells shared by running sequences and the prefix cache
    cache_entries: int = 48  # sequence ids kept for finished/preempted KV
    threads: int = 0  # 0 = all cores, shared with the other engines of this process (cores.py)
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
    # At temperature 0 a draft token is accepted when its logit is within this much of
    # the best one. Verification rows are computed in other batch shapes than the
    # single decodes the prediction's text came from, and llama.cpp's CPU kernels
    # round differently per shape (up to ~0.1 in logits measured on the default
    # model), so an exact rule rejects a prediction at every near-tie it meets and
    # pays a re-alignment each time. 0 = exact: the output is the argmax, always.
    draft_tolerance: float = 0.1


class Engine:
    def __init__(self, model: Model, config: EngineConfig | None = None,
                 cores: CoreShare = SHARED):
        self.model = model
        self.config = cfg = config or EngineConfig()
        # threads=0: as many as the machine's share for this engine allows, step by step
        self.cores = None if cfg.threads else cores
        self.threads = threads = cfg.threads or cores.cores
        self.n_ids = cfg.slots + max(cfg.cache_entries, 1)
        self.max_batch = cfg.step_tokens + cfg.slots + cfg.draft_budget
        self.runner = Runner(model, cfg.kv_size, self.n_ids, self.max_batch, threads)
        self.max_context = min(model.n_ctx_train or self.runner.kv_size, self.runner.kv_size)
        self.scheduler = Scheduler(cfg.slots, cfg.default_every, cfg.flex_reserve)
        self.kv = KVPool(self.runner, self.n_ids, cfg.prefix_cache)
        self.limits = Limits(step_tokens=cfg.step_tokens, draft_budget=cfg.draft_budget,
                             lookup_max_running=cfg.lookup_max_running,
                             priority_solo_steps=cfg.priority_solo_steps,
                             guard_prefill_tokens=cfg.guard_prefill_tokens,
                             deterministic=cfg.deterministic)
        self._groups: dict[str, Group] = {}
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.counters = Counters()
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
        if self.cores is not None:
            self.cores.threads(id(self), busy=False)
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
            n = self.counters
            return EngineStats(
                slots=self.config.slots,
                running=len(s.running),
                waiting={t.wire: len(q) for t, q in s.waiting.items()},
                running_by_tier=by_tier,
                kv_used=min(self.kv.cached_tokens + running_uncached, self.runner.kv_size),
                kv_size=self.runner.kv_size,
                cache_entries=self.kv.n_entries,
                prompt_tokens=n.prompt_tokens,
                cached_tokens=n.cached_tokens,
                generated_tokens=n.generated_tokens,
                steps=n.steps,
                preemptions=n.preemptions,
                aborted_steps=n.aborted_steps,
                draft_proposed=n.draft_proposed,
                draft_accepted=n.draft_accepted,
            )

    # ---- the loop -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            block = not self.scheduler.has_work()
            if block and self.cores is not None:
                self.cores.threads(id(self), busy=False)  # idle: others may take the cores
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
        sid = self.kv.take_id()
        seq.seq_id = sid
        cap = None
        if self.config.deterministic and not seq.preempted and seq.n_prompt >= LARGE_BATCH:
            cap = seq.n_prompt - LARGE_BATCH  # the prompt's tail as one large batch, as uncached
        matched = self.kv.attach(sid, seq.tokens[:-1], cap,
                                 force=seq.index > 0 or seq.preempted)
        seq.n_computed = matched
        g = seq.group
        if seq.preempted:
            g.sink(TierChange(seq.index, preempted=False))
            return
        if g.admitted_at is None:
            g.admitted_at = time.monotonic()
        if seq.index == 0 and g.cached_tokens is None:
            g.cached_tokens = matched
            self.counters.prompt_tokens += seq.n_prompt
            self.counters.cached_tokens += matched

    def _park(self, seq: Sequence) -> None:
        """Leave a sequence's KV behind as a cache entry and free its slot."""
        sid, seq.seq_id = seq.seq_id, None
        if sid is not None:
            self.kv.park(sid, seq.tokens, seq.n_computed)

    def _preempt(self, seq: Sequence) -> None:
        self.counters.preemptions += 1
        seq.preempted = True
        self._park(seq)
        self.scheduler.requeue_front(seq)
        seq.group.sink(TierChange(seq.index, preempted=True))

    # ---- one step --------------------------------------------------------------

    def _step(self) -> None:
        running = sorted(self.scheduler.running, key=lambda s: (s.tier, s.admitted_seq))
        if not running:
            return
        plan = self._plan(running)
        if self._run(running, plan):
            self._postprocess(running, plan)

    def _plan(self, running: list[Sequence]) -> StepPlan:
        cfg = self.config
        # Priority traffic is about: keep lower tiers' steps short, since a priority
        # request that arrives mid-step waits for the step to end (not in
        # deterministic mode, whose prefill chunks must stay large).
        guarded = (cfg.priority_guard_s > 0 and not cfg.deterministic
                   and time.monotonic() - self._last_priority < cfg.priority_guard_s)
        slots = [Slot(i, s.tier, s.pending, s.in_prefill, self._draft_room(s))
                 for i, s in enumerate(running)]
        plan = plan_step(slots, self.limits, self._solo_run, guarded,
                         lambda i, limit, lookup_ok: self._draft(running[i], limit, lookup_ok))
        self._solo_run = plan.solo_run
        return plan

    def _run(self, running: list[Sequence], plan: StepPlan) -> bool:
        """One llama_decode of the plan; False when it must be planned again."""
        toks: list[int] = []
        pos: list[int] = []
        sids: list[int] = []
        want: list[bool] = []
        for it in plan.items:
            seq = running[it.key]
            start = seq.n_computed
            feed = seq.tokens[start:start + it.n] + it.draft
            toks.extend(feed)
            pos.extend(range(start, start + len(feed)))
            sids.extend([seq.seq_id] * len(feed))  # type: ignore[list-item]
            want.extend([False] * (it.n - 1) + [it.samples] + [True] * len(it.draft))
        self.kv.make_room(len(toks), sum(max(0, s.n_computed - s.n_prompt)
                                         for s in self.scheduler.running))
        if self.cores is not None:
            self.runner.set_threads(self.cores.threads(id(self), busy=True))
        self.runner.clear_abort()
        self._abortable = (self.config.priority_abort and not self._aborted_last
                           and all(running[it.key].tier is not Tier.PRIORITY
                                   for it in plan.items))
        try:
            self.runner.decode(toks, pos, sids, want)
        except KVFull:
            self._recover_kv()
            return False  # retry next step with the freed cells
        except Aborted:
            # a priority request came in: drop whatever cells the step wrote and plan
            # again with it; the lower tiers redo this step right after
            for it in plan.items:
                seq = running[it.key]
                self.kv.truncate(seq.seq_id, seq.n_computed)  # type: ignore[arg-type]
            self.counters.aborted_steps += 1
            self._aborted_last = True
            return False
        finally:
            self._abortable = False
        self._aborted_last = False
        self.counters.steps += 1
        return True

    def _postprocess(self, running: list[Sequence], plan: StepPlan) -> None:
        now = time.monotonic()
        at = 0  # batch position of the item's first token (logits are read by position)
        for it in plan.items:
            seq = running[it.key]
            idx = at + it.n - 1  # the last fed token before the draft
            at += it.n + len(it.draft)
            seq.n_computed += it.n
            if not it.samples:
                continue
            if seq.n_prompt <= seq.n_computed:
                # prompt done: share it with later requests while this one runs
                self.kv.publish(seq.seq_id, seq.tokens[: seq.n_prompt])  # type: ignore[arg-type]
            self._verify(seq, idx, it.draft, now)

    def _draft_room(self, seq: Sequence) -> int:
        """Draft tokens a decoding sequence could still use after its next one."""
        return min(seq.group.max_new - seq.n_generated, self.max_context - len(seq.tokens)) - 1

    def _draft(self, seq: Sequence, limit: int, lookup_ok: bool) -> list[int]:
        """Tokens to verify after the sequence's next one, or none."""
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
            if d is not None and tok != d and self._near_tie(seq, row, tok, d):
                tok = d
            emitted.append(tok)
            if self._emit(seq, tok, raw, now):
                finished = True
                break
            if tok != d:
                break
            accepted += 1
        if draft:
            self.counters.draft_proposed += len(draft)
            self.counters.draft_accepted += accepted
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
            self.kv.truncate(seq.seq_id, seq.n_computed)  # type: ignore[arg-type]

    def _near_tie(self, seq: Sequence, row: np.ndarray, best: int, d: int) -> bool:
        """Greedy only: the draft token is as good as the argmax up to batch-shape noise."""
        tol = self.config.draft_tolerance
        return (tol > 0 and seq.sampler.greedy and not self.config.deterministic
                and bool(row[d] >= row[best] - tol))

    def _recover_kv(self) -> bool:
        """llama.cpp found no cells: drop cache entries, else preempt someone."""
        if self.kv.evict_all():
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
        self.counters.generated_tokens += 1
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
