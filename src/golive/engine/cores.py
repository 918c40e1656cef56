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
context's parameters: no pool is rebuilt). Cores other processes keep busy
are left to them (`CoTenants`) when GOLIVE_YIELD_BUSY_CORES=1.
"""

from __future__ import annotations

import os
import threading
import time

# How often the co-tenant load is sampled, and how much of a core other processes
# must use before an engine gives it up.
SAMPLE_S = 1.0
YIELD_AT = 0.6


def _proc_stat() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user time
    return total - idle, total


class CoTenants:
    """Cores other processes keep busy, from /proc/stat less this process's CPU time.

    With one of two cores taken by another process, a pool of two llama.cpp threads
    runs at a third of its quiet speed (one thread waits at every barrier for the one
    that lost its core), while one thread keeps its full quiet speed
    (benchmarks/bench_contention.py)."""

    def __init__(self, cores: int):
        self.cores = cores
        self._last: tuple[float, float, float, float] | None = None
        self.busy_elsewhere = 0.0

    def sample(self) -> float:
        now, own = time.monotonic(), time.process_time()
        stat = _proc_stat()
        if stat is None:
            return 0.0
        busy, total = stat
        if self._last is not None:
            t0, own0, busy0, total0 = self._last
            if now - t0 < SAMPLE_S:
                return self.busy_elsewhere
            if total > total0 and now > t0:
                machine = (busy - busy0) / (total - total0) * self.cores
                mine = (own - own0) / (now - t0)
                self.busy_elsewhere = max(0.0, machine - mine)
        self._last = (now, own, busy, total)
        return self.busy_elsewhere

    def available(self) -> int:
        taken = self.sample()
        return max(1, self.cores - int(taken + (1 - YIELD_AT)))


class CoreShare:
    def __init__(self, cores: int | None = None, watch_load: bool = True):
        self.cores = cores or os.cpu_count() or 1
        self._busy: set[int] = set()
        self._lock = threading.Lock()
        self.co_tenants = CoTenants(self.cores) if watch_load else None

    def threads(self, engine: int, busy: bool) -> int:
        """Threads `engine` should decode with now; `busy`: it has work this step."""
        with self._lock:
            if busy:
                self._busy.add(engine)
            else:
                self._busy.discard(engine)
            cores = self.co_tenants.available() if self.co_tenants and busy else self.cores
            return max(1, cores // max(1, len(self._busy)))


# Off unless asked for: a thread count that follows other processes' load changes
# llama.cpp's reduction order from step to step, so a seeded request at temperature > 0
# could give another text on a busy machine (tests/test_openai_chat.py caught it).
SHARED = CoreShare(watch_load=os.environ.get("GOLIVE_YIELD_BUSY_CORES") == "1")
