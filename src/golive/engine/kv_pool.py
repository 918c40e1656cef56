"""The KV pool: sequence ids, the prefix cache over them, LRU eviction, park and recover.

llama.cpp's unified KV cache holds every cell of every sequence id. A running
sequence owns an id; when it finishes, is cancelled or is preempted ("parked"),
its id and its cells stay behind as a prefix-cache entry, until the least
recently used entries are evicted to make room. Admission copies the longest
cached prefix into the new id (`seq_cp` shares cells, it copies no data).

Only two calls reach llama.cpp, through `runner.seq_cp` and `runner.seq_rm`,
so this module is tested with a recording stand-in for the runner.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from golive.engine.prefix_cache import PrefixCache

# Evict cache entries before the pool is this full: llama.cpp needs contiguous-ish
# room for a step's cells, and a failed decode (KVFull) costs a whole step.
FILL_LIMIT = 0.92


class KVCells(Protocol):
    kv_size: int

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None: ...

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None: ...


class KVPool:
    def __init__(self, cells: KVCells, n_ids: int, prefix_cache: bool = True):
        self.cells = cells
        self.cache = PrefixCache()
        self.prefix_cache = prefix_cache
        self._free = list(range(n_ids - 1, -1, -1))
        self._lru: OrderedDict[int, None] = OrderedDict()  # cache entries, oldest first

    @property
    def n_entries(self) -> int:
        return len(self._lru)

    @property
    def cached_tokens(self) -> int:
        """Distinct KV cells the prefix cache holds."""
        return self.cache.n_tokens

    def take_id(self) -> int:
        """A free sequence id with no cells, evicting the oldest cache entry if needed."""
        if not self._free:
            self.evict_one()
        sid = self._free.pop()
        self.cells.seq_rm(sid)
        return sid

    def attach(self, sid: int, tokens: list[int], max_match: int | None = None,
               force: bool = False) -> int:
        """Copy the longest cached prefix of `tokens` (at most `max_match`) into `sid`;
        returns its length. `force` reuses the cache even when it is off (choices
        2..n of one request, a preempted sequence's own cells)."""
        if not (self.prefix_cache or force):
            return 0
        matched, holder = self.cache.match(tokens)
        if max_match is not None:
            matched = max(0, min(matched, max_match))
        if matched and holder is not None:
            self.cells.seq_cp(holder, sid, 0, matched)
            if holder in self._lru:
                self._lru.move_to_end(holder)
            return matched
        return 0

    def publish(self, sid: int, tokens: list[int]) -> None:
        """A running sequence's prompt is computed: share it with later requests now."""
        if not self.cache.holds(sid):
            self.cache.insert(tokens, sid)

    def park(self, sid: int, tokens: list[int], n_computed: int) -> None:
        """A sequence leaves its slot: its computed cells become a cache entry."""
        if n_computed > 0:
            self.cells.seq_rm(sid, n_computed, -1)  # cells of rejected or unread drafts
            self.cache.insert(tokens[:n_computed], sid)
            self._lru[sid] = None
        else:
            self.cells.seq_rm(sid)
            self._free.append(sid)

    def truncate(self, sid: int, n_keep: int) -> None:
        """Drop a sequence's cells from position `n_keep` on (rejected drafts, an aborted step)."""
        self.cells.seq_rm(sid, n_keep, -1)

    def evict_one(self) -> bool:
        if not self._lru:
            return False
        sid, _ = self._lru.popitem(last=False)
        self.cache.remove(sid)
        self.cells.seq_rm(sid)
        self._free.append(sid)
        return True

    def evict_all(self) -> bool:
        """Drop every cache entry; False when there was none."""
        if not self._lru:
            return False
        while self.evict_one():
            pass
        return True

    def make_room(self, incoming: int, running_extra: int) -> None:
        """Evict old entries until `incoming` more cells fit under FILL_LIMIT.

        `running_extra`: cells running sequences hold beyond their prompts (the
        prompts are counted in the cache once published)."""
        limit = int(self.cells.kv_size * FILL_LIMIT)
        while self._lru and self.cache.n_tokens + running_extra + incoming > limit:
            self.evict_one()
