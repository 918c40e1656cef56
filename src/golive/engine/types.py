"""The seam between the API layer and the engine: requests in, events out.

Everything downstream (request log, metrics, cost, audit) reads only these
types, never the engine's internals.
"""

from __future__ import annotations

import enum
import itertools
import json
import threading
import time
from dataclasses import dataclass, field


class Tier(enum.IntEnum):
    """Scheduling tiers, lower value = admitted first."""

    PRIORITY = 0
    DEFAULT = 1
    FLEX = 2
    BATCH = 3

    @property
    def wire(self) -> str:
        return self.name.lower()


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: dict[int, float] | None = None


_ids = itertools.count(1)


@dataclass(slots=True)
class GenerationRequest:
    """One generation of `n` choices from one prompt, already tokenized."""

    prompt: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    tier: Tier = Tier.DEFAULT
    # flex only: seconds it may wait for a slot before it is refused (429)
    queue_timeout: float | None = None
    # predicted output (token ids), used as a speculative draft
    prediction: list[int] | None = None
    # grammar handle from engine.grammar (None = unconstrained)
    grammar: object | None = None
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.completion_tokens += other.completion_tokens
        self.accepted_prediction_tokens += other.accepted_prediction_tokens
        self.rejected_prediction_tokens += other.rejected_prediction_tokens


@dataclass(slots=True)
class Timings:
    """Seconds, measured from the request's arrival at the engine."""

    queued: float = 0.0
    first_token: float | None = None
    total: float = 0.0


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A grammar as the API asks for it; a backend compiles it (engine: llguidance).

    kind: "json_schema" (`source` is the schema dict), "json_object", or "lark"
    (`source` is Lark text in llguidance's dialect, which may embed `%json`
    schemas). `strict` applies OpenAI's strict mode; `param` and `what` name the
    field an error points at. `max_tokens` lets matchers steer toward closing
    the JSON near the end of the budget.
    """

    kind: str
    source: object = None
    strict: bool = False
    param: str = "response_format"
    what: str = "response_format"
    max_tokens: int | None = None


# Compact JSON: llguidance allows free whitespace between tokens by default,
# which the model may spend tokens on; with it off, output is as short as it gets.
JSON_GRAMMAR_OPTIONS: dict[str, object] = {"whitespace_flexible": False}


def canonical_json(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def lark_json(schema: dict, strict: bool = False) -> str:
    """`%json {...}` for a Lark GrammarSpec: the schema with the compact, strict-or-lenient
    options a json_schema spec gets (llguidance reads them from a top-level "x-guidance")."""
    options = {**JSON_GRAMMAR_OPTIONS, "lenient": not strict, **schema.get("x-guidance", {})}
    return "%json " + canonical_json({**schema, "x-guidance": options})


@dataclass(slots=True)
class EngineStats:
    """What an engine reports at scrape time (health, metrics, dashboard, batch sizing)."""

    slots: int
    running: int
    waiting: dict[str, int]
    running_by_tier: dict[str, int]
    kv_used: int
    kv_size: int
    cache_entries: int
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    steps: int
    preemptions: int
    aborted_steps: int
    draft_proposed: int
    draft_accepted: int


# ---- events, engine -> caller ---------------------------------------------


@dataclass(slots=True)
class Delta:
    index: int  # choice index
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class TierChange:
    """The sequence was preempted (paused) or resumed; the stream just pauses."""

    index: int
    preempted: bool


@dataclass(slots=True)
class ChoiceFinished:
    index: int
    reason: str  # "stop" | "length" | "tool_calls"
    usage: Usage


@dataclass(slots=True)
class Finished:
    """Last event of a request: all choices done."""

    usage: Usage
    timings: Timings
    tier: Tier


Event = Delta | TierChange | ChoiceFinished | Finished


# ---- typed errors, mapped to OpenAI error objects by the api layer --------


class EngineError(Exception):
    status = 500
    code: str | None = None
    param: str | None = None
    type = "server_error"


class InvalidRequest(EngineError):
    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


class ResourceUnavailable(EngineError):
    """Flex request that found no capacity within its queue budget (not charged)."""

    status = 429
    type = "resource_unavailable"
    code = "resource_unavailable"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class ModelNotFound(InvalidRequest):
    status = 404

    def __init__(self, model: str, available: list[str]):
        super().__init__(f"The model '{model}' does not exist or you do not have access to it. "
                         f"Available: {', '.join(available)}.", "model", "model_not_found")


class Unsupported(InvalidRequest):
    """The model asked for cannot do what the request needs (a capability it lacks)."""

    def __init__(self, model: str, what: str, param: str):
        super().__init__(f"{what} is not supported by model '{model}'", param,
                         "unsupported_parameter")


class Cancelled(EngineError):
    status = 499
    code = "cancelled"
