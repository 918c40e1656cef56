"""OpenAI `/v1/files`: upload (multipart), list, retrieve, delete, content."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from golive.api.errors import error_response
from golive.api.state import app_state
from golive.batch import params
from golive.batch.files import BATCH_FILE_TTL, UPLOAD_PURPOSES, TooLarge, new_file_id
from golive.batch.objects import file_object, list_object
from golive.batch.params import ParamError
from golive.batch.service import BatchService
from golive.batch.store import FileRow

router = APIRouter()

# Multipart framing around the file's bytes: a request this much over the limit
# is refused from its Content-Length alone, before any of it is stored.
_FRAMING_SLACK = 1024 * 1024


def _service(request: Request) -> BatchService:
    return app_state(request).batch


def param_error(exc: ParamError) -> JSONResponse:
    return error_response(exc.status, str(exc), param=exc.param, code=exc.code)


def no_such_file(file_id: str, param: str = "id") -> JSONResponse:
    return error_response(404, f"No such File object: {file_id}", param=param)


def too_large(limit: int) -> JSONResponse:
    return error_response(413, f"File is too large. The maximum size is {limit} bytes.",
                          param="file", code="file_too_large")


@router.post("/v1/files")
async def create_file(request: Request) -> Response:
    svc = _service(request)
    limit = svc.settings.max_upload_bytes
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > limit + _FRAMING_SLACK:
        return too_large(limit)
    try:
        form = await request.form(max_files=1, max_fields=16)
    except Exception as exc:  # malformed multipart: the client's fault, say so
        return error_response(400, f"Could not parse the multipart form: {exc}", param="file")
    try:
        return await _store_upload(svc, form, limit)
    finally:
        await form.close()  # the spooled temporary file, whatever happened


async def _store_upload(svc: BatchService, form, limit: int) -> Response:
    try:
        upload = form.get("file")
        if upload is None:
            params.required({}, "file")
        if not isinstance(upload, UploadFile):
            raise ParamError("Invalid type for 'file': expected a file upload, but got a "
                             "string instead.", "file", "invalid_type")
        purpose = params.one_of(params.string(params.required(dict(form), "purpose"),
                                              "purpose"), "purpose", UPLOAD_PURPOSES)
        ttl = params.expires_after(form.get("expires_after[anchor]"),
                                   form.get("expires_after[seconds]"), "expires_after")
    except ParamError as exc:
        return param_error(exc)
    if ttl is None and purpose == "batch":
        ttl = BATCH_FILE_TTL
    file_id = new_file_id()
    try:
        size = await asyncio.to_thread(svc.files.save_stream, file_id, upload.file, limit)
    except TooLarge:
        return too_large(limit)
    created = time.time()
    row = FileRow(id=file_id, created=created, bytes=size,
                  filename=upload.filename or "upload", purpose=purpose,
                  expires_at=int(created) + ttl if ttl else None, status="processed")
    try:
        await asyncio.to_thread(svc.store.add_file, row)
    except BaseException:
        svc.files.delete(file_id)  # no bytes without their row
        raise
    return JSONResponse(file_object(row))


@router.get("/v1/files")
def list_files(request: Request, purpose: str | None = None, limit: str = "10000",
               order: str = "desc", after: str | None = None) -> Response:
    store = _service(request).store
    try:
        n = params.integer(limit, "limit", 1, 10_000)
        params.one_of(order, "order", ("asc", "desc"))
    except ParamError as exc:
        return param_error(exc)
    cursor = None
    if after:
        cursor = store.get_file(after)
        if cursor is None:
            return no_such_file(after, "after")
    rows, more = store.list_files(purpose, n, order, cursor)
    return JSONResponse(list_object([file_object(f) for f in rows], more))


@router.get("/v1/files/{file_id}")
def retrieve_file(file_id: str, request: Request) -> Response:
    f = _service(request).store.get_file(file_id)
    return JSONResponse(file_object(f)) if f else no_such_file(file_id)


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, request: Request) -> Response:
    svc = _service(request)
    # Row first: a crash in between leaves unreachable bytes, never a row without them.
    if not svc.store.delete_file(file_id):
        return no_such_file(file_id)
    svc.files.delete(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, request: Request) -> Response:
    svc = _service(request)
    f = svc.store.get_file(file_id)
    if f is None or not svc.files.exists(file_id):
        return no_such_file(file_id)
    return FileResponse(svc.files.path(file_id), media_type="application/octet-stream",
                        filename=f.filename)
