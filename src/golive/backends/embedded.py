"""The embedded engine as a Backend: async events from the engine thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from golive.engine.engine import Engine, EngineConfig
from golive.engine.grammar import GrammarCompiler
from golive.engine.model import Model
from golive.engine.types import EngineError, Event, Finished, GenerationRequest


class EmbeddedBackend:
    def __init__(self, model_path: str | None = None, config: EngineConfig | None = None,
                 model_id: str | None = None, weights: str = "auto"):
        self.model = Model(model_path, model_id, weights)
        self.engine = Engine(self.model, config)
        self.model_id = self.model.id
        self.aliases = {self.model.id, self.model.path.stem, self.model.path.name}
        self._compiler: GrammarCompiler | None = None
        self._compiler_lock = threading.Lock()

    @property
    def max_context(self) -> int:
        return self.engine.max_context

    @property
    def grammar_compiler(self) -> GrammarCompiler:
        """One compiler (and grammar cache) per model, built on first use (~1 s)."""
        with self._compiler_lock:
            if self._compiler is None:
                self._compiler = GrammarCompiler(self.model.handle)
            return self._compiler

    def start(self) -> None:
        self.engine.start()

    def close(self) -> None:
        self.engine.stop()
        self.model.close()

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.model.tokenize(text, add_special=add_special, parse_special=add_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.model.detokenize(tokens)

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        text = self.model.apply_chat_template(messages, add_generation_prompt=True, tools=tools)
        # The template writes BOS itself when the model wants one.
        return self.model.tokenize(text, add_special=False, parse_special=True)

    async def generate(self, req: GenerationRequest) -> AsyncIterator[Event]:
        """Events of one request; closing the iterator early cancels it in the engine."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def sink(ev: Event | EngineError) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, ev)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                req.cancelled.set()

        self.engine.submit(req, sink)
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
                self.engine.cancel(req)
