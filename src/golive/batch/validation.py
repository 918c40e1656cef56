"""Validation of a batch input file, line by line, with OpenAI's error entries.

Each problem is one `{code, line, message, param}` entry, worded as the
OpenAI Batch API words it. A file with any error fails the whole batch, so
every error is collected (up to MAX_ERRORS), not only the first. What lies
inside a line's body beyond the model (sampling values, message shapes) is
left to the endpoint itself when the line runs: its 400 goes to the error
file, as on OpenAI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from golive.batch.store import Line

MAX_ERRORS = 1000

# What each endpoint calls itself in messages, and the body field it cannot do without.
_ENDPOINT_NAMES = {
    "/v1/chat/completions": ("Chat Completions", "messages"),
    "/v1/completions": ("Completions", "prompt"),
    "/v1/embeddings": ("Embeddings", "input"),
    "/v1/responses": ("Responses", "input"),
}


@dataclass
class Checked:
    lines: list[Line] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None  # the one model every line asks for

    def error(self, code: str, message: str, line: int | None = None,
              param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "line": line, "message": message, "param": param})


def json_type(value: Any) -> str:
    """OpenAI's names for JSON types in 'expected X, but got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def type_message(param: str, expected: str, got: Any) -> str:
    kind = json_type(got)
    return (f"Invalid type for '{param}': expected {_article(expected)} {expected}, "
            f"but got {_article(kind)} {kind} instead.")


def check_file(data: bytes, endpoint: str, resolve_model: Callable[[str], str | None],
               max_requests: int) -> Checked:
    """Parse and check every line of a batch input file.

    `resolve_model` maps a requested model name to the served model id, or
    None when this server does not serve it.
    """
    out = Checked()
    seen: dict[str, int] = {}
    first_model: str | None = None  # the served model id
    first_name: str | None = None  # the name the first line gave it
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        out.error("invalid_file", f"The batch input file is not valid UTF-8 ({exc.reason} at "
                  f"byte {exc.start}).")
        return out
    raw_lines = text.split("\n")
    name, needed = _ENDPOINT_NAMES.get(endpoint, (endpoint, None))
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue  # blank lines (the trailing newline above all) carry no request
        try:
            obj = json.loads(raw)
        except ValueError:
            out.error("invalid_json_line", "This line is not parseable as valid JSON.", number)
            continue
        if not isinstance(obj, dict):
            out.error("invalid_request", "Each line must be a JSON object with custom_id, "
                      "method, url and body.", number)
            continue
        ok = True
        for key in ("custom_id", "method", "url", "body"):
            if key not in obj or obj[key] is None:
                out.error("missing_required_parameter", f"Missing required parameter: '{key}'.",
                          number, key)
                ok = False
        if not ok:
            continue
        custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
        for key, value, kind in (("custom_id", custom_id, str), ("method", method, str),
                                 ("url", url, str), ("body", body, dict)):
            if not isinstance(value, kind):
                expected = "string" if kind is str else "object"
                out.error("invalid_type", type_message(key, expected, value), number, key)
                ok = False
        if not ok:
            continue
        if method != "POST":
            out.error("invalid_value", f"Invalid value: '{method}'. Supported values are: "
                      "'POST'.", number, "method")
            ok = False
        if url != endpoint:
            out.error("invalid_url", "The URL provided for this request does not match the "
                      "batch endpoint.", number, "url")
            ok = False
        if custom_id in seen:
            out.error("duplicate_custom_id", f"The custom_id '{custom_id}' for this request is a "
                      "duplicate of another request. The custom_id parameter must be unique "
                      "for each request in a batch.", number, "custom_id")
            ok = False
        else:
            seen[custom_id] = number
        if body.get("stream"):
            out.error("streaming_unsupported", f"{name}: Streaming is not supported in the "
                      "Batch API.", number, "body.stream")
            ok = False
        if needed and needed not in body:
            out.error("invalid_request", f"{needed.capitalize()} parameter is required.",
                      number, f"body.{needed}")
            ok = False
        model = body.get("model")
        if model is None:
            out.error("invalid_request", "Model parameter is required.", number, "body.model")
            ok = False
        elif not isinstance(model, str):
            out.error("invalid_type", type_message("body.model", "string", model), number,
                      "body.model")
            ok = False
        elif first_name is not None and model != first_name:
            # Compared as written, as OpenAI does: one file, one model name.
            out.error("mismatched_model", f"The model '{model}' for this request does not "
                      "match the rest of the batch. Each batch must contain requests for a "
                      "single model.", number, "body.model")
            ok = False
        else:
            first_name = model
            served = resolve_model(model)
            if served is None:
                out.error("model_not_found", f"The provided model '{model}' is not supported by "
                          "the Batch API.", number, "body.model")
                ok = False
            else:
                first_model = served
        if ok:
            out.lines.append(Line(number, custom_id, body))
    if not out.errors:
        if not out.lines:
            out.error("empty_file", "The batch input file is empty.")
        elif len(out.lines) > max_requests:
            out.error("too_many_requests", f"The batch input file holds {len(out.lines)} "
                      f"requests; a batch may hold at most {max_requests}.")
    out.model = first_model
    return out
