"""OpenAI routes: chat completions, completions, models."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from golive.api import structured
from golive.api.errors import engine_error_response, error_body
from golive.api.generation import ClientGone, Run, backend_for, build_request
from golive.api.render import chat_logprobs, completion_logprobs, sse, usage_dict
from golive.api.schemas import ChatCompletionRequest, CompletionRequest
from golive.api.state import AppState, app_state
from golive.backends.base import Backend, Capability
from golive.engine.types import (
    ChoiceFinished,
    Delta,
    EngineError,
    Finished,
    InvalidRequest,
    Unsupported,
)

router = APIRouter()

FINGERPRINT = "fp_golive"


def _headers(run: Run) -> dict[str, str]:
    return {"x-request-id": run.id, "x-golive-cost-usd": f"{getattr(run, 'cost', 0.0):.10f}",
            "x-golive-service-tier": run.tier}


# ---- chat -------------------------------------------------------------------


def _check_chat(body: ChatCompletionRequest, backend: Backend) -> None:
    if body.prediction is not None:
        _check_prediction(body)
        if Capability.PREDICTION not in backend.info.capabilities:
            raise Unsupported(backend.info.id, "prediction", "prediction")


def _check_prediction(body: ChatCompletionRequest) -> None:
    """The parameters OpenAI refuses next to `prediction`, with its wording."""
    if body.n > 1:
        raise InvalidRequest("n values greater than 1 are not supported with predicted outputs",
                             "n")
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported with predicted outputs", "logprobs")
    if (body.presence_penalty or 0) > 0:
        raise InvalidRequest("presence_penalty values greater than 0 are not supported with "
                             "predicted outputs", "presence_penalty")
    if (body.frequency_penalty or 0) > 0:
        raise InvalidRequest("frequency_penalty values greater than 0 are not supported with "
                             "predicted outputs", "frequency_penalty")
    if body.tools:
        raise InvalidRequest("tools are not supported with predicted outputs", "tools")


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           state: AppState = Depends(app_state)) -> Response:
    backend = backend_for(body, state, Capability.CHAT)
    _check_chat(body, backend)
    plan = await structured.prepare(body, backend)  # response_format, tools: 400 if bad
    prompt = backend.render_chat(plan.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    req = build_request(body, prompt, state, backend, max_tokens, body.logprobs,
                        body.top_logprobs or 0)
    req.grammar = plan.grammar
    if body.prediction is not None:
        req.prediction = backend.tokenize(body.prediction.text(), add_special=False)
    run = Run(request, state, backend, "/v1/chat/completions", body, req, "chatcmpl")
    model_id = run.model_id
    if body.stream:
        return await _stream(run, _chat_chunks(run, plan))
    try:
        await run.collect()
    except ClientGone:
        return Response(status_code=499)
    except EngineError as exc:
        return engine_error_response(exc)
    assert run.final is not None
    messages = [structured.chat_message(plan, c.text, c.finish_reason) for c in run.choices]
    return JSONResponse({
        "id": run.id,
        "object": "chat.completion",
        "created": run.created,
        "model": model_id,
        "choices": [{
            "index": i,
            "message": messages[i][0],
            "logprobs": chat_logprobs(c.logprobs) if body.logprobs else None,
            "finish_reason": messages[i][1],
        } for i, c in enumerate(run.choices)],
        "usage": usage_dict(run.final.usage),
        "service_tier": run.tier,
        "system_fingerprint": FINGERPRINT,
    }, headers=_headers(run))


async def _chat_chunks(run: Run, plan: structured.Plan) -> AsyncIterator[bytes]:
    body: ChatCompletionRequest = run.body  # type: ignore[assignment]
    out = structured.StreamDeltas(plan, run.req.n)  # text -> content / tool-call deltas
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[dict], usage: dict | None = None, last: bool = False) -> bytes:
        c = {"id": run.id, "object": "chat.completion.chunk", "created": run.created,
             "model": run.model_id, "system_fingerprint": FINGERPRINT,
             "service_tier": run.tier, "choices": choices}
        if include_usage:
            c["usage"] = usage if last else None
        return sse(c)

    for i in range(run.req.n):
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                      "logprobs": None, "finish_reason": None}])
    async for ev in run.events():
        if isinstance(ev, Delta):
            if not ev.text and not ev.logprobs:
                continue
            lp = chat_logprobs(ev.logprobs) if ev.logprobs else None
            for delta in out.feed(ev.index, ev.text):
                yield chunk([{"index": ev.index, "delta": delta, "logprobs": lp,
                              "finish_reason": None}])
                lp = None
        elif isinstance(ev, ChoiceFinished):
            rest, reason = out.finish(ev.index, ev.reason)
            for delta in rest:
                yield chunk([{"index": ev.index, "delta": delta, "logprobs": None,
                              "finish_reason": None}])
            yield chunk([{"index": ev.index, "delta": {}, "logprobs": None,
                          "finish_reason": reason}])
        elif isinstance(ev, Finished) and include_usage:
            yield chunk([], usage_dict(ev.usage), last=True)


# ---- completions --------------------------------------------------------------


def _prompts(body: CompletionRequest, backend: Backend) -> list[list[int]]:
    p = body.prompt
    if isinstance(p, str):
        return [backend.tokenize(p)]
    if all(isinstance(x, int) for x in p):
        return [list(p)]  # type: ignore[arg-type]
    if all(isinstance(x, str) for x in p):
        return [backend.tokenize(x) for x in p]  # type: ignore[arg-type]
    return [list(x) for x in p]  # type: ignore[union-attr]


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request,
                      state: AppState = Depends(app_state)) -> Response:
    backend = backend_for(body, state, Capability.COMPLETIONS)
    if body.suffix:
        raise InvalidRequest("suffix is not supported by this model", "suffix")
    prompts = _prompts(body, backend)
    if len(prompts) != 1:
        raise InvalidRequest("send one prompt per request (batch several with /v1/batches)",
                             "prompt")
    prompt = prompts[0]
    n_vocab = backend.info.n_vocab
    if any(not 0 <= t < n_vocab for t in prompt):
        raise InvalidRequest(f"prompt token ids must be in [0, {n_vocab})", "prompt")
    want_lp = body.logprobs is not None
    req = build_request(body, prompt, state, backend,
                        body.max_tokens if body.max_tokens else 16, want_lp, body.logprobs or 0)
    run = Run(request, state, backend, "/v1/completions", body, req, "cmpl")
    model_id = run.model_id
    echo = backend.detokenize(prompt) if body.echo else ""
    if body.stream:
        return await _stream(run, _completion_chunks(run, echo))
    try:
        await run.collect()
    except ClientGone:
        return Response(status_code=499)
    except EngineError as exc:
        return engine_error_response(exc)
    assert run.final is not None
    return JSONResponse({
        "id": run.id,
        "object": "text_completion",
        "created": run.created,
        "model": model_id,
        "choices": [{
            "index": i,
            "text": echo + c.text,
            "logprobs": completion_logprobs(c.logprobs, len(echo)) if want_lp else None,
            "finish_reason": c.finish_reason,
        } for i, c in enumerate(run.choices)],
        "usage": usage_dict(run.final.usage),
        "service_tier": run.tier,
        "system_fingerprint": FINGERPRINT,
    }, headers=_headers(run))


async def _completion_chunks(run: Run, echo: str) -> AsyncIterator[bytes]:
    body: CompletionRequest = run.body  # type: ignore[assignment]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    offsets = [len(echo)] * run.req.n

    def chunk(choices: list[dict], usage: dict | None = None, last: bool = False) -> bytes:
        c = {"id": run.id, "object": "text_completion", "created": run.created,
             "model": run.model_id, "system_fingerprint": FINGERPRINT,
             "service_tier": run.tier, "choices": choices}
        if include_usage:
            c["usage"] = usage if last else None
        return sse(c)

    if echo:
        for i in range(run.req.n):
            yield chunk([{"index": i, "text": echo, "logprobs": None, "finish_reason": None}])
    async for ev in run.events():
        if isinstance(ev, Delta):
            lp = None
            if ev.logprobs:
                lp = completion_logprobs(ev.logprobs, offsets[ev.index])
            offsets[ev.index] += len(ev.text)
            yield chunk([{"index": ev.index, "text": ev.text, "logprobs": lp,
                          "finish_reason": None}])
        elif isinstance(ev, ChoiceFinished):
            yield chunk([{"index": ev.index, "text": "", "logprobs": None,
                          "finish_reason": ev.reason}])
        elif isinstance(ev, Finished) and include_usage:
            yield chunk([], usage_dict(ev.usage), last=True)


# ---- streaming -------------------------------------------------------------------


async def _stream(run: Run, chunks: AsyncIterator[bytes]) -> Response:
    """Start an SSE response, but only once the engine has accepted the request.

    A flex request may still be refused (429) while it waits for capacity;
    that must be an HTTP status, not an error inside a 200 stream.
    """
    first: list[bytes] = []
    try:
        async for b in chunks:
            first.append(b)
            if len(first) > run.req.n:  # role chunks, then the engine's first event
                break
            if run.final is not None:
                break
    except EngineError as exc:
        return engine_error_response(exc)

    async def body() -> AsyncIterator[bytes]:
        try:
            for b in first:
                yield b
            async for b in chunks:
                yield b
        except EngineError as exc:
            yield sse(error_body(str(exc), exc.type, exc.param, exc.code))
        yield sse("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"x-request-id": run.id, "cache-control": "no-cache",
                                      "x-golive-service-tier": run.tier})


# ---- models ----------------------------------------------------------------------


def _model_obj(backend: Backend, state: AppState) -> dict:
    info = backend.info
    # `kind`, `capabilities` and `aliases` are extra fields: the openai client keeps them
    # (model.model_extra) and ignores them otherwise
    return {"id": info.id, "object": "model", "created": int(state.started),
            "owned_by": "golive", "kind": info.kind.value,
            "capabilities": sorted(c.value for c in info.capabilities),
            "aliases": sorted(info.aliases), "max_context": info.max_context}


@router.get("/v1/models")
async def list_models(state: AppState = Depends(app_state)) -> dict:
    return {"object": "list", "data": [_model_obj(b, state) for b in state.models]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, state: AppState = Depends(app_state)) -> Response:
    backend = state.models.get(model_id)
    if backend is None:
        return JSONResponse(error_body(f"The model '{model_id}' does not exist", param="model",
                                       code="model_not_found"), status_code=404)
    return JSONResponse(_model_obj(backend, state))


def _model_health(backend: Backend) -> dict:
    st = backend.stats()
    out: dict = {"kind": backend.info.kind.value, **backend.info.details}
    if st is not None:
        out.update(running=st.running, waiting=sum(st.waiting.values()), slots=st.slots,
                   kv_used=st.kv_used, kv_size=st.kv_size)
    return out


@router.get("/health")
async def health(state: AppState = Depends(app_state)) -> dict:
    """The server and each model; the top-level figures are the default model's (and
    `running`/`waiting` the sum over models, so one number says whether it is idle)."""
    models = {b.info.id: _model_health(b) for b in state.models}
    default = models[state.models.default.info.id]
    return {"status": "ok", "model": state.models.default.info.id,
            "weights": default.get("weights", "original"),
            "running": sum(m.get("running", 0) for m in models.values()),
            "waiting": sum(m.get("waiting", 0) for m in models.values()),
            "uptime_s": round(time.time() - state.started, 1),
            "models": models}
