"""Model calls for evals: the official AsyncOpenAI client, cached, costed and counted.

Every completion (the variants' and the judges') goes through `ModelCaller`:
- the cache key is the backend URL, model, messages, parameters, tier and
  repeat index, so a repeated run sends nothing, while repeats of one run are
  distinct samples;
- errors are never cached, so a rerun retries them;
- cost comes from golive's `x-golive-cost-usd` header when the backend is
  golive, else from token counts and golive's price table.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from golive.evals.store import EvalStore, cache_key
from golive.observe.cost import TIERS, PriceTable

COST_HEADER = "x-golive-cost-usd"


@dataclass(slots=True)
class Completion:
    text: str | None
    error: str | None = None
    model: str = ""
    tier: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    cost_source: str = ""  # "golive" (response header) or "price table"
    from_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JudgeCallError(RuntimeError):
    pass


class ModelCaller:
    def __init__(self, store: EvalStore | None, concurrency: int = 4, use_cache: bool = True,
                 timeout: float = 300.0, prices: PriceTable | None = None):
        self.store = store
        self.use_cache = use_cache and store is not None
        self.sem = asyncio.Semaphore(concurrency)
        self.timeout = timeout
        self.prices = prices or PriceTable.load()
        self._clients: dict[tuple[str, str | None], AsyncOpenAI] = {}
        # Counters for the report and for proving the cache works.
        self.calls = 0
        self.cache_hits = 0
        self.judge_calls = 0
        self.judge_cost_usd = 0.0

    def client(self, base_url: str, api_key_env: str | None) -> AsyncOpenAI:
        key = (base_url, api_key_env)
        if key not in self._clients:
            api_key = (os.environ.get(api_key_env) if api_key_env else None) or \
                os.environ.get("OPENAI_API_KEY") or "golive"
            self._clients[key] = AsyncOpenAI(
                base_url=base_url, api_key=api_key, max_retries=2, timeout=self.timeout,
                http_client=httpx.AsyncClient(timeout=self.timeout))
        return self._clients[key]

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()

    async def complete(self, base_url: str, api_key_env: str | None, model: str,
                       messages: list[dict[str, str]], params: dict[str, Any],
                       tier: str | None = None, repeat: int = 0) -> Completion:
        key = cache_key({"base_url": base_url, "model": model, "messages": messages,
                         "params": params, "tier": tier, "repeat": repeat})
        if self.use_cache:
            assert self.store is not None
            hit = self.store.get_cached("completions", key)
            if hit is not None:
                self.cache_hits += 1
                return Completion(**{**hit, "from_cache": True})
        async with self.sem:
            result = await self._call(base_url, api_key_env, model, messages, params, tier)
        if self.use_cache and result.error is None:
            assert self.store is not None
            self.store.put_cached("completions", key, result.to_dict())
        return result

    async def _call(self, base_url: str, api_key_env: str | None, model: str,
                    messages: list[dict[str, str]], params: dict[str, Any],
                    tier: str | None) -> Completion:
        kwargs = dict(params)
        extra_body = kwargs.pop("extra_body", None)
        if tier:
            kwargs["service_tier"] = tier
        self.calls += 1
        t0 = time.perf_counter()
        try:
            chat = self.client(base_url, api_key_env).chat.completions
            raw = await chat.with_raw_response.create(model=model, messages=messages,
                                                      extra_body=extra_body, **kwargs)
            resp = raw.parse()
        except openai.APIStatusError as e:
            return Completion(None, f"HTTP {e.status_code}: {_message(e)}", model=model,
                              latency_s=time.perf_counter() - t0)
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            return Completion(None, f"cannot reach {base_url}: {e}", model=model,
                              latency_s=time.perf_counter() - t0)
        latency = time.perf_counter() - t0
        choice = resp.choices[0] if resp.choices else None
        u = resp.usage
        prompt = u.prompt_tokens if u else 0
        cached = (u.prompt_tokens_details.cached_tokens or 0) if u and u.prompt_tokens_details \
            else 0
        completion_tokens = u.completion_tokens if u else 0
        served = resp.service_tier if resp.service_tier in TIERS else "default"
        header = raw.headers.get(COST_HEADER)
        if header is not None:
            cost, source = float(header), "golive"
        else:
            cost = self.prices.cost(resp.model or model, served, prompt, min(cached, prompt),
                                    completion_tokens)
            source = "price table"
        return Completion(
            text=(choice.message.content or "") if choice else "", model=resp.model or model,
            tier=resp.service_tier, finish_reason=choice.finish_reason if choice else None,
            prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion_tokens,
            latency_s=latency, cost_usd=cost, cost_source=source)

    async def judge(self, base_url: str, api_key_env: str | None, model: str,
                    messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        """A judge call for graders (the `Chat` protocol): text, or JudgeCallError."""
        c = await self.complete(base_url, api_key_env, model, messages, params)
        if not c.from_cache:
            self.judge_calls += 1
            self.judge_cost_usd += c.cost_usd
        if c.error is not None:
            raise JudgeCallError(c.error)
        return c.text or ""


def _message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            param = f" (param: {err['param']})" if err.get("param") else ""
            return str(err["message"]) + param
    return str(e.message)
