"""The translation pipeline every IOMMU model and every device ATC shares.

A remapping unit (VT-d, SMMUv3) and a PCIe function's Address Translation Cache do
the same thing with a request once they know which tables it selects: look the pages
up in a cache tagged by what the vendor says distinguishes address spaces, walk and
fill on a miss, re-check an entry whose source tables changed, and hand back the
translated prefix as merged physical runs. This module is that common part; a vendor
supplies only

- the *tag* and the *source* of a request: the tag keys the cache (VT-d: DID and
  PASID or :data:`SL_TAG`; SMMUv3: VMID and ASID; an ATC: the PASID), the source says
  which tables an entry was walked from (VT-d: the stage, SMMUv3: the TTBx root, ATC:
  the Priv bit), compared by identity on the hit path;
- ``need``: the permission bits the request needs (a vendor encodes every rule that
  decides whether a cached entry answers a request, Priv/PAN included, as bits that
  must all be set in the entry's ``perms``);
- a *slow path* (:class:`SlowPath`): what happens to a page the hit path cannot
  answer (miss, suspect entry, other source, missing right): walk and fill, re-check,
  fault reasons, stale reporting, A/D updates.

Caches (:class:`TagCache`): per tag one dict per page size (4 KiB, 2 MiB, 1 GiB) keyed
by page number, so a hit builds no tuple, plus a dict of :class:`Block` summaries: the
merged physical runs of a 2 MiB block whose 512 4 KiB entries are cached, clean and
from one source, so a long request costs one lookup per 2 MiB. Summaries are a derived
view: any change to one of their entries drops them, and any entry marked suspect
anywhere outdates them all (:attr:`hw.pagewatch.SlotTracker.version`).

Stale detection (DESIGN §6): entries remember the 8-byte table granules they came
from (:class:`hw.pagewatch.SlotCached`); a write to one marks them suspect and the
slow path re-walks them (:meth:`Pipeline.revalidate`). A cached answer that differs
from the live tables is counted and reported once here (:meth:`Pipeline.stale`); the
vendor names the event and what was read.

:func:`translate_run` is the one hit path: it is called once per request and loops
over the request's pages itself, so a warm request costs one Python call, not one per
page (what the models inlined before, four times); :func:`translate_page` is the same
for a request inside one 4 KiB page, without the loops. A global flush keeps each
tag's emptied dicts for the refills that follow (:attr:`TagCache.idle`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Final, Protocol, cast

from attrs import define

from hw.bus import DMA_FAULT_BUS, DmaFault, Finding
from hw.memory import Memory
from hw.pagewatch import SlotCached, SlotTracker

SHIFTS: Final = (12, 21, 30)
BLOCK_SHIFT: Final = 21
BLOCK: Final = 3
"""Index of the block-summary dict in a tag's table (after the three page sizes)."""
FEW_POPPED: Final = 8
"""A global flush pops up to this many 4 KiB entries of a tag one by one (dropping
each in line), so the emptied dict keeps its key table for the refills that follow
(``clear`` frees it, and the next fill allocates it again); more are released and
cleared at once (a pop per entry costs a call)."""
INTR_LO: Final = 0xFEE0_0000
INTR_HI: Final = 0xFEF0_0000
"""The x86 interrupt window; RAM always ends below it, so a block summary never
covers it (VT-d faults DMA into it, a translated SMMU/ATC request never reaches it)."""


class StaleTranslationError(Exception):
    """A cached translation that differs from the tables was used (``strict_stale``)."""


class TlbEntry(SlotCached):
    """One cached translation: page ``vpn`` of size ``1 << shift`` maps to frame
    ``phys`` with rights ``perms`` (vendor bits); ``src`` is what it was walked from,
    ``tag`` its cache tag, ``pte_addr`` the leaf entry (for a later D-bit update) and
    ``dirty`` whether a write through it needs no D update."""

    __slots__ = ("dirty", "perms", "phys", "pte_addr", "shift", "src", "tag", "vpn")

    def __init__(
        self,
        tag: Hashable,
        vpn: int,
        shift: int,
        phys: int,
        perms: int,
        src: object,
        pte_addr: int = -1,
        slots: Collection[int] = (),
        dirty: bool = True,
    ) -> None:
        self.slots = slots
        self.suspect = False
        self.path = None
        self.tag = tag
        self.vpn = vpn
        self.shift = shift
        self.phys = phys
        self.perms = perms
        self.src = src
        self.pte_addr = pte_addr
        self.dirty = dirty

    @property
    def addr(self) -> int:
        return self.vpn << self.shift

    def same(self, phys: int, shift: int, perms: int) -> bool:
        return self.phys == phys and self.shift == shift and self.perms == perms


