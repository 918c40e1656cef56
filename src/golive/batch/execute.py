"""Runs one batch line through the server's own request handling, at the batch tier.

Each line's body is POSTed in-process to the app itself (no socket), so a
batch result is exactly what the online endpoint answers, validated the same
way and logged in the request log like any request. A per-process secret
header marks these requests; the middleware below turns it into a context
flag that `resolve_tier` reads, so only the runner can ask for the batch tier.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import secrets
from typing import Any

import httpx

from golive.batch.store import Line, LineResult

BATCH_HEADER = "x-golive-batch-key"
_batch_request: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "golive_batch_request", default=False)


def is_batch_request() -> bool:
    """True while handling a request the batch runner sent."""
    return _batch_request.get()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class BatchTierMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so the flag is set in the handler's own context."""

    def __init__(self, app: Any, secret: str) -> None:
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = dict(scope.get("headers") or ()).get(BATCH_HEADER.encode())
        if key is None or not hmac.compare_digest(key, self.secret):
            await self.app(scope, receive, send)
            return
        token = _batch_request.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            _batch_request.reset(token)


def request_id() -> str:
    return f"batch_req_{secrets.token_hex(12)}"


class AppExecutor:
    """Sends lines to an ASGI app in this process and turns the answers into output lines."""

    def __init__(self, app: Any, secret: str) -> None:
        self.secret = secret
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url="http://golive.batch", timeout=None)

    async def __call__(self, batch_id: str, url: str, line: Line) -> LineResult:
        headers = {BATCH_HEADER: self.secret}
        if not line.body.get("user"):
            headers["x-client-id"] = batch_id  # the request log can tell batches apart
        try:
            resp = await self.client.post(url, json=line.body, headers=headers)
        except httpx.HTTPError as exc:
            return error_result(line, "server_error", f"{type(exc).__name__}: {exc}")
        if resp.status_code == 499:  # the handler saw its caller go: this line was cancelled
            raise asyncio.CancelledError
        try:
            body = resp.json()
        except ValueError:
            return error_result(line, "server_error",
                                f"the endpoint answered {resp.status_code} without JSON")
        return response_result(line, resp.status_code, resp.headers.get("x-request-id"), body)

    async def aclose(self) -> None:
        await self.client.aclose()


def response_result(line: Line, status: int, req_id: str | None, body: Any) -> LineResult:
    """An HTTP answer: 200 goes to the output file, anything else to the error file."""
    output = {
        "id": request_id(),
        "custom_id": line.custom_id,
        "response": {"status_code": status, "request_id": req_id or request_id(), "body": body},
        "error": None,
    }
    usage = body.get("usage") if isinstance(body, dict) and status == 200 else None
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details") or {}
    return LineResult(
        output=output,
        is_error=status != 200,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


def error_result(line: Line, code: str, message: str) -> LineResult:
    """A failure without an HTTP answer: `response` null, `error` {code, message}."""
    return LineResult(
        output={"id": request_id(), "custom_id": line.custom_id, "response": None,
                "error": {"code": code, "message": message}},
        is_error=True,
    )


EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def expired_line(custom_id: str) -> dict[str, Any]:
    return {"id": request_id(), "custom_id": custom_id, "response": None,
            "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE}}
