"""Token counting for the patterns: the served model's own tokenizer, or yours.

Savings are only real when counted with the tokenizer the model uses, so the
default is the embedded model's vocabulary (SmolLM2; the same token ids the
golive server reports in `usage`). Any object with `encode(text) -> list[int]`
(a tiktoken Encoding, a Hugging Face tokenizer) or a plain callable returning
token ids works too.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]


@runtime_checkable
class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


class ModelTokenizer:
    """A GGUF model's tokenizer and chat template (vocabulary only is used)."""

    def __init__(self, model_path: str | None = None):
        from golive.engine.model import Model

        self.model = Model(model_path)
        self._lock = threading.Lock()  # Model reuses one token buffer

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return self.model.tokenize(text, add_special=False, parse_special=False)

    def encode_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True
                    ) -> list[int]:
        """The prompt token ids the golive server builds for these messages."""
        with self._lock:
            text = self.model.apply_chat_template(
                [_plain(m) for m in messages], add_generation_prompt=add_generation_prompt)
            return self.model.tokenize(text, add_special=False, parse_special=True)


class CallableTokenizer:
    """Adapts `fn(text) -> list[int]` (or `-> int`, a count) to the Tokenizer protocol."""

    def __init__(self, fn: Callable[[str], Any]):
        self.fn = fn

    def encode(self, text: str) -> list[int]:
        out = self.fn(text)
        if isinstance(out, int):  # a counter: ids unknown, the length is what matters
            return [0] * out
        return list(out)


@functools.lru_cache(maxsize=4)
def model_tokenizer(model_path: str | None = None) -> ModelTokenizer:
    """A shared ModelTokenizer (loading the vocabulary takes a moment)."""
    return ModelTokenizer(model_path)


def as_tokenizer(tok: Tokenizer | Callable[[str], Any] | None) -> Tokenizer:
    if tok is None:
        return model_tokenizer()
    if isinstance(tok, Tokenizer):
        return tok
    if callable(tok):
        return CallableTokenizer(tok)
    raise TypeError(f"not a tokenizer: {tok!r} (need .encode(text) or a callable)")


def count(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(text)) if text else 0


def encode_chat(tok: Tokenizer, messages: Sequence[Message]) -> list[int]:
    """Token ids of a whole conversation: the model's chat template when known."""
    enc = getattr(tok, "encode_chat", None)
    if enc is not None:
        return enc(messages)
    return tok.encode("".join(f"<{m.get('role', 'user')}>\n{content_text(m)}\n" for m in messages))


def count_chat(tok: Tokenizer, messages: Sequence[Message]) -> int:
    return len(encode_chat(tok, messages))


def content_text(m: Message) -> str:
    """A message's text, also for OpenAI's list-of-parts content."""
    c = m.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    return "".join(p.get("text", "") for p in c if isinstance(p, dict))


def _plain(m: Message) -> Message:
    role = m.get("role", "user")
    return {"role": "system" if role == "developer" else role, "content": content_text(m)}