class Block:
    """Summary of one 2 MiB block whose 512 4 KiB entries of one tag are all cached,
    clean and from ``src``: the AND of their rights, whether all are dirty, and the
    physically merged ``runs`` as ``(offset in block, physical address, length)``."""

    __slots__ = ("dirty", "perms", "runs", "src", "version")

    def __init__(
        self,
        src: object,
        perms: int,
        dirty: bool,
        runs: tuple[tuple[int, int, int], ...],
        version: int,
    ) -> None:
        self.src = src
        self.perms = perms
        self.dirty = dirty
        self.runs = runs
        self.version = version


TagTable = tuple[dict[int, TlbEntry], dict[int, TlbEntry], dict[int, TlbEntry], dict[int, Block]]
"""One tag: entries per page size (4 KiB, 2 MiB, 1 GiB), then block summaries."""


class Versioned(Protocol):
    """What dates block summaries: :attr:`hw.pagewatch.SlotTracker.version`, bumped
    whenever an entry anywhere is marked suspect."""

    version: int


RamRun = Callable[[int, int], int]


def ram_limits(memory: Memory) -> tuple[int, RamRun | None]:
    """(top of the RAM that starts at 0 with no hole, the run function for the rest):
    RAM in one piece is one comparison; above a hole :meth:`Memory.ram_run` decides."""
    if not memory.holes:
        return memory.size, None
    base, size = memory.ranges[0]
    return (size if base == 0 else 0), memory.ram_run


def _ram_bytes(cache: TagCache, phys: int, n: int) -> int:
    """How many of ``n`` bytes from ``phys`` are RAM (the slow half of the RAM test)."""
    if phys + n <= cache.ram:
        return n
    if cache.ram_run is not None:
        return cache.ram_run(phys, n)
    return max(0, min(n, cache.ram - phys))


def _unregistered(entries: Iterable[TlbEntry]) -> None:
    """What a cache without a tracker and without a :meth:`TagCache.dropped` of its
    own does with the entries it drops: nothing (none were registered)."""


