"""The embedded engine as a Backend: async events from the engine thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from golive.backends.base import Capability, Kind, ModelInfo
from golive.engine.engine import Engine, EngineConfig
from golive.engine.grammar import Grammar, GrammarCompiler
from golive.engine.model import Model
from golive.engine.types import (
    EngineError,
    EngineStats,
    Event,
    Finished,
    GenerationRequest,
    GrammarSpec,
    InvalidRequest,
)

CAPABILITIES = frozenset({Capability.CHAT, Capability.COMPLETIONS, Capability.GRAMMAR,
                          Capability.PREDICTION, Capability.LOGPROBS})


class EmbeddedBackend:
    """A GGUF on golive's own engine. The model loads at construction (so a bad
    file fails `golive serve` before it binds); the engine thread starts in start()."""

    def __init__(self, model_path: str | None = None, config: EngineConfig | None = None,
                 model_id: str | None = None, weights: str = "auto",
                 aliases: tuple[str, ...] = ()):
        self._model = Model(model_path, model_id, weights)
        self._engine = Engine(self._model, config)
        m = self._model
        # file names answer too, so `model="SmolLM2-135M-Instruct-Q4_1.gguf"` works
        names = {m.path.stem, m.path.name, *aliases} if model_id is None else set(aliases)
        self.info = ModelInfo(
            id=m.id, kind=Kind.EMBEDDED, capabilities=CAPABILITIES,
            aliases=frozenset(names - {m.id}), max_context=self._engine.max_context,
            n_vocab=m.n_vocab,
            details={"weights": m.weights, "file": str(m.path),
                     "threads": (str(self._engine.threads) if self._engine.cores is None
                                 else f"{self._engine.threads} shared")})
        self._compiler: GrammarCompiler | None = None
        self._compiler_lock = threading.Lock()

    def start(self) -> None:
        self._engine.start()

    def close(self) -> None:
        self._engine.stop()
        self._model.close()

    def stats(self) -> EngineStats:
        return self._engine.stats()

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self._model.tokenize(text, add_special=add_special, parse_special=add_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self._model.detokenize(tokens)

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        text = self._model.apply_chat_template(messages, add_generation_prompt=True, tools=tools)
        # The template writes BOS itself when the model wants one.
        return self._model.tokenize(text, add_special=False, parse_special=True)

    # ---- grammar ------------------------------------------------------------------

    def _grammar_compiler(self) -> GrammarCompiler:
        """One compiler (and grammar cache) per model, built on first use (~1 s)."""
        with self._compiler_lock:
            if self._compiler is None:
                self._compiler = GrammarCompiler(self._model.handle)
            return self._compiler

    def compile_grammar(self, spec: GrammarSpec) -> Grammar:
        c = self._grammar_compiler()
        if spec.kind == "json_object":
            g = c.compile_json_object()
        elif spec.kind == "json_schema":
            g = c.compile_json_schema(spec.source, spec.strict, spec.param,  # type: ignore[arg-type]
                                      spec.what)
        elif spec.kind == "lark":
            g = c.compile_lark(str(spec.source), spec.param)
        else:
            raise InvalidRequest(f"unknown grammar kind {spec.kind!r}", spec.param)
        return g.with_budget(spec.max_tokens)

    # ---- generation ---------------------------------------------------------------

    async def generate(self, req: GenerationRequest) -> AsyncIterator[Event]:
        """Events of one request; closing the iterator early cancels it in the engine."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def sink(ev: Event | EngineError) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, ev)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                req.cancelled.set()

        self._engine.submit(req, sink)
        done = False
        try:
            while True:
                ev = await q.get()
                if isinstance(ev, EngineError):
                    done = True
                    raise ev
                if isinstance(ev, Finished):
                    done = True
                yield ev
                if done:
                    return
        finally:
            if not done:
                self._engine.cancel(req)
