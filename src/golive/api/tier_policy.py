"""Priority ramp protection: beyond a configured priority token rate, serve as default.

Mirrors OpenAI's rule that priority traffic ramping too fast is served (and
billed) at the default tier, and the response says `default`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from golive.engine.types import Tier


class TierPolicy:
    def __init__(self, priority_tokens_per_min: float | None = None, window_s: float = 60.0):
        self.limit = priority_tokens_per_min
        self.window = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0
        self._lock = threading.Lock()

    def admit_priority(self) -> Tier:
        if not self.limit:
            return Tier.PRIORITY
        with self._lock:
            self._expire(time.monotonic())
            return Tier.PRIORITY if self._total < self.limit * self.window / 60.0 else Tier.DEFAULT

    def charge(self, tier: str, tokens: int) -> None:
        """Count tokens served at priority (prompt + completion)."""
        if not self.limit or tier != "priority":
            return
        with self._lock:
            now = time.monotonic()
            self._events.append((now, tokens))
            self._total += tokens
            self._expire(now)

    def _expire(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window:
            self._total -= self._events.popleft()[1]
