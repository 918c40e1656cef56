"""The Backend seam: what the API may ask of a model, whoever serves it.

In the spirit of httpx's `BaseTransport`: one small typed surface with several
implementations (the embedded engine now; an embedding model and upstream
engines next). The API and `observe/` see only this protocol and
`engine/types.py`, never an engine or a model object. What a backend can do is
declared in `ModelInfo.capabilities`; the API checks a capability before it
asks, so a missing one is a 400 naming the field, not an AttributeError.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from golive.engine.types import EngineStats, Event, GenerationRequest, GrammarSpec


class Capability(enum.StrEnum):
    CHAT = "chat"  # chat template: render_chat
    COMPLETIONS = "completions"  # raw prompts and token ids
    EMBEDDINGS = "embeddings"
    GRAMMAR = "grammar"  # response_format json_schema / json_object, tools
    PREDICTION = "prediction"  # predicted outputs as speculative drafts
    LOGPROBS = "logprobs"
    PROMPT_LOGPROBS = "prompt_logprobs"


class Kind(enum.StrEnum):
    EMBEDDED = "embedded"  # a GGUF on golive's own engine
    EMBEDDING = "embedding"
    UPSTREAM = "upstream"


@dataclass(frozen=True)
class ModelInfo:
    id: str
    kind: Kind
    capabilities: frozenset[Capability]
    aliases: frozenset[str] = frozenset()
    max_context: int = 0  # tokens; 0 = unknown
    n_vocab: int = 0  # 0 = no tokenizer here
    details: dict[str, str] = field(default_factory=dict)  # shown in /health (weights, file)

    def names(self) -> frozenset[str]:
        return self.aliases | {self.id}


@runtime_checkable
class Backend(Protocol):
    """One served model."""

    info: ModelInfo

    def start(self) -> None:
        """Load what is needed and start serving (called once, in the app's lifespan)."""

    def close(self) -> None:
        """Stop; requests in flight are failed, resources released."""

    def generate(self, req: GenerationRequest) -> AsyncIterator[Event]:
        """The events of one request, ending with `Finished`. Errors are raised as
        `EngineError` subclasses; closing the iterator early cancels the request."""

    def tokenize(self, text: str, add_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Prompt token ids of a conversation, with the model's own chat template."""

    def compile_grammar(self, spec: GrammarSpec) -> object:
        """A compiled grammar for `GenerationRequest.grammar` (cached by the backend);
        raises `InvalidRequest` naming `spec.param` when the grammar is bad. May run
        on any thread and take a while: call it off the event loop."""

    def stats(self) -> EngineStats | None:
        """Scheduler and cache figures, or None for a backend without an engine here."""