class TagCache:
    """A translation cache: tag -> :data:`TagTable`. ``deps`` dates its block
    summaries (the tracker its entries are registered with); with ``tracker`` the
    cache registers and drops its entries there itself (an IOTLB), without it the
    owner does (an ATC, whose entries the translation agent registered)."""

    def __init__(
        self,
        deps: Versioned,
        ram: int,
        tracker: SlotTracker | None = None,
        ram_run: RamRun | None = None,
    ) -> None:
        self.deps = deps
        self.ram = ram
        """Every address below this is RAM (the hit path's one comparison)."""
        self.ram_run = ram_run
        """For RAM with holes: how many bytes from an address above :attr:`ram` are RAM."""
        self.tracker = tracker
        self.tables: dict[Hashable, TagTable] = {}
        """Tag -> its table, while it holds entries."""
        self.idle: dict[Hashable, TagTable] = {}
        """Tables of tags a global flush emptied, for their next fill."""
        self.release: Callable[[Iterable[TlbEntry]], None] = (
            self._dropped_list
            if type(self).dropped is not TagCache.dropped
            else _unregistered
            if tracker is None
            else tracker.drop_all
        )
        """:meth:`dropped` of entries being removed (iterated during the call only):
        a subclass's own, or straight the tracker's :meth:`~SlotTracker.drop_all`."""
        self.drops_in_line = self.release == getattr(tracker, "drop_all", None)
        """:attr:`release` is the tracker's: :meth:`flush_all` drops the few 4 KiB
        entries it pops that are registered under a path in line
        (:meth:`SlotTracker.drop_all`'s first branch)."""

    def __len__(self) -> int:
        return sum(len(d) for t in self.tables.values() for d in t[:BLOCK])

    def entries(self) -> list[TlbEntry]:
        return [e for t in self.tables.values() for d in t[:BLOCK] for e in d.values()]

    def lookup(self, tag: Hashable, addr: int) -> TlbEntry | None:
        t = self.tables.get(tag)
        if t is None:
            return None
        return t[0].get(addr >> 12) or t[1].get(addr >> 21) or t[2].get(addr >> 30)

    def table(self, tag: Hashable) -> TagTable:
        """The table to fill ``tag``'s entries into: its own in :attr:`tables`, else
        the one a global flush left it in :attr:`idle` (moved back), else a new one.
        A tag is never in both dicts (:meth:`put` does the same in line)."""
        t = self.tables.get(tag)
        if t is None:
            t = self.idle.pop(tag, None)
            if t is None:
                t = ({}, {}, {}, {})
            self.tables[tag] = t
        return t

    def put(self, entry: TlbEntry) -> None:
        """Insert ``entry`` (replacing the one at its page) and drop its block summary;
        with a tracker, register its granules there (:meth:`SlotTracker.add`, in line
        for a 4-level walk whose path is registered: an IOTLB's entries keep their
        granules in walk order, a list or tuple)."""
        tag = entry.tag
        t = self.tables.get(tag)
        if t is None:
            t = self.idle.pop(tag, None)
            if t is None:
                t = ({}, {}, {}, {})
            self.tables[tag] = t
        shift = entry.shift
        vpn = entry.vpn
        d = t[0] if shift == 12 else t[1] if shift == 21 else t[2]
        old = d.get(vpn)
        d[vpn] = entry
        if t[3]:
            t[3].pop((vpn << shift) >> BLOCK_SHIFT, None)
        tracker = self.tracker
        if tracker is not None:
            try:  # a 4-level walk's granules, its path and leaf registered already
                g1, g2, g3, g4 = entry.slots
                p = tracker.paths[g3]
                s = tracker.deps[g4]
            except (ValueError, KeyError):
                tracker.add(entry)
            else:  # SlotTracker.add in line (the usual case, a refill)
                if p.g1 == g1 and p.g2 == g2:
                    s.add(entry)
                    p.live.add(entry)
                    entry.path = p
                    entry.leaf = s
                else:
                    tracker.add(entry)
        if old is not None:
            self.release([old])

    def dropped(self, entries: list[TlbEntry]) -> None:
        """Entries left the cache (replaced, invalidated): with a tracker, their
        registrations go (a subclass without one overrides this, and the cache
        calls the override through :attr:`release`)."""
        self.release(entries)

    def _dropped_list(self, entries: Iterable[TlbEntry]) -> None:
        self.dropped(entries if entries.__class__ is list else list(entries))

    def entry_changed(self, entry: TlbEntry) -> None:
        """``entry`` (cached) was re-verified or re-bound: drop its block's summary."""
        if entry.shift == 12:
            t = self.tables.get(entry.tag)
            if t is not None:
                t[BLOCK].pop(entry.vpn >> 9, None)

    def summarise(self, t: TagTable, bn: int, src: object) -> Block | None:
        """Summarise 2 MiB block ``bn`` of ``t`` if all its 4 KiB entries are cached,
        clean and from ``src``, and all of it maps RAM."""
        d = t[0]
        first = bn << 9
        if first not in d or first + 511 not in d:
            return None
        got = list(map(d.get, range(first, first + 512)))
        if None in got:
            return None
        perms = -1
        dirty = True
        runs: list[tuple[int, int, int]] = []
        start = end = -1
        off = 0
        for e in cast(list[TlbEntry], got):
            if e.suspect or e.src is not src:
                return None
            perms &= e.perms
            dirty = dirty and e.dirty
            phys = e.phys
            if phys == end:
                end += 4096
            else:
                if start >= 0:
                    runs.append((off - (end - start), start, end - start))
                start, end = phys, phys + 4096
            off += 4096
        runs.append((off - (end - start), start, end - start))
        for _, phys, n in runs:
            if _ram_bytes(self, phys, n) < n or (phys < INTR_HI and phys + n > INTR_LO):
                return None
        blk = Block(src, perms, dirty, tuple(runs), self.deps.version)
        t[BLOCK][bn] = blk
        return blk

    def flush(
        self, match: Callable[[Hashable], bool] | None, first: int = 0, last: int = -1
    ) -> int:
        """Drop the entries of every tag ``match`` accepts (None: all) that overlap
        the byte range ``[first, last]`` (``last`` -1: everything). Returns how many."""
        if match is None and last < 0:
            return self.flush_all()
        dropped: list[TlbEntry] = []
        for key in list(self.tables):
            if match is None or match(key):
                self._flush_table(key, first, last, dropped)
        if dropped:
            self.release(dropped)
        return len(dropped)

    def flush_all(self) -> int:
        """:meth:`flush` of everything. Every tag's dicts are emptied and kept aside
        (:attr:`idle`), not rebuilt: the refills that follow take their tag's table
        back. The two dicts trade places: :attr:`tables` becomes :attr:`idle` whole
        (no tag is hashed or moved), and the idle dict, empty since the refills took
        its tags (any left over join the others first), becomes :attr:`tables`,
        keeping the key table the refills need (``clear`` would free it). Each
        dict's entries are released from its own view (no list of them is built),
        except a few 4 KiB entries (:data:`FEW_POPPED`), popped one by one; with the
        tracker's release (:attr:`drops_in_line`) those registered under a path
        leave their two sets here, without the call. Nobody may hold :attr:`tables`
        across a call that can flush: it is read from the cache each time."""
        tables = self.tables
        if not tables:
            return 0
        n = 0
        for d4, d2m, d1g, blocks in tables.values():
            if d4:
                k = len(d4)
                n += k
                if k <= FEW_POPPED and self.drops_in_line:
                    while d4:  # popped: the dict keeps its key table for the refill
                        e = d4.popitem()[1]
                        p = e.path
                        if p is not None:
                            p.live.discard(e)
                            e.leaf.discard(e)
                        else:
                            self.release((e,))
                else:
                    self.release(d4.values())
                    d4.clear()
            if d2m:
                n += len(d2m)
                self.release(d2m.values())
                d2m.clear()
            if d1g:
                n += len(d1g)
                self.release(d1g.values())
                d1g.clear()
            if blocks:
                blocks.clear()
        idle = self.idle
        if idle:  # tags an earlier flush emptied and no fill took back since
            tables.update(idle)
            idle.clear()
        self.tables = idle
        self.idle = tables
        return n

    def flush_key(self, key: Hashable, first: int = 0, last: int = -1) -> int:
        """:meth:`flush` of the one tag ``key``: no scan over the other tags."""
        if key not in self.tables:
            return 0
        dropped: list[TlbEntry] = []
        self._flush_table(key, first, last, dropped)
        if dropped:
            self.release(dropped)
        return len(dropped)

    def _flush_table(self, key: Hashable, first: int, last: int, dropped: list[TlbEntry]) -> None:
        """Move the entries of tag ``key`` overlapping ``[first, last]`` to ``dropped``."""
        t = self.tables[key]
        blocks = t[BLOCK]
        for shift, d in zip(SHIFTS, t[:BLOCK], strict=True):
            if not d:
                continue
            if last < 0:
                dropped.extend(d.values())
                d.clear()
                continue
            lo, hi = first >> shift, last >> shift
            if hi - lo + 1 <= len(d):
                victims = [v for v in range(lo, hi + 1) if v in d]
            else:
                victims = [v for v in d if lo <= v <= hi]
            for vpn in victims:
                dropped.append(d.pop(vpn))
        if last < 0:
            blocks.clear()
        elif blocks:
            b0, b1 = first >> BLOCK_SHIFT, last >> BLOCK_SHIFT
            if b1 - b0 + 1 <= len(blocks):
                for bn in range(b0, b1 + 1):
                    blocks.pop(bn, None)
            else:
                for bn in [b for b in blocks if b0 <= b <= b1]:
                    del blocks[bn]
        if not any(t[:BLOCK]):
            del self.tables[key]


