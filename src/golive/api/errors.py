"""OpenAI's error object for every failure: {"error": {message, type, param, code}}."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from golive.engine.types import EngineError, ResourceUnavailable


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status,
                        headers=headers)


def engine_error_response(exc: EngineError) -> JSONResponse:
    headers = None
    if isinstance(exc, ResourceUnavailable):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    return error_response(exc.status, str(exc), exc.type, exc.param, exc.code, headers)


def _loc_to_param(loc: tuple) -> str | None:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in ("str", "list[str]", "int", "float", "bool") or "[" in str(p) or "function-" in str(p):
            continue  # pydantic's union-member names are noise to a client
        else:
            out += f".{p}" if out else str(p)
    return out or None


def validation_message(err: dict) -> tuple[str, str | None]:
    param = _loc_to_param(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "json_invalid":
        return ("We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload.)", None)
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    msg = err.get("msg", "invalid value")
    got = err.get("input")
    shown = json.dumps(got)[:80] if isinstance(got, (int, float, str, bool, type(None))) else None
    text = f"Invalid value for '{param}': {msg}."
    if shown is not None:
        text += f" Got {shown}."
    return text, param


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        # JSON syntax errors first; otherwise the first field error names the field.
        first = next((e for e in errs if e.get("type") == "json_invalid"), errs[0] if errs else {})
        message, param = validation_message(first)
        return error_response(400, message, param=param)

    @app.exception_handler(EngineError)
    async def _engine(_: Request, exc: EngineError) -> JSONResponse:
        return engine_error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return error_response(exc.status_code, str(exc.detail), param=None, code=code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
