"""OpenAI Structured Outputs `strict: true` rules, as the API reports them.

The rules themselves are golive.schema_rules (pure, shared with the client-side
patterns); this module words a broken rule as OpenAI does and raises it as the
400 InvalidRequest naming the request field, before anything is compiled.
"""

from __future__ import annotations

from typing import Any

from golive.engine.types import InvalidRequest
from golive.schema_rules import StrictSchemaError, check

PARAM = "response_format"


def check_strict_schema(schema: Any, param: str = PARAM, what: str = PARAM) -> None:
    """Raise InvalidRequest(param=param) if OpenAI strict mode would reject `schema`.

    `what` names the schema in the message as OpenAI does ("response_format 'name'",
    "function 'get_weather'"); `param` is the request field the error points at.
    """
    try:
        check(schema)
    except StrictSchemaError as e:
        raise InvalidRequest(f"Invalid schema for {what} (strict): {e}", param=param) from None
