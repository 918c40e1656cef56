"""OpenAI `/v1/batches`: create, retrieve, cancel, list.

Creating a batch only checks the request and stores it as `validating`; the
runner validates the input file and runs it, as on OpenAI, where a bad file
shows up as a `failed` batch with `errors`, not as an HTTP error.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from golive.api.errors import error_response
from golive.api.state import app_state
from golive.api.files import param_error
from golive.batch import params
from golive.batch import store as st
from golive.batch.objects import batch_object, list_object
from golive.batch.params import ParamError
from golive.batch.service import BatchService
from golive.batch.store import BatchRow
from golive.batch.validation import type_message

router = APIRouter()

# OpenAI's batchable endpoints, in the order its messages list them; a batch
# may target those of them this server actually serves.
BATCHABLE = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
             "/v1/moderations")
CANCELLABLE = (st.VALIDATING, st.IN_PROGRESS)


def _service(request: Request) -> BatchService:
    return app_state(request).batch


def _post_paths(routes, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for r in routes:
        if isinstance(r, APIRoute):
            if "POST" in r.methods:
                out.add(prefix + r.path)
        elif getattr(r, "original_router", None) is not None:
            # FastAPI keeps included routers as branches; their prefix is on the branch.
            ctx = getattr(r, "include_context", None)
            out |= _post_paths(r.original_router.routes, prefix + (getattr(ctx, "prefix", "") or ""))
    return out


def served_endpoints(app) -> list[str]:
    """The batchable endpoints this app has a POST route for."""
    posts = _post_paths(app.routes)
    return [e for e in BATCHABLE if e in posts]


def no_such_batch(batch_id: str, param: str = "batch_id") -> JSONResponse:
    return error_response(404, f"No batch found with id '{batch_id}'.", param=param)


@router.post("/v1/batches")
async def create_batch(request: Request) -> Response:
    svc = _service(request)
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return error_response(400, "We could not parse the JSON body of your request. The "
                              "OpenAI API expects a JSON payload.")
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.")
    try:
        input_file_id = params.string(params.required(body, "input_file_id"), "input_file_id")
        endpoint = params.one_of(params.string(params.required(body, "endpoint"), "endpoint"),
                                 "endpoint", served_endpoints(request.app))
        window = params.one_of(params.string(params.required(body, "completion_window"),
                                             "completion_window"), "completion_window", ("24h",))
        meta = params.metadata(body.get("metadata"))
        oea = body.get("output_expires_after")
        if oea is not None and not isinstance(oea, dict):
            raise ParamError(type_message("output_expires_after", "object", oea),
                             "output_expires_after", "invalid_type")
        output_ttl = params.expires_after((oea or {}).get("anchor"), (oea or {}).get("seconds"),
                                          "output_expires_after") if oea else None
    except ParamError as exc:
        return param_error(exc)
    now = st.now_s()
    row = BatchRow(
        id=f"batch_{secrets.token_hex(12)}", created=time.time(), endpoint=endpoint,
        input_file_id=input_file_id, completion_window=window, status=st.VALIDATING,
        created_at=now, expires_at=now + int(svc.settings.window_s), metadata=meta,
        output_expires_after=output_ttl)
    await asyncio.to_thread(svc.store.add_batch, row)
    svc.wake()
    return JSONResponse(batch_object(row))


@router.get("/v1/batches")
def list_batches(request: Request, after: str | None = None, limit: str = "20") -> Response:
    store = _service(request).store
    try:
        n = params.integer(limit, "limit", 1, 100)
    except ParamError as exc:
        return param_error(exc)
    cursor = None
    if after:
        cursor = store.get_batch(after)
        if cursor is None:
            return no_such_batch(after, "after")
    rows, more = store.list_batches(n, cursor)
    return JSONResponse(list_object([batch_object(b) for b in rows], more))


@router.get("/v1/batches/{batch_id}")
def retrieve_batch(batch_id: str, request: Request) -> Response:
    b = _service(request).store.get_batch(batch_id)
    return JSONResponse(batch_object(b)) if b else no_such_batch(batch_id)


@router.post("/v1/batches/{batch_id}/cancel")
def cancel_batch(batch_id: str, request: Request) -> Response:
    svc = _service(request)
    store = svc.store
    if not store.set_status(batch_id, st.CANCELLING, only_from=CANCELLABLE,
                            cancelling_at=st.now_s()):
        b = store.get_batch(batch_id)
        if b is None:
            return no_such_batch(batch_id)
        if b.status not in (st.CANCELLING, st.CANCELLED):
            return error_response(409, f"Cannot cancel a batch with status '{b.status}'.")
    svc.wake()
    return JSONResponse(batch_object(store.get_batch(batch_id)))
