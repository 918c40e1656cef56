"""OpenAI request bodies, validated; errors name the offending field.

Unknown fields are ignored rather than refused, as clients and SDK versions
send fields we have no use for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

ServiceTier = Literal["auto", "default", "flex", "priority", "scale"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a '{self.role}' message needs content")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(_Body):
    include_usage: bool = False


class Prediction(_Body):
    type: Literal["content"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content


Stop = str | Annotated[list[str], Field(max_length=4)] | None


class _Sampling(_Body):
    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: Stop = None
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    service_tier: ServiceTier | None = None
    # golive extension: seconds a flex request may wait for capacity before a 429
    queue_timeout: float | None = Field(default=None, ge=0.0, le=3600.0)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Stop) -> list[str]:
        if v is None:
            return []
        stops = [v] if isinstance(v, str) else v
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops


    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v and len(v) > 300:
            raise ValueError("logit_bias may hold at most 300 tokens")
        for k in v or {}:
            if not k.isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {k!r}")
        return v


# ---- structured outputs and tools (checked further in api/structured.py) -----

# OpenAI: a-z, A-Z, 0-9, underscores and dashes, at most 64 characters
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class JSONSchemaFormat(_Body):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    # `schema` would shadow a BaseModel attribute
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class FunctionDefinition(_Body):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: FunctionName


TOOL_CHOICE_MODES = ("none", "auto", "required")


def _tool_choice_shape(v: Any) -> Any:
    """One clear message for a bad tool_choice instead of one per union member."""
    named = '{"type": "function", "function": {"name": "..."}}'
    if isinstance(v, str) and v not in TOOL_CHOICE_MODES:
        raise PydanticCustomError(
            "tool_choice", "must be 'none', 'auto', 'required' or {named}", {"named": named})
    if isinstance(v, dict):
        fn = v.get("function")
        if v.get("type") != "function" or not isinstance(fn, dict) or not isinstance(
                fn.get("name"), str):
            raise PydanticCustomError(
                "tool_choice", "a named tool choice must be {named}", {"named": named})
    return v


ToolChoice = Annotated[
    Literal["none", "auto", "required"] | NamedToolChoice, BeforeValidator(_tool_choice_shape)
]


class ToolCallFunction(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    """An assistant message's tool call, as sent back in the conversation."""

    id: str
    type: Literal["function"]
    function: ToolCallFunction


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    prediction: Prediction | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be empty")
        return v
