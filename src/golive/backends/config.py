"""The model registry's configuration: a TOML file of `[models.ID]` entries.

```toml
[models.smollm2]                 # the model id clients send as `model`
aliases = ["default", "gpt-4o-mini"]
kind = "embedded"                # a GGUF on golive's engine (the only kind so far)
path = "/models/x.gguf"          # omitted: the bundled SmolLM2-135M-Instruct
weights = "auto"                 # auto | original | q8_0
prices = { input = 0.15, cached_input = 0.015, output = 0.6 }  # USD per 1M tokens

[models.smollm2.engine]          # any EngineConfig field; unset ones come from
slots = 8                        # the `golive serve` options
threads = 1
```

Pure parsing: no model is loaded here, so every mistake is reported with the
file and the exact key before anything starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golive.engine.engine import EngineConfig

KINDS = ("embedded",)
# Kinds the registry knows of but this release cannot serve yet.
PLANNED_KINDS = ("embedding", "upstream")
WEIGHTS = ("auto", "original", "q8_0")
_ENTRY_KEYS = {"aliases", "kind", "path", "weights", "prices", "engine"}
_PRICE_KEYS = {"input", "cached_input", "output"}
_ENGINE_KEYS = {f.name: f.type for f in dataclasses.fields(EngineConfig)}


class ConfigError(ValueError):
    """A registry file that cannot be served, naming the file and the key."""


@dataclass(frozen=True)
class ModelEntry:
    id: str
    kind: str = "embedded"
    path: str | None = None  # None: the bundled default model
    aliases: tuple[str, ...] = ()
    weights: str = "auto"
    engine: dict[str, Any] = field(default_factory=dict)  # EngineConfig overrides
    prices: dict[str, float] | None = None

    def engine_config(self, base: EngineConfig) -> EngineConfig:
        return dataclasses.replace(base, **self.engine)


def load_config(path: str | Path) -> list[ModelEntry]:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(raw, str(p), base=p.parent)


def parse_config(raw: dict[str, Any], source: str = "<config>",
                 base: Path | None = None) -> list[ModelEntry]:
    unknown = set(raw) - {"models"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}; "
                          "expected [models.ID] tables")
    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{source}: no models: add at least one [models.ID] table")
    entries = [_entry(mid, spec, source, base) for mid, spec in models.items()]
    _check_names(entries, source)
    return entries


def _entry(mid: str, spec: Any, source: str, base: Path | None) -> ModelEntry:
    where = f"{source}: models.{mid}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(spec) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; "
                          f"expected some of {sorted(_ENTRY_KEYS)}")
    kind = spec.get("kind", "embedded")
    if kind in PLANNED_KINDS:
        raise ConfigError(f"{where}.kind: {kind!r} models are not served by this version yet")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    aliases = spec.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError(f"{where}.aliases: must be a list of non-empty strings")
    weights = spec.get("weights", "auto")
    if weights not in WEIGHTS:
        raise ConfigError(f"{where}.weights: {weights!r} is not one of {', '.join(WEIGHTS)}")
    path = spec.get("path")
    if path is not None:
        if not isinstance(path, str):
            raise ConfigError(f"{where}.path: must be a string")
        p = Path(path).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p  # relative to the config file, not to wherever serve was started
        if not p.is_file():
            raise ConfigError(f"{where}.path: no such file: {p}")
        path = str(p)
    return ModelEntry(id=mid, kind=kind, path=path, aliases=tuple(aliases), weights=weights,
                      engine=_engine(spec.get("engine", {}), f"{where}.engine"),
                      prices=_prices(spec.get("prices"), f"{where}.prices"))


def _engine(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    out: dict[str, Any] = {}
    defaults = EngineConfig()
    for k, v in raw.items():
        if k not in _ENGINE_KEYS:
            raise ConfigError(f"{where}.{k}: unknown engine option; expected some of "
                              f"{', '.join(sorted(_ENGINE_KEYS))}")
        want = type(getattr(defaults, k))
        ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            raise ConfigError(f"{where}.{k}: expected {want.__name__}, got {v!r}")
        if want in (int, float) and v < 0:
            raise ConfigError(f"{where}.{k}: must be >= 0, got {v!r}")
        out[k] = v
    if out.get("slots", 1) < 1:
        raise ConfigError(f"{where}.slots: must be >= 1")
    return out


def _prices(raw: Any, where: str) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table like {{ input = 0.1, output = 0.2 }}")
    unknown = set(raw) - _PRICE_KEYS
    if unknown or not {"input", "output"} <= set(raw):
        raise ConfigError(f"{where}: needs input and output (and optionally cached_input), "
                          f"USD per 1M tokens; got {sorted(raw)}")
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ConfigError(f"{where}.{k}: must be a number >= 0, got {v!r}")
    return {k: float(v) for k, v in raw.items()}


def _check_names(entries: list[ModelEntry], source: str) -> None:
    seen: dict[str, str] = {}
    for e in entries:
        for name in (e.id, *e.aliases):
            if name in seen and seen[name] != e.id:
                raise ConfigError(f"{source}: models.{e.id}: name {name!r} is already used by "
                                  f"models.{seen[name]}")
            seen[name] = e.id
