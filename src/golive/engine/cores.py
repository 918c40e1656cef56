"""The machine's cores, shared by every engine in this process.

Each embedded model runs its own engine and llama.cpp thread pool. Measured
on the 2-core reference machine (benchmarks/bench_registry.py, model A's
speed against A alone, single stream / 8 streams): two fixed pools of all
cores each cost nothing while the second model idles, but when both decode
they oversubscribe the cores and spin-wait against each other (0.56x /
0.55x); a fixed half each holds better under contention but costs 0.85x /
0.68x even while the other model idles. So engines whose thread count is
left to golive take all the cores while they are the only one with work and
an even share while others have work too (idle 1.12x / 1.03x, busy 0.82x /
0.61x), set before each decode with `llama_set_n_threads` (a field of the
context's parameters: no pool is rebuilt).
"""

from __future__ import annotations

import os
import threading


class CoreShare:
    def __init__(self, cores: int | None = None):
        self.cores = cores or os.cpu_count() or 1
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def threads(self, engine: int, busy: bool) -> int:
        """Threads `engine` should decode with now; `busy`: it has work this step."""
        with self._lock:
            if busy:
                self._busy.add(engine)
            else:
                self._busy.discard(engine)
            return max(1, self.cores // max(1, len(self._busy)))


SHARED = CoreShare()
