"""Page-watch based dependency tracking for IOMMU cache entries (DESIGN §6).

An IOMMU model keeps cached translations and configuration entries until software
invalidates them, as hardware does. To report the *use* of a cached entry whose
source tables changed without the invalidation the spec requires, every entry
remembers the 8-byte table-entry granules it was built from.
:class:`SlotTracker` watches their pages through :meth:`hw.memory.Memory.watch` and
marks the entries *suspect* when one of *their* granules changes, so the model
re-walks only entries that may have gone stale and the cache-hit path stays a dict
lookup plus one flag test. The one tracker of every IOMMU model (VT-d, SMMUv3) and
of the translations they hand to devices' ATCs.

An entry read from four table entries (a 4-level walk: three table pointers and its
leaf) is registered at its leaf granule only, and under a :class:`TablePath` that
stands for the three upper granules: the path is registered at those once, for every
entry walked through them, so filling and dropping such an entry costs two set
operations instead of four (the IOTLB's cold fill and global flush). Which entries a
write marks is the same either way: those whose walk read the changed granule.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from hw.bus import TableWrite
from hw.memory import Memory

GRANULE_SHIFT = 3
"""Slot dependencies are tracked per 8-byte granule (one table entry word)."""
_SLOTS_PER_PAGE_SHIFT = 12 - GRANULE_SHIFT
_SLOT_MASK = (1 << _SLOTS_PER_PAGE_SHIFT) - 1


_U64 = (1 << 64) - 1
_ORDERED = (list, tuple)
"""Slot collections in walk order (a set of granules is never a path)."""
MAX_CAUSES = 4
"""Table writes remembered per suspect entry (the first ones: what made it wrong)."""


class SlotCached:
    """Base of cache entries tracked per table *entry*: ``slots`` are the 8-byte
    granules (``address >> 3``) the entry was built from, ``suspect`` is set when one
    of them changes. ``causes`` (unset until then: read it with :func:`causes`) are
    the writes that made it suspect, recorded only then (the tracker's cold path)."""

    __slots__ = ("causes", "leaf", "path", "slots", "suspect")
    causes: tuple[TableWrite, ...]
    path: TablePath | None
    """The path the entry's first three granules are registered under (None: each of
    its granules on its own); set by every registration (:meth:`SlotTracker.add`)."""
    leaf: set[SlotCached]
    """With a path: the set of its last granule it is registered in (its drop is a
    discard from each, with no lookup)."""

    def __init__(self, slots: Collection[int]) -> None:
        self.slots = slots
        self.suspect = False
        self.path = None


class TablePath:
    """Three granules a walk read on its way to a leaf (``g1``, ``g2``, then ``g3``,
    the entry that points to the leaf's table), registered once for all the entries
    walked through them: ``live`` holds those entries (each also registered at its
    own leaf granule). A write to any of the three marks every entry in ``live``.
    An emptied path stays, as an emptied granule set does (a refill is one ``add``),
    and goes when a page it lies in is unwatched."""

    __slots__ = ("g1", "g2", "g3", "live")

    def __init__(self, g1: int, g2: int, g3: int) -> None:
        self.g1 = g1
        self.g2 = g2
        self.g3 = g3
        self.live: set[SlotCached] = set()


class SlotTracker:
    """8-byte-granule dependency tracking on top of page watches.

    ``add``/``drop`` register an entry's granules, ``rebase`` re-registers a
    re-verified entry, ``mark_all`` makes everything suspect. Memory reports writes
    per page frame, so every watched page keeps a snapshot of its bytes; on a write
    notification the tracker diffs the page against the snapshot and marks suspect
    only the entries that read a granule whose bytes changed. Writing one PTE of a
    table page therefore does not mark the entries that depend on its 511
    neighbours, and rewriting a value unchanged marks nothing. Exact as long as every
    RAM write goes through :class:`Memory` (the snapshot is re-synchronised on every
    notification).

    Watches are dropped lazily: a page whose last dependent entry went is unwatched
    at its next write, so entries dropped and refilled before software touches their
    tables (an IOTLB flush and refill) cost no new snapshot.

    :meth:`own_write` is for the model's own accessed/dirty-bit updates: bits that
    no cached result depends on, so the write only refreshes the snapshot of that
    granule and marks nothing. :attr:`version` is bumped whenever an entry is marked
    suspect, so summaries derived from many entries can check in O(1) that none of
    them became suspect.
    """

    def __init__(self, memory: Memory) -> None:
        self.mem = memory
        self.deps: dict[int, set[SlotCached]] = {}
        """Granule -> the entries built from it (a watched page's granules only; a set
        stays when it empties, so a refill is one ``add``)."""
        self.pages: dict[int, dict[int, set[SlotCached]]] = {}
        """Watched page frame -> its granules' sets (the same set objects as in
        :attr:`deps`): whether anything still depends on the page is one ``any``."""
        self.snaps: dict[int, bytearray] = {}
        """Watched page frame -> its bytes as last seen."""
        self.version = 0
        self.derived: list[dict[Any, Any]] = []
        """Dicts of answers derived from clean entries (a unit's cached selections),
        emptied whenever :attr:`version` is bumped (an entry was marked suspect)."""
        self.now: Callable[[], int] | None = None
        """Virtual time for the writes recorded as causes (the unit's clock)."""
        self._own = (-1, 0, 0)
        """(page, first byte, end byte) of the model's own write in progress."""
        self.paths: dict[int, TablePath] = {}
        """Last upper granule (``g3``) -> the path registered for it (one per granule:
        a walk that reached it through other upper granules registers on its own)."""
        self.ups: dict[int, set[TablePath]] = {}
        """Granule -> the paths registered at it (it has a set in :attr:`deps` too,
        so its page is watched)."""
        self.page_paths: dict[int, set[TablePath]] = {}
        """Watched page frame -> the paths with a granule in it."""

    @property
    def live(self) -> dict[int, int]:
        """Watched page frame -> how many of its granules have entries (for dumps
        and tests; derived from :attr:`pages` and the paths)."""
        ups = self.ups
        return {
            pfn: sum(1 for g, s in sets.items() if s or any(p.live for p in ups.get(g, ())))
            for pfn, sets in self.pages.items()
        }

    def dependants(self) -> dict[int, set[SlotCached]]:
        """Granule -> every entry built from it, registered on its own or under a
        path (granules with entries only; for dumps and tests)."""
        out: dict[int, set[SlotCached]] = {g: set(s) for g, s in self.deps.items() if s}
        for g, paths in self.ups.items():
            for p in paths:
                if p.live:
                    out.setdefault(g, set()).update(p.live)
        return out

    def on_write(self, pfn: int) -> None:
        snap = self.snaps.get(pfn)
        if snap is None:  # pragma: no cover - unwatched before Memory called back
            return
        if not any(self.pages[pfn].values()) and not any(
            p.live for p in self.page_paths.get(pfn, ())
        ):
            # Nothing depends on this page any more: stop watching it now (watches
            # are dropped lazily, so a refill before any write costs no snapshot).
            self._forget(pfn)
            return
        base = pfn << 12
        own_pfn, lo, hi = self._own
        if own_pfn == pfn:
            # The model's own A/D update: the snapshot matched RAM before it (every
            # write is notified), so only these bytes changed; nothing depends on them.
            snap[lo:hi] = self.mem.view[base + lo : base + hi]
            return
        cur = self.mem.view[base : base + 4096]
        if cur == snap:
            return
        diff = int.from_bytes(cur, "little") ^ int.from_bytes(snap, "little")
        snap[:] = cur
        deps, ups = self.deps, self.ups
        first = pfn << _SLOTS_PER_PAGE_SHIFT
        marked = False
        rest = diff
        while rest:
            slot = (rest.bit_length() - 1) >> 6
            rest &= (1 << (slot << 6)) - 1
            hit = deps.get(first | slot)
            paths = ups.get(first | slot)
            if paths:  # the entries under its paths too, each once
                hit = set(hit) if hit else set()
                for p in paths:
                    hit |= p.live
            if hit:
                self._blame(hit, base | (slot << 3), (diff >> (slot << 6)) & _U64)
                marked = True
        if marked:
            self.bump()

    def _blame(self, entries: set[SlotCached], addr: int, flipped: int) -> None:
        """The u64 at ``addr`` changed (``flipped`` bits) under cached ``entries``:
        mark them suspect and remember the write, with the call chain the platform
        captures (:attr:`hw.memory.Memory.write_origin`), as their cause."""
        new = self.mem.read_u64(addr)
        origin = self.mem.write_origin
        write = TableWrite(
            addr,
            new ^ flipped,
            new,
            0 if self.now is None else self.now(),
            None if origin is None else origin(),
        )
        for entry in entries:
            if entry.suspect:
                prev = causes(entry)
                if len(prev) < MAX_CAUSES:
                    entry.causes = (*prev, write)
            else:
                entry.suspect = True
                entry.causes = (write,)

    def own_write(self, addr: int, bits: int) -> None:
        """Set ``bits`` in the little-endian u64 at ``addr`` (a read-modify-write, as
        the hardware's locked A/D update) without marking entries that depend on it.
        The caller guarantees no cached result depends on ``bits``."""
        old = self.mem.read_u64(addr)
        if old & bits == bits:
            return
        off = addr & 0xFFF
        self._own = (addr >> 12, off, off + 8)
        try:
            self.mem.write_u64(addr, old | bits)
        finally:
            self._own = (-1, 0, 0)

    def own_write_many(self, updates: dict[int, int]) -> None:
        """:meth:`own_write` for many u64s (address -> bits), one read and one write
        per page they share: the A/D updates of one request's leaves, applied when the
        request ends (nothing reads them in between; the walks that follow compare
        addresses and rights, never A/D)."""
        by_page: dict[int, list[int]] = {}
        for addr in updates:
            by_page.setdefault(addr >> 12, []).append(addr)
        mem = self.mem
        for pfn, addrs in by_page.items():
            lo, hi = min(addrs), max(addrs) + 8
            count = (hi - lo) >> 3
            old = mem.read_u64s(lo, count)
            new = list(old)
            for addr in addrs:
                new[(addr - lo) >> 3] |= updates[addr]
            if new == list(old):
                continue
            self._own = (pfn, lo & 0xFFF, (lo & 0xFFF) + (hi - lo))
            try:
                mem.write_u64s(lo, new)
            finally:
                self._own = (-1, 0, 0)

    def _forget(self, pfn: int) -> None:
        """Stop watching page ``pfn``: its snapshot, its granules' (empty) sets and
        the (empty) paths with a granule in it go."""
        del self.snaps[pfn]
        self.mem.unwatch(pfn, self.on_write)
        deps = self.deps
        for granule in self.pages.pop(pfn):
            del deps[granule]
        for p in self.page_paths.pop(pfn, ()):
            self._unpath(p)

    def _unpath(self, p: TablePath) -> None:
        """Path ``p`` (holding no entry) goes from every index."""
        if self.paths.get(p.g3) is p:
            del self.paths[p.g3]
        for g in (p.g1, p.g2, p.g3):
            at = self.ups.get(g)
            if at is not None:
                at.discard(p)
                if not at:
                    del self.ups[g]
            on_page = self.page_paths.get(g >> _SLOTS_PER_PAGE_SHIFT)
            if on_page is not None:
                on_page.discard(p)
                if not on_page:
                    del self.page_paths[g >> _SLOTS_PER_PAGE_SHIFT]

    def first(self, granule: int) -> set[SlotCached]:
        """``granule`` gets its first entry: its (empty) set, and a watch on its page
        unless the page is watched already (for another granule)."""
        pfn = granule >> _SLOTS_PER_PAGE_SHIFT
        sets = self.pages.get(pfn)
        if sets is None:
            base = pfn << 12
            self.snaps[pfn] = bytearray(self.mem.view[base : base + 4096])
            self.mem.watch(pfn, self.on_write)
            sets = self.pages[pfn] = {}
        s: set[SlotCached] = set()
        self.deps[granule] = sets[granule] = s
        return s

    def path(self, g1: int, g2: int, g3: int) -> TablePath | None:
        """The path registered for ``g1, g2, g3`` (a new one if ``g3`` has none), or
        None when ``g3``'s path was walked through other upper granules."""
        p = self.paths.get(g3)
        if p is not None:
            return p if p.g1 == g1 and p.g2 == g2 else None
        p = self.paths[g3] = TablePath(g1, g2, g3)
        for g in (g1, g2, g3):
            if g not in self.deps:
                self.first(g)
            self.ups.setdefault(g, set()).add(p)
            self.page_paths.setdefault(g >> _SLOTS_PER_PAGE_SHIFT, set()).add(p)
        return p

    def add(self, entry: SlotCached) -> None:
        """Register ``entry`` at its granules: four in walk order as a path and the
        last (:meth:`path`), any others each on its own."""
        deps = self.deps
        slots = entry.slots
        p = None
        if len(slots) == 4 and slots.__class__ in _ORDERED:
            g1, g2, g3, g4 = slots
            p = self.path(g1, g2, g3)
        entry.path = p
        if p is not None:
            p.live.add(entry)
            s = deps.get(g4)
            if s is None:
                s = self.first(g4)
            s.add(entry)
            entry.leaf = s
            return
        for granule in slots:
            s = deps.get(granule)
            if s is None:
                s = self.first(granule)
            s.add(entry)

    def add_run(
        self, entries: Sequence[SlotCached], shared: Sequence[int], own: Sequence[int]
    ) -> None:
        """:meth:`add` for ``entries`` whose slots are the granules ``shared`` plus one
        of their own (``own[i]`` for ``entries[i]``), as a run of leaves under the same
        upper levels has: the shared granules are registered once for all of them (as
        a path when they are three)."""
        deps = self.deps
        p = self.path(*shared) if len(shared) == 3 else None
        if p is not None:
            p.live.update(entries)
        else:
            for granule in shared:
                s = deps.get(granule)
                if s is None:
                    s = self.first(granule)
                s.update(entries)
        pages = self.pages
        for granule, entry in zip(own, entries, strict=True):
            entry.path = p
            s = deps.get(granule)
            if s is not None:
                s.add(entry)
            else:
                sets = pages.get(granule >> _SLOTS_PER_PAGE_SHIFT)
                if sets is None:  # the page is not watched yet
                    s = self.first(granule)
                    s.add(entry)
                else:  # :meth:`first` in line: a run's leaves share their table page
                    s = deps[granule] = sets[granule] = {entry}
            if p is not None:
                entry.leaf = s

    def drop(self, entry: SlotCached) -> None:
        """Forget ``entry``'s dependencies. A granule's set (and a path) stays when it
        empties (a refill reuses it); the page is unwatched at its next write
        (:meth:`on_write`)."""
        self.drop_all((entry,))

    def drop_all(self, entries: Iterable[SlotCached]) -> None:
        """:meth:`drop` of each of ``entries`` (an invalidation's victims, in one call;
        a cache's global flush)."""
        for entry in entries:
            p = entry.path
            if p is not None:  # its path and its leaf granule's set
                p.live.discard(entry)
                entry.leaf.discard(entry)
                continue
            for granule in entry.slots:
                s = self.deps.get(granule)
                if s is not None:
                    s.discard(entry)

    def rebase(self, entry: SlotCached, slots: Collection[int]) -> None:
        """Entry re-verified against fresh tables: depend on the granules just read."""
        self.drop(entry)
        entry.slots = slots
        entry.suspect = False
        self.add(entry)

    def mark_all(self, entries: Iterable[SlotCached]) -> None:
        for entry in entries:
            entry.suspect = True
        self.bump()

    def bump(self) -> None:
        """Entries were marked suspect: :attr:`version` moves on, :attr:`derived` empties."""
        self.version += 1
        for d in self.derived:
            d.clear()


def causes(entry: SlotCached) -> tuple[TableWrite, ...]:
    """The writes that made ``entry`` suspect (empty if none was recorded)."""
    got: tuple[TableWrite, ...] = getattr(entry, "causes", ())
    return got
