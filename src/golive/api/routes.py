"""OpenAI routes: chat completions, completions, models."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from golive.api import structured
from golive.api.errors import engine_error_response, error_body
from golive.api.generation import ClientGone, Run, build_request, check_model
from golive.api.render import chat_logprobs, completion_logprobs, sse, usage_dict
from golive.api.schemas import ChatCompletionRequest, CompletionRequest
from golive.engine.types import ChoiceFinished, Delta, EngineError, Finished, InvalidRequest

router = APIRouter()

FINGERPRINT = "fp_golive"


def _headers(run: Run) -> dict[str, str]:
    return {"x-request-id": run.id, "x-golive-cost-usd": f"{getattr(run, 'cost', 0.0):.10f}",
            "x-golive-service-tier": run.tier}


# ---- chat -------------------------------------------------------------------


def _check_chat(body: ChatCompletionRequest) -> None:
    if body.prediction is not None:
        _check_prediction(body)


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
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = request.app.state
    model_id = check_model(body, state)
    _check_chat(body)
    plan = await structured.prepare(body, state.backend)  # response_format, tools: 400 if bad
    prompt = state.backend.render_chat(plan.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    req = build_request(body, prompt, state, max_tokens, body.logprobs, body.top_logprobs or 0)
    req.grammar = plan.grammar
    if body.prediction is not None:
        req.prediction = state.backend.tokenize(body.prediction.text(), add_special=False)
    run = Run(request, "/v1/chat/completions", body, req, model_id, "chatcmpl")
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


def _prompts(body: CompletionRequest, backend) -> list[list[int]]:
    p = body.prompt
    if isinstance(p, str):
        return [backend.tokenize(p)]
    if all(isinstance(x, int) for x in p):
        return [list(p)]  # type: ignore[arg-type]
    if all(isinstance(x, str) for x in p):
        return [backend.tokenize(x) for x in p]  # type: ignore[arg-type]
    return [list(x) for x in p]  # type: ignore[union-attr]


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    state = request.app.state
    model_id = check_model(body, state)
    if body.suffix:
        raise InvalidRequest("suffix is not supported by this model", "suffix")
    prompts = _prompts(body, state.backend)
    if len(prompts) != 1:
        raise InvalidRequest("send one prompt per request (batch several with /v1/batches)",
                             "prompt")
    prompt = prompts[0]
    n_vocab = state.backend.model.n_vocab
    if any(not 0 <= t < n_vocab for t in prompt):
        raise InvalidRequest(f"prompt token ids must be in [0, {n_vocab})", "prompt")
    want_lp = body.logprobs is not None
    req = build_request(body, prompt, state, body.max_tokens if body.max_tokens else 16,
                        want_lp, body.logprobs or 0)
    run = Run(request, "/v1/completions", body, req, model_id, "cmpl")
    echo = state.backend.detokenize(prompt) if body.echo else ""
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


def _model_obj(state) -> dict:
    return {"id": state.backend.model_id, "object": "model", "created": int(state.started),
            "owned_by": "golive"}


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_model_obj(request.app.state)]}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> Response:
    state = request.app.state
    if model_id not in state.backend.aliases:
        return JSONResponse(error_body(f"The model '{model_id}' does not exist", param="model",
                                       code="model_not_found"), status_code=404)
    return JSONResponse(_model_obj(state))


@router.get("/health")
async def health(request: Request) -> dict:
    st = request.app.state.backend.engine.stats()
    model = request.app.state.backend.model
    return {"status": "ok", "model": request.app.state.backend.model_id,
            "weights": getattr(model, "weights", "original"),
            "running": st.running, "waiting": sum(st.waiting.values()),
            "uptime_s": round(time.time() - request.app.state.started, 1)}


