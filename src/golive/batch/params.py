"""Checks of files and batches request parameters, failing with OpenAI's wording.

Each check raises ParamError, which the routers turn into a 4xx OpenAI error
object naming the parameter.
"""

from __future__ import annotations

from typing import Any

from golive.batch.validation import type_message


class ParamError(Exception):
    def __init__(self, message: str, param: str | None, code: str | None = None,
                 status: int = 400):
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


def supported(values: list[str] | tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def required(body: dict[str, Any], name: str) -> Any:
    if body.get(name) is None:
        raise ParamError(f"Missing required parameter: '{name}'.", name,
                         "missing_required_parameter")
    return body[name]


def string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ParamError(type_message(name, "string", value), name, "invalid_type")
    return value


def one_of(value: str, name: str, allowed: list[str] | tuple[str, ...]) -> str:
    if value not in allowed:
        raise ParamError(f"Invalid value: '{value}'. Supported values are: "
                         f"{supported(allowed)}.", name, "invalid_value")
    return value


def integer(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(type_message(name, "integer", value), name, "invalid_type")
    if value < lo:
        raise ParamError(f"Invalid '{name}': integer below minimum value. Expected a value >= "
                         f"{lo}, but got {value} instead.", name, "integer_below_min_value")
    if value > hi:
        raise ParamError(f"Invalid '{name}': integer above maximum value. Expected a value <= "
                         f"{hi}, but got {value} instead.", name, "integer_above_max_value")
    return value


def metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's metadata: at most 16 string pairs, keys up to 64 and values up to 512 chars."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ParamError(type_message("metadata", "object", value), "metadata", "invalid_type")
    if len(value) > 16:
        raise ParamError("Invalid 'metadata': too many properties. Expected an object with at "
                         f"most 16 properties, but got an object with {len(value)} properties "
                         "instead.", "metadata", "object_above_max_properties")
    for k, v in value.items():
        if len(k) > 64:
            raise ParamError(f"Invalid 'metadata': key too long. Expected keys of at most 64 "
                             f"characters, but got a key with length {len(k)} instead.",
                             "metadata", "invalid_value")
        if not isinstance(v, str):
            raise ParamError(type_message(f"metadata.{k}", "string", v), f"metadata.{k}",
                             "invalid_type")
        if len(v) > 512:
            raise ParamError(f"Invalid 'metadata.{k}': string too long. Expected a string with "
                             f"maximum length 512, but got a string with length {len(v)} "
                             "instead.", f"metadata.{k}", "string_above_max_length")
    return value


def expires_after(anchor: Any, seconds: Any, name: str) -> int | None:
    """`{anchor: "created_at", seconds: 3600..2592000}`; None when not given."""
    if anchor is None and seconds is None:
        return None
    if anchor is None:
        _missing(f"{name}.anchor")
    one_of(string(anchor, f"{name}.anchor"), f"{name}.anchor", ("created_at",))
    if seconds is None:
        _missing(f"{name}.seconds")
    return integer(seconds, f"{name}.seconds", 3600, 2_592_000)

def _missing(name: str) -> str:
    raise ParamError(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
