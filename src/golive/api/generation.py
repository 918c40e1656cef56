"""Runs one OpenAI request against the backend: the shared part of chat and completions.

Turns validated bodies into a GenerationRequest, watches the event stream
(for metrics, cost and the request log) and gives the routes either the
collected result or the live events.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request

from golive.api.schemas import _Sampling
from golive.api.state import AppState
from golive.backends.base import Backend, Capability
from golive.engine.types import (
    ChoiceFinished,
    Delta,
    EngineError,
    Event,
    Finished,
    GenerationRequest,
    InvalidRequest,
    SamplingParams,
    Tier,
    TokenLogprob,
    Unsupported,
)
from golive.observe.record import RequestRecord


class ClientGone(Exception):
    pass


def resolve_tier(asked: str | None, state: AppState) -> Tier:
    """The tier a request is served at; the policy may downgrade priority."""
    from golive.batch.execute import is_batch_request

    if is_batch_request():  # sent by the batch runner: below flex, whatever the line asked
        return Tier.BATCH
    if asked in (None, "auto", "default", "scale"):
        return Tier.DEFAULT
    if asked == "flex":
        return Tier.FLEX
    if asked == "priority":
        return state.tier_policy.admit_priority() if state.tier_policy else Tier.PRIORITY
    raise InvalidRequest(f"Invalid value for 'service_tier': {asked!r}.", "service_tier")


def backend_for(body: _Sampling, state: AppState, needs: Capability) -> Backend:
    """The model a request names (404 model_not_found), if it can do what the endpoint needs."""
    backend = state.models.resolve(body.model)
    if needs not in backend.info.capabilities:
        raise Unsupported(backend.info.id, f"the {needs.value} endpoint", "model")
    return backend


def logit_bias_of(body: _Sampling, n_vocab: int) -> dict[int, float] | None:
    if not body.logit_bias:
        return None
    bias = {int(k): v for k, v in body.logit_bias.items()}
    bad = [t for t in bias if t >= n_vocab]
    if bad:
        raise InvalidRequest(f"logit_bias token id {bad[0]} is outside the vocabulary "
                             f"(0..{n_vocab - 1})", "logit_bias")
    return bias


def sampling_of(body: _Sampling, logprobs: bool = False, top_logprobs: int = 0,
                n_vocab: int = 0) -> SamplingParams:
    return SamplingParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        logit_bias=logit_bias_of(body, n_vocab),
    )


def build_request(body: _Sampling, prompt: list[int], state: AppState, backend: Backend,
                  max_tokens: int | None, logprobs: bool = False,
                  top_logprobs: int = 0) -> GenerationRequest:
    if logprobs and Capability.LOGPROBS not in backend.info.capabilities:
        raise Unsupported(backend.info.id, "logprobs", "logprobs")
    tier = resolve_tier(body.service_tier, state)
    queue_timeout = None
    if tier is Tier.FLEX:
        queue_timeout = (body.queue_timeout if body.queue_timeout is not None
                         else state.settings.flex_queue_timeout)
    return GenerationRequest(
        prompt=prompt,
        sampling=sampling_of(body, logprobs, top_logprobs, backend.info.n_vocab),
        max_tokens=max_tokens,
        stop=list(body.stop or []),
        n=body.n,
        tier=tier,
        queue_timeout=queue_timeout,
    )


@dataclass
class Choice:
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


class Run:
    """One request in flight: its events, its timings, its final record."""

    def __init__(self, request: Request, state: AppState, backend: Backend, endpoint: str,
                 body: _Sampling, req: GenerationRequest, prefix: str):
        self.http = request
        self.state = state
        self.backend = backend
        self.endpoint = endpoint
        self.body = body
        self.req = req
        self.model_id = backend.info.id
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.started = time.time()
        self.choices = [Choice() for _ in range(req.n)]
        self.final: Finished | None = None
        self._last_token_at: dict[int, float] = {}
        self._first = True
        self.tier_asked = body.service_tier or "auto"

    @property
    def tier(self) -> str:
        return (self.final.tier if self.final else self.req.tier).wire

    async def events(self) -> AsyncIterator[Event]:
        """The backend's events, observed on the way through."""
        metrics = self.state.metrics
        try:
            async for ev in self.backend.generate(self.req):
                now = time.monotonic()
                if isinstance(ev, Delta):
                    c = self.choices[ev.index]
                    c.text += ev.text
                    if ev.logprobs:
                        c.logprobs.extend(ev.logprobs)
                    last = self._last_token_at.get(ev.index)
                    if last is None:
                        if self._first:
                            metrics.first_token(self.model_id, self.req.tier.wire,
                                                now - self.req.arrived)
                            self._first = False
                    else:
                        metrics.token_gap(self.model_id, self.req.tier.wire, now - last)
                    self._last_token_at[ev.index] = now
                elif isinstance(ev, ChoiceFinished):
                    self.choices[ev.index].finish_reason = ev.reason
                elif isinstance(ev, Finished):
                    self.final = ev
                yield ev
        except EngineError as exc:
            self.record(status=exc.status, error=str(exc))
            raise
        if self.final is not None:
            self.record()

    async def collect(self) -> None:
        """Run to the end; cancel if the client goes away meanwhile."""
        async def drain() -> None:
            async for _ in self.events():
                pass

        await until_disconnect(self.http, drain())

    def record(self, status: int = 200, error: str | None = None) -> RequestRecord:
        f = self.final
        u = f.usage if f else None
        t = f.timings if f else None
        reasons = [c.finish_reason for c in self.choices if c.finish_reason]
        rec = RequestRecord(
            id=self.id,
            created=self.started,
            endpoint=self.endpoint,
            model=self.model_id,
            tier_requested=self.tier_asked,
            tier_served=self.tier,
            status=status,
            queued_s=t.queued if t else 0.0,
            ttft_s=t.first_token if t else None,
            total_s=t.total if t else time.time() - self.started,
            prompt_tokens=u.prompt_tokens if u else 0,
            cached_tokens=u.cached_tokens if u else 0,
            completion_tokens=u.completion_tokens if u else 0,
            accepted_prediction_tokens=u.accepted_prediction_tokens if u else 0,
            rejected_prediction_tokens=u.rejected_prediction_tokens if u else 0,
            finish_reason=reasons[0] if reasons else None,
            error=error,
            client_id=client_id(self.http, self.body),
            stream=self.body.stream,
        )
        bodies = None
        if self.state.observer.log_bodies:
            bodies = (self.body.model_dump_json(exclude_none=True), self.response_json())
        self.state.observer.done(rec, self.req.n, bodies)
        self.cost = rec.cost_usd
        return rec


    def response_json(self) -> str:
        return json.dumps({"choices": [
            {"index": i, "content": c.text, "finish_reason": c.finish_reason}
            for i, c in enumerate(self.choices)]})


def client_id(request: Request, body: _Sampling) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and len(auth) > 7:
        key = auth[7:].strip()
        # keep a recognisable tail, never the whole key
        return f"key-...{key[-4:]}" if len(key) > 8 else "key"
    return request.headers.get("x-client-id") or body.user


async def until_disconnect(request: Request, coro) -> object:
    """Await `coro`, cancelling it if the HTTP client disconnects first."""
    task = asyncio.ensure_future(coro)
    gone = False

    async def watch() -> None:
        nonlocal gone
        while not task.done():
            if await request.is_disconnected():
                gone = True
                task.cancel()
                return
            await asyncio.sleep(0.2)

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if gone:
            raise ClientGone() from None
        raise  # our own caller was cancelled: let that through
    finally:
        watcher.cancel()
