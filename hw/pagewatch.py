"""Page-watch based dependency tracking for IOMMU cache entries (DESIGN §6).

An IOMMU model keeps cached translations and configuration entries until software
invalidates them, as hardware does. To report the *use* of a cached entry whose
source tables changed without the invalidation the spec requires, every entry
remembers the RAM page frames it was built from. :class:`DepTracker` watches those
frames through :meth:`hw.memory.Memory.watch` and marks the entries *suspect* when
one of them is written, so the model re-walks only entries that may have gone stale
and the cache-hit path stays a dict lookup plus one flag test.

Shared by the VT-d and SMMUv3 models.
"""

from __future__ import annotations

from collections.abc import Iterable

from hw.memory import Memory


class Cached:
    """Base of cache entries: the table pages read to build it and a suspect flag."""

    __slots__ = ("pages", "suspect")

    def __init__(self, pages: Iterable[int]) -> None:
        self.pages = frozenset(pages)
        self.suspect = False


class DepTracker:
    """Page frame -> cache entries derived from it, kept in sync with Memory watches."""

    def __init__(self, memory: Memory) -> None:
        self.mem = memory
        self.by_pfn: dict[int, set[Cached]] = {}

    def on_write(self, pfn: int) -> None:
        for entry in self.by_pfn.get(pfn, ()):
            entry.suspect = True

    def add(self, entry: Cached) -> None:
        for pfn in entry.pages:
            deps = self.by_pfn.get(pfn)
            if deps is None:
                deps = self.by_pfn[pfn] = set()
                self.mem.watch(pfn, self.on_write)
            deps.add(entry)

    def drop(self, entry: Cached) -> None:
        for pfn in entry.pages:
            deps = self.by_pfn.get(pfn)
            if deps is None:
                continue
            deps.discard(entry)
            if not deps:
                del self.by_pfn[pfn]
                self.mem.unwatch(pfn, self.on_write)

    def rebase(self, entry: Cached, pages: Iterable[int]) -> None:
        """Entry re-verified against fresh tables: depend on the pages just read."""
        self.drop(entry)
        entry.pages = frozenset(pages)
        entry.suspect = False
        self.add(entry)

    def mark_all(self, entries: Iterable[Cached]) -> None:
        for entry in entries:
            entry.suspect = True
