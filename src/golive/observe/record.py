"""One finished request as the request log, metrics and cost model see it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRecord:
    id: str
    created: float  # unix time the request arrived
    endpoint: str  # "/v1/chat/completions", "/v1/completions", "batch"
    model: str
    tier_requested: str  # what the client asked for ("auto", "priority", ...)
    tier_served: str  # what it got ("default", "priority", "flex", "batch")
    status: int = 200  # HTTP status returned
    queued_s: float = 0.0
    ttft_s: float | None = None
    total_s: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    cost_usd: float = 0.0
    finish_reason: str | None = None
    error: str | None = None
    client_id: str | None = None  # API key / user / x-client-id
    stream: bool = False
    # bodies only when the user turns body logging on
    request_body: str | None = None
    response_body: str | None = None
    extra: dict = field(default_factory=dict)
