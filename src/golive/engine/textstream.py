"""Generated tokens -> text deltas that are valid UTF-8 and never show a stop string.

A stop string can span token boundaries, so text that could still become the
start of a stop string is held back until the next token settles it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field


@dataclass(slots=True)
class Chunk:
    text: str
    tokens: list[int] = field(default_factory=list)
    extras: list = field(default_factory=list)  # per-token payloads (logprobs)


class TextStream:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._maxstop = max((len(s) for s in self.stops), default=0)
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""
        self._sent = 0
        self._pending: list[tuple[int, int, object]] = []  # (token, text end, extra)
        self.stopped = False

    def push(self, token: int, piece: bytes, extra: object = None) -> Chunk | None:
        """Add one token; returns what may be shown now, or None."""
        if self.stopped:
            return None
        self.text += self._dec.decode(piece)
        self._pending.append((token, len(self.text), extra))
        if self.stops:
            start = max(0, self._sent - self._maxstop)
            hit = min((p for p in (self.text.find(s, start) for s in self.stops) if p >= 0),
                      default=-1)
            if hit >= 0:
                self.stopped = True
                self.text = self.text[:hit]
                return self._emit(hit, take_all=True)
            safe = len(self.text) - self._held_back()
        else:
            safe = len(self.text)
        return self._emit(safe)

    def flush(self) -> Chunk | None:
        """Everything still held back, at the end of generation."""
        if not self.stopped:
            self.text += self._dec.decode(b"", final=True)
        return self._emit(len(self.text), take_all=True)

    def _held_back(self) -> int:
        """Length of the longest text suffix that is a proper prefix of a stop string."""
        t = self.text
        for n in range(min(self._maxstop - 1, len(t)), 0, -1):
            tail = t[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0

    def _emit(self, upto: int, take_all: bool = False) -> Chunk | None:
        upto = max(upto, self._sent)
        n = len(self._pending) if take_all else sum(1 for _, end, _ in self._pending if end <= upto)
        if upto == self._sent and n == 0:
            return None
        done, self._pending = self._pending[:n], self._pending[n:]
        chunk = Chunk(self.text[self._sent:upto], [t for t, _, _ in done], [x for _, _, x in done])
        self._sent = upto
        return chunk
