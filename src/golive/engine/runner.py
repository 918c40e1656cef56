"""The llama.cpp context: one batch in, logits out; KV sequence bookkeeping.

Only the engine thread may call into this object.
"""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np

from golive.engine.model import Model


class DecodeError(RuntimeError):
    pass


class KVFull(DecodeError):
    """llama.cpp found no free KV cells for the batch."""


class Aborted(DecodeError):
    """The decode was stopped before it finished (`Runner.request_abort`)."""


# llama.cpp polls an abort callback between graph nodes, from its compute threads.
# A Python callback would take the GIL there on every poll; libc's strlen over a
# one-byte flag answers the same question ("is the flag set?") without Python.
try:
    _strlen: int | None = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
except (OSError, AttributeError):  # no C library to look up (Windows): steps run to the end
    _strlen = None


class Runner:
    def __init__(self, model: Model, kv_size: int, n_seq: int, max_batch: int, threads: int):
        self.model = model
        cp = L.llama_context_default_params()
        cp.n_ctx = kv_size
        cp.n_batch = max_batch
        cp.n_ubatch = min(max_batch, 512)
        cp.n_seq_max = n_seq
        cp.n_threads = cp.n_threads_batch = threads
        self.threads = threads
        # One KV pool for all sequences, so seq_cp shares cells instead of copying them.
        cp.kv_unified = True
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(model.handle, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context (kv size too large?)")
        self.kv_size = L.llama_n_ctx(self.ctx)
        self.n_seq = n_seq
        self.mem = L.llama_get_memory(self.ctx)
        self.max_batch = max_batch
        self.batch = L.llama_batch_init(max_batch, 0, 1)
        self._tok = np.ctypeslib.as_array(self.batch.token, shape=(max_batch,))
        self._pos = np.ctypeslib.as_array(self.batch.pos, shape=(max_batch,))
        self._nseq = np.ctypeslib.as_array(self.batch.n_seq_id, shape=(max_batch,))
        self._logits = np.ctypeslib.as_array(self.batch.logits, shape=(max_batch,))
        self._nseq[:] = 1
        self.n_vocab = model.n_vocab
        self._abort_flag = ctypes.create_string_buffer(2)
        if _strlen is not None:
            self._abort_cb = L.ggml_abort_callback(_strlen)  # kept alive with the context
            L.llama_set_abort_callback(self.ctx, self._abort_cb,
                                       ctypes.cast(self._abort_flag, ctypes.c_void_p))

    def set_threads(self, n: int) -> None:
        if n != self.threads:
            L.llama_set_n_threads(self.ctx, n, n)
            self.threads = n

    def decode(self, tokens: list[int], positions: list[int], seqs: list[int],
               want: list[bool]) -> None:
        n = len(tokens)
        if n > self.max_batch:
            raise DecodeError(f"batch of {n} exceeds {self.max_batch}")
        self._tok[:n] = tokens
        self._pos[:n] = positions
        self._logits[:n] = want
        sid = self.batch.seq_id
        for i, s in enumerate(seqs):
            sid[i][0] = s
        self.batch.n_tokens = n
        rc = L.llama_decode(self.ctx, self.batch)
        if rc == 1:
            raise KVFull("no KV slot for the batch")
        if rc == 2:
            raise Aborted("decode aborted")
        if rc != 0:
            raise DecodeError(f"llama_decode failed with {rc}")

    def request_abort(self) -> None:
        """Stop the decode in flight (or the next one). Safe from any thread."""
        self._abort_flag[0] = b"\x01"

    def clear_abort(self) -> None:
        self._abort_flag[0] = b"\x00"

    def logits(self, i: int) -> np.ndarray:
        """Logits for batch index i (a view valid until the next decode)."""
        return np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        L.llama_memory_seq_cp(self.mem, src, dst, p0, p1)

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        L.llama_memory_seq_rm(self.mem, seq, p0, p1)

    def seq_pos_max(self, seq: int) -> int:
        return L.llama_memory_seq_pos_max(self.mem, seq)

    def close(self) -> None:
        if self.ctx:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
            self.ctx = None
