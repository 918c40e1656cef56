"""Where every finished request goes: cost, metrics, the request log."""

from __future__ import annotations

from collections import deque

from golive.observe.cost import PriceTable
from golive.observe.metrics import Metrics
from golive.observe.record import RequestRecord
from golive.observe.requestlog import RequestLog

RECENT = 4096  # finished requests kept in memory for live views (the dashboard's window)


class Observer:
    def __init__(self, metrics: Metrics, prices: PriceTable, log: RequestLog | None,
                 log_bodies: bool = False, tier_policy=None):
        self.metrics = metrics
        self.prices = prices
        self.log = log
        self.log_bodies = log_bodies
        self.tier_policy = tier_policy
        # (record, choices): per-request timings for live percentiles without a
        # database round trip; choices lets readers turn completion tokens into
        # tokens per stream.
        self.recent: deque[tuple[RequestRecord, int]] = deque(maxlen=RECENT)

    def done(self, rec: RequestRecord, choices: int = 1,
             bodies: tuple[str, str] | None = None) -> None:
        """A finished request: `choices` is its n, `bodies` its (request, response)
        JSON when bodies are logged."""
        # Refused and failed requests are not charged (OpenAI: flex 429s cost nothing).
        if rec.status == 200:
            rec.cost_usd = self.prices.cost(
                rec.model, rec.tier_served, rec.prompt_tokens, rec.cached_tokens,
                rec.completion_tokens, rec.rejected_prediction_tokens)
        if self.log_bodies and bodies is not None:
            rec.request_body, rec.response_body = bodies
        self.metrics.done(rec)
        self.recent.append((rec, max(choices, 1)))
        if self.tier_policy is not None:
            self.tier_policy.charge(rec.tier_served, rec.prompt_tokens + rec.completion_tokens)
        if self.log is not None:
            self.log.write_async(rec)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