class SlowPath(Protocol):
    """The vendor's part of one request: called for every page the hit path cannot
    answer with the entry found there (None: miss). Returns the entry to use for the
    page at ``a`` (rights already checked, faults recorded) or the fault that ends
    the request. ``end`` is where the request ends."""

    def __call__(self, e: TlbEntry | None, a: int, end: int) -> TlbEntry | DmaFault: ...


NEVER: Final = object()
"""A source no entry has: passing it sends every page to the slow path (a request
whose upper-level structures must be re-checked page by page)."""


def translate_run(
    cache: TagCache,
    tag: Hashable,
    src: object,
    need: int,
    dirty_ok: bool,
    addr: int,
    end: int,
    write: bool,
    slow: SlowPath,
    out: list[TlbEntry] | None = None,
) -> tuple[list[tuple[int, int]], DmaFault | None, int]:
    """Translate ``[addr, end)`` through ``cache``'s ``tag``: the merged physical runs
    of the translated prefix, the fault that stopped it (None) and the pages served
    by the hit path.

    A 2 MiB block with a current summary from ``src`` whose rights cover ``need``
    (and that is all dirty unless ``dirty_ok``) costs one lookup; other pages are
    looked up one by one, and a page whose entry is clean, from ``src``, covers
    ``need`` and lies in RAM is a hit without leaving this loop. Everything else goes
    to ``slow``. The result is cut at the end of RAM (fault :data:`DMA_FAULT_BUS`).
    A block covered entirely is summarised for next time. With ``out`` the entries
    used are appended to it one per leaf (an ATS Translation Request) and summaries
    are neither used nor built."""
    t = cache.tables.get(tag)
    ram = cache.ram
    runs: list[tuple[int, int]] = []
    run_start = run_end = -1
    hits = 0
    fault: DmaFault | None = None
    use_blocks = out is None
    a = addr
    blk: Block | None = None
    while a < end:
        bn = a >> 21  # BLOCK_SHIFT
        lim = (bn + 1) << 21
        whole = lim <= end and a == lim - 0x20_0000
        if lim > end:
            lim = end
        if t is not None and use_blocks:
            blk = t[3].get(bn)
            if (
                blk is not None
                and blk.version == cache.deps.version
                and blk.src is src
                and blk.perms & need == need
                and (dirty_ok or blk.dirty)
            ):
                base = bn << 21
                lo, hi = a - base, lim - base
                for off, phys, n in blk.runs:
                    if off + n <= lo:
                        continue
                    if off >= hi:
                        break
                    s = lo if lo > off else off
                    k = (off + n if off + n < hi else hi) - s
                    phys += s - off
                    if phys == run_end:
                        run_end += k
                    else:
                        if run_start >= 0:
                            runs.append((run_start, run_end - run_start))
                        run_start, run_end = phys, phys + k
                hits += ((lim - 1) >> 12) - (a >> 12) + 1
                a = lim
                continue
        while a < lim:
            e: TlbEntry | None = None
            if t is not None:
                e = t[0].get(a >> 12) or t[1].get(a >> 21) or t[2].get(a >> 30)
                if (
                    e is not None
                    and not e.suspect
                    and e.src is src
                    and e.perms & need == need
                    and (dirty_ok or e.dirty)
                ):
                    shift = e.shift
                    off = a & ((1 << shift) - 1)
                    chunk = (1 << shift) - off
                    if a + chunk > end:
                        chunk = end - a
                    phys = e.phys | off
                    if phys + chunk <= ram or (
                        cache.ram_run is not None and cache.ram_run(phys, chunk) == chunk
                    ):
                        hits += 1
                        if phys == run_end:
                            run_end += chunk
                        else:
                            if run_start >= 0:
                                runs.append((run_start, run_end - run_start))
                            run_start, run_end = phys, phys + chunk
                        if out is not None:
                            out.append(e)
                        a += chunk
                        continue
            got = slow(e, a, end)
            if got.__class__ is DmaFault:
                fault = got
                break
            use: TlbEntry = got  # type: ignore[assignment]
            if t is None:  # (read again: a global flush trades the dicts)
                t = cache.tables.get(tag)
            shift = use.shift
            nxt = ((a >> shift) + 1) << shift
            chunk = (end if nxt > end else nxt) - a
            phys = use.phys | (a & ((1 << shift) - 1))
            if phys + chunk > ram:
                good = _ram_bytes(cache, phys, chunk)
                if good < chunk:
                    chunk = good
                    fault = DmaFault(a + chunk, DMA_FAULT_BUS, write, "outside RAM")
            if phys == run_end or not chunk:
                run_end += chunk
            else:
                if run_start >= 0:
                    runs.append((run_start, run_end - run_start))
                run_start, run_end = phys, phys + chunk
            if out is not None:
                out.append(use)
            if fault is not None:
                break
            a += chunk
            if a < lim and use_blocks and t is not None:
                new = t[3].get(bn)
                if new is not None and new is not blk:
                    # The slow path summarised this block (it filled the rest of
                    # it at once): the block test above serves what is left.
                    break
        if fault is not None:
            break
        if whole and a >= lim and use_blocks and t is not None:
            cache.summarise(t, bn, src)
    if run_end > run_start >= 0:
        runs.append((run_start, run_end - run_start))
    return runs, fault, hits


