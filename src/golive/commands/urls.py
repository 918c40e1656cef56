"""Base URLs as users type them: with or without `/v1`, with or without a trailing slash."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class ServerError(Exception):
    """A server that cannot be reached or answered an error; str() is one line."""


def server_base(url: str) -> str:
    """The server's root: `http://h:8000/v1/` and `http://h:8000` -> `http://h:8000`."""
    u = url.strip()
    if "://" not in u:
        u = "http://" + u
    parts = urlsplit(u)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


def api_base(url: str) -> str:
    """The OpenAI-style API base. A bare host (no path) or a `/v1` URL gets golive's `/v1`;
    any other path is another provider's own API base and is kept as given."""
    u = url.strip()
    if "://" not in u:
        u = "http://" + u
    path = urlsplit(u).path.rstrip("/")
    if path == "" or path.endswith("/v1"):
        return server_base(u) + "/v1"
    return u.rstrip("/")


def error_line(status: int, body: str) -> str:
    """An HTTP error answer as one line: OpenAI's error message when there is one."""
    import json

    message = body.strip()
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
        elif isinstance(err, str):
            message = err
        elif isinstance(data, dict) and data.get("detail"):
            message = str(data["detail"])
    except ValueError:
        pass
    message = " ".join(message.split())
    if len(message) > 300:
        message = message[:297] + "..."
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def first_model(api: str, timeout: float = 10.0) -> str:
    """The first model id a server at `api` (an api_base) lists; ServerError otherwise."""
    import httpx

    try:
        r = httpx.get(api + "/models", timeout=timeout)
    except httpx.HTTPError as e:
        raise ServerError(f"cannot reach {api}: {e or type(e).__name__}") from None
    if r.status_code != 200:
        raise ServerError(f"{api}/models answered {error_line(r.status_code, r.text)}")
    try:
        models = r.json()["data"]
        return models[0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ServerError(f"{api}/models did not answer an OpenAI model list "
                          "(is this a golive or OpenAI-compatible server?)") from None
