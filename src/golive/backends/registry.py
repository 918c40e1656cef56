"""The model registry: which backend answers which `model` name.

The first model is the default one (`golive chat` and the dashboard show it
first). Names resolve exactly: an id, then an alias; an unknown name is
OpenAI's 404 `model_not_found` naming it.
"""

from __future__ import annotations

from collections.abc import Iterator

from golive.backends.base import Backend
from golive.backends.config import ModelEntry
from golive.engine.engine import EngineConfig
from golive.engine.types import ModelNotFound


class Registry:
    def __init__(self, backends: list[Backend], prices: dict[str, dict[str, float]] | None = None):
        if not backends:
            raise ValueError("a registry needs at least one model")
        self._backends = list(backends)
        self._by_name: dict[str, Backend] = {}
        for b in self._backends:  # ids win over aliases
            self._by_name.setdefault(b.info.id, b)
        for b in self._backends:
            for a in b.info.aliases:
                self._by_name.setdefault(a, b)
        self.prices = prices or {}  # model id -> {input, cached_input, output}

    @property
    def default(self) -> Backend:
        return self._backends[0]

    def __iter__(self) -> Iterator[Backend]:
        return iter(self._backends)

    def __len__(self) -> int:
        return len(self._backends)

    def ids(self) -> list[str]:
        return [b.info.id for b in self._backends]

    def get(self, name: str) -> Backend | None:
        return self._by_name.get(name)

    def resolve(self, name: str) -> Backend:
        b = self._by_name.get(name)
        if b is None:
            raise ModelNotFound(name, self.ids())
        return b

    def start(self) -> None:
        for b in self._backends:
            b.start()

    def close(self) -> None:
        for b in self._backends:
            b.close()


def build_registry(entries: list[ModelEntry], base: EngineConfig | None = None) -> Registry:
    """Load every model of a config (embedded GGUFs load here, engines start later)."""
    from golive.backends.embedded import EmbeddedBackend

    base = base or EngineConfig()
    backends: list[Backend] = []
    try:
        # threads left at 0 are shared between the engines step by step (engine/cores.py)
        for entry in entries:
            backends.append(EmbeddedBackend(entry.path, entry.engine_config(base), entry.id,
                                            entry.weights, entry.aliases))
    except BaseException:
        for b in backends:
            b.close()
        raise
    return Registry(backends, {e.id: e.prices for e in entries if e.prices})


def registry_for(config: str | None, model: str | None, base: EngineConfig,
                 weights: str = "auto") -> Registry:
    """What `golive serve` serves: the models of a config file, else one GGUF (the
    bundled default when `model` is None)."""
    from golive.backends.config import ConfigError, load_config

    if config is not None:
        if model is not None:
            raise ConfigError("give either a config file or a model file, not both")
        return build_registry(load_config(config), base)
    from golive.backends.embedded import EmbeddedBackend

    return Registry([EmbeddedBackend(model, base, weights=weights)])