def translate_page(
    cache: TagCache,
    tag: Hashable,
    src: object,
    need: int,
    dirty_ok: bool,
    addr: int,
    end: int,
    write: bool,
    slow: SlowPath,
) -> tuple[tuple[tuple[int, int], ...], DmaFault | None, int]:
    """:func:`translate_run` of a request that lies in one 4 KiB page (``addr < end
    <= (addr | 0xFFF) + 1``), its runs as a tuple: the same answer, without the
    loops. The page's entry (of any size) is a hit under the same test; a block
    summary would only repeat that entry's answer (it covers clean entries from one
    source, all in RAM) and none is built (a page is never a whole block). Anything
    else is the slow path's, cut at the end of RAM as there."""
    t = cache.tables.get(tag)
    e: TlbEntry | None = None
    n = end - addr
    if t is not None:
        e = t[0].get(addr >> 12) or t[1].get(addr >> 21) or t[2].get(addr >> 30)
        if (
            e is not None
            and not e.suspect
            and e.src is src
            and e.perms & need == need
            and (dirty_ok or e.dirty)
        ):
            phys = e.phys | (addr & ((1 << e.shift) - 1))
            if phys + n <= cache.ram or (cache.ram_run is not None and cache.ram_run(phys, n) == n):
                return ((phys, n),), None, 1
    got = slow(e, addr, end)
    if got.__class__ is DmaFault:
        return (), got, 0
    use: TlbEntry = got  # type: ignore[assignment]
    phys = use.phys | (addr & ((1 << use.shift) - 1))
    if phys + n > cache.ram:
        good = _ram_bytes(cache, phys, n)
        if good < n:
            fault = DmaFault(addr + good, DMA_FAULT_BUS, write, "outside RAM")
            return (((phys, good),) if good else ()), fault, 0
    return ((phys, n),), None, 0


