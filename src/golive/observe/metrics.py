"""Prometheus metrics: request counters and latency histograms fed by the API,
engine gauges read from each model's backend at scrape time (label `model`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from golive.engine.types import EngineStats
from golive.observe.record import RequestRecord

StatsSource = Callable[[], EngineStats | None]

_LAT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 5)


class Metrics:
    def __init__(self, engines: Mapping[str, StatsSource] | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        m = ["model", "tier"]
        self.requests = Counter("golive_requests", "Requests finished",
                                ["endpoint", "model", "tier", "status"], registry=r)
        self.ttft = Histogram("golive_time_to_first_token_seconds", "Time to first token",
                              m, buckets=_LAT, registry=r)
        self.itl = Histogram("golive_inter_token_latency_seconds", "Gap between streamed tokens",
                             m, buckets=_ITL, registry=r)
        self.latency = Histogram("golive_request_duration_seconds", "End-to-end request time",
                                 m, buckets=_LAT, registry=r)
        self.queued = Histogram("golive_queue_time_seconds", "Time waiting for a slot",
                                m, buckets=_LAT, registry=r)
        self.prompt_tokens = Counter("golive_prompt_tokens", "Prompt tokens", m, registry=r)
        self.cached_tokens = Counter("golive_cached_prompt_tokens",
                                     "Prompt tokens served from the prefix cache", m, registry=r)
        self.completion_tokens = Counter("golive_completion_tokens", "Completion tokens", m,
                                         registry=r)
        self.accepted = Counter("golive_accepted_prediction_tokens", "Draft tokens accepted", m,
                                registry=r)
        self.rejected = Counter("golive_rejected_prediction_tokens", "Draft tokens rejected", m,
                                registry=r)
        self.cost = Counter("golive_cost_usd", "Cost by the price table", m, registry=r)
        if engines:
            r.register(_EngineCollector(engines))

    def first_token(self, model: str, tier: str, seconds: float) -> None:
        self.ttft.labels(model, tier).observe(seconds)

    def token_gap(self, model: str, tier: str, seconds: float) -> None:
        self.itl.labels(model, tier).observe(seconds)

    def done(self, rec: RequestRecord) -> None:
        m, t = rec.model, rec.tier_served
        self.requests.labels(rec.endpoint, m, t, str(rec.status)).inc()
        if rec.status != 200:
            return
        self.latency.labels(m, t).observe(rec.total_s)
        self.queued.labels(m, t).observe(rec.queued_s)
        self.prompt_tokens.labels(m, t).inc(rec.prompt_tokens)
        self.cached_tokens.labels(m, t).inc(rec.cached_tokens)
        self.completion_tokens.labels(m, t).inc(rec.completion_tokens)
        self.accepted.labels(m, t).inc(rec.accepted_prediction_tokens)
        self.rejected.labels(m, t).inc(rec.rejected_prediction_tokens)
        self.cost.labels(m, t).inc(rec.cost_usd)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector:
    """Gauges read at scrape time, so they are never stale; one series per model."""

    def __init__(self, engines: Mapping[str, StatsSource]):
        self.engines = dict(engines)
        self._last: dict[str, tuple[float, int]] = {}
        self._rate: dict[str, float] = {}

    def collect(self):
        now = time.monotonic()
        stats = {m: st for m, src in self.engines.items() if (st := src()) is not None}
        for m, st in stats.items():
            t0, n0 = self._last.get(m, (now, st.generated_tokens))
            if m not in self._last or now - t0 >= 1.0:
                if now > t0:
                    self._rate[m] = (st.generated_tokens - n0) / (now - t0)
                self._last[m] = (now, st.generated_tokens)

        def gauge(name: str, doc: str, value: Callable[[EngineStats], float]):
            g = GaugeMetricFamily(name, doc, labels=["model"])
            for m, st in stats.items():
                g.add_metric([m], value(st))
            return g

        def counter(name: str, doc: str, value: Callable[[EngineStats], float]):
            c = CounterMetricFamily(name, doc, labels=["model"])
            for m, st in stats.items():
                c.add_metric([m], value(st))
            return c

        g = GaugeMetricFamily("golive_queue_depth", "Sequences waiting for a slot",
                              labels=["model", "tier"])
        for m, st in stats.items():
            for tier, n in st.waiting.items():
                g.add_metric([m, tier], n)
        yield g
        g = GaugeMetricFamily("golive_running_sequences", "Sequences decoding",
                              labels=["model", "tier"])
        for m, st in stats.items():
            for tier in st.waiting:
                g.add_metric([m, tier], st.running_by_tier.get(tier, 0))
        yield g
        yield gauge("golive_kv_cache_usage_ratio", "Share of KV cells in use",
                    lambda st: st.kv_used / max(st.kv_size, 1))
        yield gauge("golive_prefix_cache_entries", "Finished sequences kept for reuse",
                    lambda st: st.cache_entries)
        yield gauge("golive_prefix_cache_hit_rate", "Cached share of prompt tokens",
                    lambda st: st.cached_tokens / st.prompt_tokens if st.prompt_tokens else 0.0)
        tps = GaugeMetricFamily("golive_tokens_per_second",
                                "Generated tokens per second, all sequences", labels=["model"])
        for m in stats:
            tps.add_metric([m], self._rate.get(m, 0.0))
        yield tps
        yield counter("golive_generated_tokens", "Tokens generated by the engine",
                      lambda st: st.generated_tokens)
        yield counter("golive_engine_steps", "llama_decode calls", lambda st: st.steps)
        yield counter("golive_preemptions", "Sequences preempted by priority",
                      lambda st: st.preemptions)
        yield counter("golive_aborted_steps",
                      "Lower-tier engine steps stopped for a priority arrival",
                      lambda st: st.aborted_steps)
        yield counter("golive_draft_tokens_proposed",
                      "Speculative draft tokens verified (prediction, prompt lookup, "
                      "grammar-forced)", lambda st: st.draft_proposed)
        yield counter("golive_draft_tokens_accepted",
                      "Speculative draft tokens the model agreed with",
                      lambda st: st.draft_accepted)
