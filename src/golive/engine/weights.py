"""Which weight file the engine loads: the GGUF as given, or a CPU-friendlier copy.

llama.cpp's CPU backend repacks some quantization types (Q4_0, IQ4_NL, Q8_0,
...) into interleaved layouts whose matrix-matrix kernels are several times
faster; others, Q4_1 among them (the default SmolLM2 GGUF), take the generic
path. One token per step hardly notices, but every step that carries many
tokens does: continuous batching, chunked prefill and draft verification.
Measured on the 2-core reference machine with the default model (llama.cpp
from llama-cpp-python 0.3.36), a 16-token step costs 50 ms on Q4_1 and 33 ms
on Q8_0, while a 1-token step costs about 6 ms on both.

So `auto` converts weights of those types once to Q8_0 (`llama_model_quantize`
with requantize allowed; 0.7 s for the default model) and caches the copy, keyed
by the source's content (below).
Q8_0 holds each Q4_1 weight almost exactly: against the original, next-token
top-1 agreement is 96% and the mean KL divergence 0.003 nats on 1,100 tokens of
text (the disagreements are numerical near-ties, the same batch-shape effect
docs/architecture.md describes). A 4-bit target (Q4_0, IQ4_NL) would be faster
still but moves the model (KL 0.13-0.20), so it is not offered. `original`
loads the file as given.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from pathlib import Path

import llama_cpp as L

MODES = ("auto", "original", "q8_0")

# GGUF general.file_type values whose CPU matmul llama.cpp does not repack
_SLOW_FTYPES = {
    3: "Q4_1",
    8: "Q5_0",
    9: "Q5_1",
}


def cache_dir() -> Path:
    root = os.environ.get("GOLIVE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "golive")
    return Path(root) / "weights"


def file_type(path: Path) -> int | None:
    """`general.file_type` of a GGUF, read by llama.cpp from a vocabulary-only load
    (metadata and vocabulary, no tensors)."""
    params = L.llama_model_default_params()
    params.vocab_only = True
    handle = L.llama_model_load_from_file(str(path).encode(), params)
    if not handle:
        return None
    try:
        buf = ctypes.create_string_buffer(32)
        n = L.llama_model_meta_val_str(handle, b"general.file_type", buf, len(buf))
        return int(buf.value) if n > 0 else None
    except ValueError:
        return None
    finally:
        L.llama_model_free(handle)


def resolve(path: Path, mode: str = "auto") -> tuple[Path, str]:
    """(file to load, what was done) for a model file and a weights mode."""
    if mode not in MODES:
        raise ValueError(f"weights must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "original":
        return path, "original"
    ftype = file_type(path)
    if mode == "auto" and ftype not in _SLOW_FTYPES:
        return path, "original"
    if ftype == 7:  # already Q8_0
        return path, "original"
    return _converted(path), f"{_SLOW_FTYPES.get(ftype, 'original')} -> Q8_0"


# The cache is keyed by what the file holds, not where it lies: every clone,
# venv and copy of one GGUF shares one converted file. The key is the SHA-256 of
# all its bytes. Measured on the reference machine for the default GGUF (94 MiB):
# 0.06 s from the page cache, 0.28 s cold, against ~0.13 s (warm) for blake2b;
# and loading the model reads the whole file right after anyway. A partial
# digest (size, header, first and last MiB) would save that fraction of a
# second but could give two fine-tunes of one architecture, alike in size and
# header, the same converted weights: not worth it. Files that need no
# conversion are never hashed.
_CHUNK = 1 << 20
_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> digest, this process


def content_key(path: Path) -> str:
    """SHA-256 (hex) of the file's bytes, read in 1 MiB chunks."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _digests:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def cached_path(path: Path) -> Path:
    """Where the Q8_0 copy of `path` is (or will be) cached."""
    return cache_dir() / f"{content_key(path)[:32]}.q8_0.gguf"


def _converted(path: Path) -> Path:
    out = cached_path(path)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Several servers (or engines of one) may convert at once: each writes its own
    # file, the rename is atomic.
    tmp = out.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    params = L.llama_model_quantize_default_params()
    params.ftype = L.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = min(4, os.cpu_count() or 1)
    rc = L.llama_model_quantize(str(path).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ValueError(f"llama.cpp could not convert {path} to Q8_0 (rc={rc}); "
                         "serve it with --weights original")
    os.replace(tmp, out)
    return out