@define(slots=True)
class PipelineStats:
    """Counters of the shared pipeline (a vendor's stats object extends these)."""

    iotlb_hits: int = 0
    iotlb_misses: int = 0
    stale_uses: int = 0


class Pipeline:
    """One IOMMU unit's translation machinery: the dependency tracker, the IOTLB
    (a :class:`TagCache`), and the shadows of translations handed to devices' ATCs."""

    def __init__(
        self,
        memory: Memory,
        stats: PipelineStats,
        strict: bool,
        now: Callable[[], int] | None = None,
    ) -> None:
        self.deps = SlotTracker(memory)
        self.deps.now = now
        ram, ram_run = ram_limits(memory)
        self.iotlb = TagCache(self.deps, ram, self.deps, ram_run)
        self.devtlb: set[TlbEntry] = set()
        """Translations held in devices' ATCs (the ATC entries themselves)."""
        self.stats = stats
        self.strict = strict

    def revalidate(self, e: SlotCached, same: bool, slots: Collection[int]) -> bool:
        """A suspect entry was re-walked: if the tables still give ``same`` answer,
        depend on the granules just read (``slots``) and drop its block summary."""
        if not same:
            return False
        self.deps.rebase(e, slots)
        if isinstance(e, TlbEntry) and e not in self.devtlb:
            self.iotlb.entry_changed(e)
        return True

    def rebind(self, e: TlbEntry, src: object) -> None:
        """``e`` was walked from tables equal to ``src`` (another object): adopt it."""
        e.src = src
        self.iotlb.entry_changed(e)

    def put_devtlb(self, entry: TlbEntry) -> None:
        self.devtlb.add(entry)
        self.deps.add(entry)

    def drop_devtlb(self, entry: TlbEntry) -> None:
        if entry in self.devtlb:
            self.devtlb.discard(entry)
            self.deps.drop(entry)

    def stale(self, what: str, report: Callable[[], object]) -> None:
        """A cached answer differing from the tables was used: count it, let the
        vendor emit its event and build its finding (``report``), and raise when
        strict, the finding's report in the message."""
        self.stats.stale_uses += 1
        found = report()
        if self.strict:
            text = found.report() if isinstance(found, Finding) else ""
            raise StaleTranslationError(f"{what}\n{text}" if text else what)
