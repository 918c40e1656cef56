"""Cost model: what a request would cost at list prices, by model and tier.

Prices live in a TOML file (the packaged prices.toml, optionally overridden
by a user file) so they can follow price changes without a release.
"""

from __future__ import annotations

import functools
import math
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from golive.observe.record import RequestRecord

PRICES_ENV = "GOLIVE_PRICES"
TIERS = ("priority", "default", "flex", "batch")
DEFAULT_MODEL = "default"
# OpenAI's cached-input discount was 50% at launch (2024-10) and is "up to 90%"
# in the current prompt-caching guide. When a model entry gives no
# cached_input we take the current figure, 0.1 x input; entries that know the
# real price (e.g. gpt-4.1 family: 75% off) state it explicitly.
CACHED_INPUT_RATIO = 0.1
# Used when neither packaged nor user file sets a tier multiplier.
DEFAULT_MULTIPLIERS = {"default": 1.0, "priority": 2.0, "flex": 0.5, "batch": 0.5}
_MODEL_KEYS = {"input", "cached_input", "output"}
_PER_TOKEN = 1e-6  # prices are per million tokens


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens at the default tier."""

    input: float
    cached_input: float
    output: float


@dataclass(frozen=True, slots=True)
class PriceTable:
    models: dict[str, ModelPrice]
    multipliers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MULTIPLIERS))

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """Packaged prices, overridden by `path`, else by $GOLIVE_PRICES if set."""
        raw = _packaged_raw()
        source = "packaged prices.toml"
        if path is None and os.environ.get(PRICES_ENV):
            path = os.environ[PRICES_ENV]
            source = f"${PRICES_ENV}"
        if path is not None:
            override = _read_toml(Path(path), source)
            raw = _merge(raw, override, str(path))
            source = str(path)
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> PriceTable:
        unknown = set(raw) - {"tiers", "models"}
        if unknown:
            raise ValueError(f"{source}: unknown top-level key(s) {sorted(unknown)}; "
                             "expected [tiers] and [models.NAME]")
        multipliers = dict(DEFAULT_MULTIPLIERS)
        tiers = raw.get("tiers", {})
        if not isinstance(tiers, dict):
            raise ValueError(f"{source}: 'tiers' must be a table")
        for tier, value in tiers.items():
            if tier not in TIERS:
                raise ValueError(f"{source}: tiers.{tier}: unknown tier; expected one of {TIERS}")
            multipliers[tier] = _price(value, f"tiers.{tier}", source)
        models_raw = raw.get("models", {})
        if not isinstance(models_raw, dict):
            raise ValueError(f"{source}: 'models' must be a table of [models.NAME] entries")
        models = {name: _model_price(entry, name, source) for name, entry in models_raw.items()}
        if DEFAULT_MODEL not in models:
            raise ValueError(f"{source}: models.{DEFAULT_MODEL}: missing (used for unknown models)")
        return cls(models=models, multipliers=multipliers)

    def price_for(self, model: str) -> ModelPrice:
        """Exact name, then case-insensitive, then the `default` entry."""
        if model in self.models:
            return self.models[model]
        lowered = model.lower()
        for name, price in self.models.items():
            if name.lower() == lowered:
                return price
        return self.models[DEFAULT_MODEL]

    def cost(
        self,
        model: str,
        tier: str,
        prompt_tokens: int,
        cached_tokens: int,
        completion_tokens: int,
        rejected_prediction_tokens: int = 0,
    ) -> float:
        """USD for one request served on `tier`.

        `completion_tokens` must already include `rejected_prediction_tokens`
        (OpenAI usage semantics: rejected prediction tokens are counted in
        completion tokens and billed at the completion rate). The rejected
        count is taken only to check that; it adds nothing on top.
        """
        if tier not in self.multipliers:
            raise ValueError(f"tier: unknown tier {tier!r}; expected one of {TIERS}")
        for name, value in (("prompt_tokens", prompt_tokens), ("cached_tokens", cached_tokens),
                            ("completion_tokens", completion_tokens),
                            ("rejected_prediction_tokens", rejected_prediction_tokens)):
            if value < 0:
                raise ValueError(f"{name}: must be >= 0, got {value}")
        if cached_tokens > prompt_tokens:
            raise ValueError(
                f"cached_tokens: {cached_tokens} exceeds prompt_tokens {prompt_tokens}")
        if rejected_prediction_tokens > completion_tokens:
            raise ValueError(f"rejected_prediction_tokens: {rejected_prediction_tokens} exceeds "
                             f"completion_tokens {completion_tokens} (which must include them)")
        p = self.price_for(model)
        usd = ((prompt_tokens - cached_tokens) * p.input + cached_tokens * p.cached_input
               + completion_tokens * p.output) * _PER_TOKEN
        return usd * self.multipliers[tier]


def cost_of_record(record: RequestRecord, table: PriceTable | None = None) -> float:
    """Cost of a finished request; 0.0 for a 429 (refused requests are not charged).

    `table` defaults to the packaged prices overridden by $GOLIVE_PRICES.
    """
    if record.status == 429:
        return 0.0
    if record.prompt_tokens == 0 and record.completion_tokens == 0:
        # Failed before any work (e.g. a 400): nothing to bill, and tier_served
        # may not be a real tier yet.
        return 0.0
    table = table or default_table()
    return table.cost(record.model, record.tier_served, record.prompt_tokens,
                      record.cached_tokens, record.completion_tokens,
                      record.rejected_prediction_tokens)


def default_table() -> PriceTable:
    """The table for the current $GOLIVE_PRICES, parsed once per value."""
    return _load_cached(os.environ.get(PRICES_ENV) or None)


@functools.lru_cache(maxsize=4)
def _load_cached(env_path: str | None) -> PriceTable:
    return PriceTable.load(env_path)


def _packaged_raw() -> dict[str, Any]:
    text = resources.files("golive.observe").joinpath("prices.toml").read_text("utf-8")
    return tomllib.loads(text)


def _read_toml(path: Path, source: str) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"price config {path} (from {source}) does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None


def _merge(base: dict[str, Any], override: dict[str, Any], source: str) -> dict[str, Any]:
    # Whole-model replacement (not per-key) so a user entry never silently
    # inherits a stale packaged cached_input for a model they re-priced.
    merged: dict[str, Any] = {k: v for k, v in override.items() if k not in ("tiers", "models")}
    for key in ("tiers", "models"):
        part = override.get(key, {})
        if not isinstance(part, dict):
            raise ValueError(f"{source}: '{key}' must be a table")
        merged[key] = {**base.get(key, {}), **part}
    return merged


def _model_price(entry: Any, name: str, source: str) -> ModelPrice:
    key = f"models.{name}"
    if not isinstance(entry, dict):
        raise ValueError(f"{source}: {key}: must be a table with input/cached_input/output")
    unknown = set(entry) - _MODEL_KEYS
    if unknown:
        raise ValueError(f"{source}: {key}.{sorted(unknown)[0]}: unknown key; "
                         f"expected {sorted(_MODEL_KEYS)}")
    for required in ("input", "output"):
        if required not in entry:
            raise ValueError(f"{source}: {key}.{required}: missing")
    inp = _price(entry["input"], f"{key}.input", source)
    cached = (_price(entry["cached_input"], f"{key}.cached_input", source)
              if "cached_input" in entry else inp * CACHED_INPUT_RATIO)
    return ModelPrice(input=inp, cached_input=cached,
                      output=_price(entry["output"], f"{key}.output", source))


def _price(value: Any, key: str, source: str) -> float:
    # bool is an int subclass; "true" as a price is a typo, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{source}: {key}: must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{source}: {key}: must be a finite number >= 0, got {value!r}")
    return float(value)
