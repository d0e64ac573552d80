"""The checks a recorded DMA/IOMMU trace can decide, and the ones it cannot.

:func:`check` walks a parsed trace once, in order, and keeps two layers of state:

- **DMA API** (``dma:*``): the live mappings of each device, as ``kernel/dma/debug.c``
  keeps its entries. Unmaps, frees and syncs are compared with them by the same
  functions the model's DMA-API debugging uses (:func:`kernel.dma.debug.unmap_mismatches`,
  :func:`~kernel.dma.debug.sync_mismatches`), so the findings carry Linux's texts.
  A second unmap of an address already unmapped is told apart as a double unmap.
- **IOMMU** (``iommu:*`` and ``intel_iommu:*``): the live IOVA ranges of each domain, the
  strict-mode unmaps not yet covered by an IOTLB invalidation (``cache_tag_flush_range``,
  ``cache_tag_flush_all`` or a decoded ``qi_submit``) — and, for each (device, PASID) whose
  ``devtlb`` cache tag the domain holds, by a device-TLB invalidation — and what was
  unmapped, for device page faults.

``iommu:map``/``unmap`` name no device or domain. A first pass
(:func:`attribute`) gives each the device of the ``dma:*`` call that follows it on the
same CPU and overlaps it (Linux traces ``map`` inside ``dma_map_*`` and ``unmap`` before
``dma_unmap_*`` returns); a device's domain is the DID of the ``cache_tag_assign`` that
precedes its ``attach_device_to_domain``. Events it cannot attribute (the boot-time
identity maps) go to one "unattributed" space, where no overlap or not-mapped finding is
made.

A ``[LOST n EVENTS]`` line makes a finding that rests on an event's absence uncertain
when the loss falls where that event would have been: after the mapping for one still
live at the end, after the unmap for a missing invalidation or a fault after unmap,
anywhere before for an unmap of something never mapped. Uncertain findings are reported
but do not fail.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field, frozen
from sortedcontainers import SortedDict

from iommulab.replay.events import (
    PAGE_SIZE,
    CacheTag,
    CacheTagFlush,
    DmaAlloc,
    DmaFree,
    DmaMap,
    DmaMapSg,
    DmaSync,
    DmaUnmap,
    DmaUnmapSg,
    Event,
    IommuAttach,
    IommuMap,
    IommuUnmap,
    IoPageFault,
    Lost,
    Marker,
    QiSubmit,
)
from iommulab.replay.qi import decode
from kernel.dma.debug import (
    MAP_ERR_CHECK_NOT_APPLICABLE,
    TYPE_COHERENT,
    TYPE_RESOURCE,
    TYPE_SG,
    TYPE_SINGLE,
    not_allocated_message,
    sync_mismatches,
    sync_not_allocated_message,
    unmap_mismatches,
)
from kernel.dma.direction import DMA_MAPPING_ERROR

NOT_MAPPED = "not-mapped"
DOUBLE_UNMAP = "double-unmap"
MISMATCH = "mismatch"
SYNC = "sync"
LIVE_AT_END = "live-at-end"
NO_INVALIDATION = "no-invalidation"
OVERLAP = "overlap"
UNMAPPED_SIZE = "unmapped-size"
FAULT_UNMAPPED = "fault-after-unmap"
FAULT_NEVER_MAPPED = "fault-never-mapped"

CHECKS = (
    NOT_MAPPED,
    DOUBLE_UNMAP,
    MISMATCH,
    SYNC,
    LIVE_AT_END,
    NO_INVALIDATION,
    OVERLAP,
    UNMAPPED_SIZE,
    FAULT_UNMAPPED,
    FAULT_NEVER_MAPPED,
)
"""Every check :func:`check` makes."""

UNDECIDABLE = (
    "dma_mapping_error() not called after a map: the call has no tracepoint",
    "CPU access to a buffer the device owns (between map and unmap, or without a sync): "
    "CPU loads and stores are not traced",
    "mapping from the stack, vmalloc or invalid memory: the trace prints physical addresses only",
    "a device-TLB (ATS) invalidation missing for a device whose devtlb cache tag was "
    "assigned before tracing began: only cache_tag_assign shows which devices use ATS",
    "whether the kernel ran strict or lazy (flush queue): the trace does not say; with "
    "--lazy, unmaps still queued at the end are not findings",
    "which IOVA a device actually used: only faulting DMA is traced (io_page_fault)",
)
"""What a DMA/IOMMU trace cannot decide, listed in reports instead of guessed."""

_DIRS = {"BIDIRECTIONAL": 0, "TO_DEVICE": 1, "FROM_DEVICE": 2, "NONE": 3}
_NULL_PTRS = ("(null)", "0000000000000000", "00000000")
UNATTRIBUTED = "?"


@frozen
class Finding:
    """One thing wrong in the trace: its check, Linux-style text, the device, the lines
    involved (ascending; the deciding one is ``line``) and its timestamp."""

    check: str
    message: str
    device: str
    lines: tuple[int, ...]
    line: int
    ts_ns: int
    uncertain: str = ""

    def stamp(self) -> str:
        sec, ns = divmod(self.ts_ns, 1_000_000_000)
        return f"{sec}.{ns // 1000:06d}"


@frozen
class DmaMapping:
    """A live DMA-API mapping rebuilt from the trace (the fields of
    ``struct dma_debug_entry`` the comparisons read, plus where it was made)."""

    device: str
    type: str
    dev_addr: int
    size: int
    direction: int
    paddr: int
    line: int
    ts_ns: int
    sg_call_ents: int = 0
    map_err_type: int = MAP_ERR_CHECK_NOT_APPLICABLE


def _entry(
    e: Event, dev: str, typ: str, addr: int, size: int, d: str, paddr: int = 0, ents: int = 0
) -> DmaMapping:
    """A :class:`DmaMapping` for event ``e`` (direction by its printed name)."""
    return DmaMapping(dev, typ, addr, size, _DIRS.get(d, 3), paddr, e.line, e.ts_ns, ents)


@frozen
class _Range:
    start: int
    end: int
    line: int
    device: str
    map_line: int = 0


IOTLB = "iotlb"


@define
class _Pending:
    """An unmapped IOVA range still waiting for invalidations: the IOTLB, and the
    device-TLB of every (device, PASID) with a ``devtlb`` cache tag in its domain."""

    start: int
    end: int
    line: int
    device: str
    map_line: int
    need: set[object]

    def missing(self) -> str:
        if IOTLB in self.need:
            return "an IOTLB invalidation"
        tags = sorted(t for t in self.need if isinstance(t, tuple))
        return f"a device-TLB invalidation for {tags[0][0]} PASID {tags[0][1]}"


@define
class Stats:
    """Counts for the report: pairs reconciled, live mappings over time, rates."""

    dma_maps: int = 0
    dma_unmaps: int = 0
    dma_reconciled: int = 0
    iommu_maps: int = 0
    iommu_unmaps: int = 0
    iommu_reconciled: int = 0
    invalidations: int = 0
    first_ts: int | None = None
    last_ts: int = 0
    live: dict[str, int] = field(factory=dict)
    peak_live: dict[str, int] = field(factory=dict)
    live_series: dict[str, list[tuple[int, int]]] = field(factory=dict)
    """Per device: (ts_ns, live DMA mappings) at every change."""
    at_markers: list[tuple[Marker, dict[str, int]]] = field(factory=list)
    iova_bytes: dict[str, int] = field(factory=dict)
    peak_iova_bytes: dict[str, int] = field(factory=dict)
    iova_extent: dict[str, tuple[int, int]] = field(factory=dict)
    lifetimes: list[tuple[str, int, int, int, int, int]] = field(factory=list)
    """Ended DMA mappings: (device, dma_addr, size, map ts, unmap ts, map line)."""

    def rate(self, n: int) -> float:
        span = (self.last_ts - (self.first_ts or 0)) / 1e9
        return n / span if span > 0 else 0.0


@define
class Result:
    findings: list[Finding] = field(factory=list)
    stats: Stats = field(factory=Stats)
    live: list[DmaMapping] = field(factory=list)
    """DMA mappings still live where the walk stopped."""
    lost: list[Lost] = field(factory=list)
    until_line: int = 0

    @property
    def certain(self) -> list[Finding]:
        return [f for f in self.findings if not f.uncertain]


# --------------------------------------------------------------------------- attribution


def _dma_ranges(e: Event) -> list[tuple[int, int]] | None:
    """Page ranges a DMA event touches; ``[]`` when it names none (``dma_unmap_sg``),
    ``None`` when the event is not a DMA-API call."""
    if isinstance(e, DmaMap | DmaUnmap | DmaAlloc | DmaFree):
        return [(e.dma_addr & ~(PAGE_SIZE - 1), e.dma_addr + max(e.size, 1))]
    if isinstance(e, DmaMapSg):
        return [
            (a & ~(PAGE_SIZE - 1), a + max(s, 1))
            for a, s in zip(e.dma_addrs, e.sizes, strict=False)
        ]
    if isinstance(e, DmaUnmapSg):
        return []
    return None


ATTRIBUTION_MISSES = 8
"""How many other ``dma:*`` calls on a CPU may come between an ``iommu:map``/``unmap``
and its own call (interrupts nest on a CPU) before it is left unattributed."""


def attribute(events: Sequence[Event]) -> dict[int, str]:
    """Line of each ``iommu:map``/``unmap`` -> the device of the ``dma:*`` call on the same
    CPU that follows it and overlaps its range (``dma_unmap_sg`` prints no DMA address:
    it takes every pending unmap of its CPU). ``dma_free*`` is traced before the memory
    is unmapped (``dma_free_attrs``), so an unmap right after a free of its range on the
    same CPU is that free's."""
    out: dict[int, str] = {}
    pending: dict[int, list[list[int]]] = {}
    freeing: dict[int, DmaFree] = {}
    for e in events:
        if isinstance(e, IommuUnmap):
            free = freeing.pop(e.cpu, None)
            if free is not None and free.dma_addr < e.end and e.iova < free.dma_addr + free.size:
                out[e.line] = free.device
                continue
        if isinstance(e, IommuMap | IommuUnmap):
            pending.setdefault(e.cpu, []).append([e.line, e.iova, e.end, 0])
            continue
        ranges = _dma_ranges(e)
        if ranges is None:
            continue
        if isinstance(e, DmaFree):
            freeing[e.cpu] = e
        lst = pending.get(e.cpu)
        if not lst:
            continue
        dev = e.device  # type: ignore[attr-defined]
        keep = []
        for item in lst:
            if not ranges or any(s < item[2] and item[1] < r_end for s, r_end in ranges):
                out[item[0]] = dev
            elif item[3] < ATTRIBUTION_MISSES:
                item[3] += 1
                keep.append(item)
        pending[e.cpu] = keep
    return out


# --------------------------------------------------------------------------- the walk


def _overlapping(sd: SortedDict[int, _Range], start: int, end: int) -> list[_Range]:
    """Ranges in ``sd`` (start -> _Range) that overlap ``[start, end)``."""
    out: list[_Range] = []
    i = sd.bisect_right(start) - 1
    if i >= 0:
        r = sd.peekitem(i)[1]
        if r.end > start:
            out.append(r)
    for k in sd.irange(start, end, inclusive=(False, False)):
        out.append(sd[k])
    return out


@define
class _Walker:
    attributed: dict[int, str]
    res: Result = field(factory=Result)
    dma: dict[tuple[str, int], list[DmaMapping]] = field(factory=dict)
    dma_by_dev: dict[str, SortedDict[int, list[DmaMapping]]] = field(factory=dict)
    sg_calls: dict[tuple[str, int], list[DmaMapping]] = field(factory=dict)
    freed: dict[tuple[str, int], tuple[int, int]] = field(factory=dict)
    did_of: dict[str, int] = field(factory=dict)
    tag_did: dict[int, int] = field(factory=dict)
    live_iova: dict[object, SortedDict[int, _Range]] = field(factory=dict)
    unmapped: dict[object, SortedDict[int, _Range]] = field(factory=dict)
    uncovered: dict[object, list[_Pending]] = field(factory=dict)
    devtlb: dict[int, set[tuple[str, int]]] = field(factory=dict)
    lost: list[Lost] = field(factory=list)

    # -- helpers -----------------------------------------------------------------------------

    def find(
        self, check: str, msg: str, dev: str, lines: Sequence[int], e: Event, since: int | None
    ) -> None:
        """Record a finding. ``since``: for a finding that rests on an event's absence, the
        line after which lost events could have held it (0: anywhere before); ``None`` for
        one the trace shows outright."""
        unsure = ""
        if since is not None:
            gap = [x for x in self.lost if since < x.line <= e.line]
            if gap:
                unsure = f"{gap[-1].count} events lost at line {gap[-1].line}"
        self.res.findings.append(
            Finding(
                check, msg, dev, tuple(sorted({n for n in lines if n})), e.line, e.ts_ns, unsure
            )
        )

    def key(self, dev: str | None) -> object:
        if dev is None:
            return UNATTRIBUTED
        did = self.did_of.get(dev)
        return did if did is not None else dev

    def _live_changed(self, dev: str, delta: int, ts: int) -> None:
        st = self.res.stats
        n = st.live.get(dev, 0) + delta
        st.live[dev] = n
        if n > st.peak_live.get(dev, 0):
            st.peak_live[dev] = n
        st.live_series.setdefault(dev, []).append((ts, n))

    def add_dma(self, m: DmaMapping) -> None:
        k = (m.device, m.dev_addr)
        self.dma.setdefault(k, []).append(m)
        by = self.dma_by_dev.get(m.device)
        if by is None:
            by = self.dma_by_dev[m.device] = SortedDict()
        by.setdefault(m.dev_addr, []).append(m)
        self.freed.pop(k, None)
        self.res.stats.dma_maps += 1
        self._live_changed(m.device, 1, m.ts_ns)

    def remove_dma(self, m: DmaMapping, e: Event) -> None:
        k = (m.device, m.dev_addr)
        lst = self.dma[k]
        lst.remove(m)
        if not lst:
            del self.dma[k]
        by = self.dma_by_dev[m.device]
        blst = by[m.dev_addr]
        blst.remove(m)
        if not blst:
            del by[m.dev_addr]
        self.freed[k] = (m.line, e.line)
        st = self.res.stats
        st.dma_reconciled += 1
        st.lifetimes.append((m.device, m.dev_addr, m.size, m.ts_ns, e.ts_ns, m.line))
        self._live_changed(m.device, -1, e.ts_ns)

    # -- DMA API -----------------------------------------------------------------------------

    def dma_map(self, e: DmaMap | DmaAlloc) -> None:
        if isinstance(e, DmaAlloc):
            if e.failed or (e.virt_addr in _NULL_PTRS and e.dma_addr == 0):
                return
            typ = {"dma_alloc": TYPE_COHERENT, "dma_alloc_pages": TYPE_SINGLE}.get(e.event, TYPE_SG)
            m = _entry(e, e.device, typ, e.dma_addr, e.size, e.dir)
        else:
            if e.dma_addr == DMA_MAPPING_ERROR:
                return
            typ = TYPE_RESOURCE if e.event == "dma_map_resource" else TYPE_SINGLE
            m = _entry(e, e.device, typ, e.dma_addr, e.size, e.dir, e.phys_addr)
        self.add_dma(m)

    def dma_unmap(self, e: DmaUnmap | DmaFree) -> None:
        self.res.stats.dma_unmaps += 1
        if isinstance(e, DmaFree):
            typ = {"dma_free": TYPE_COHERENT, "dma_free_pages": TYPE_SINGLE}.get(e.event, TYPE_SG)
        else:
            typ = TYPE_RESOURCE if e.event == "dma_unmap_resource" else TYPE_SINGLE
        ref = _entry(e, e.device, typ, e.dma_addr, e.size, e.dir)
        k = (e.device, e.dma_addr)
        cands = self.dma.get(k, [])
        entry = next(
            (c for c in cands if (c.size, c.type, c.direction) == (ref.size, typ, ref.direction)),
            cands[0] if len(cands) == 1 else None,
        )
        if entry is None:
            self._not_mapped(e, e.device, e.dma_addr, e.size)
            return
        if entry.type == TYPE_COHERENT:
            ref = _entry(e, e.device, typ, e.dma_addr, e.size, e.dir, entry.paddr)
        for _, msg in unmap_mismatches(entry, ref):
            self.find(MISMATCH, msg, e.device, (entry.line, e.line), e, None)
        self.remove_dma(entry, e)

    def _not_mapped(self, e: Event, dev: str, addr: int, size: int) -> None:
        msg = not_allocated_message(addr, size)
        prev = self.freed.get((dev, addr))
        if prev is not None:
            self.find(DOUBLE_UNMAP, f"{msg} (double unmap)", dev, (*prev, e.line), e, None)
            return
        other = next(
            (m for (d, a), lst in self.dma.items() if a == addr and d != dev for m in lst), None
        )
        if other is not None:
            msg = f"{msg} (mapped for {other.device} at line {other.line})"
            self.find(NOT_MAPPED, msg, dev, (other.line, e.line), e, None)
        else:
            self.find(NOT_MAPPED, msg, dev, (e.line,), e, 0)

    def dma_map_sg(self, e: DmaMapSg) -> None:
        if e.err or not e.dma_addrs:
            return
        nents = len(e.phys_addrs)
        call = []
        for i, (addr, size) in enumerate(zip(e.dma_addrs, e.sizes, strict=False)):
            phys = e.phys_addrs[i] if i < nents else 0
            m = _entry(e, e.device, TYPE_SG, addr, size, e.dir, phys, nents)
            self.add_dma(m)
            call.append(m)
        if e.phys_addrs:
            self.sg_calls[(e.device, e.phys_addrs[0])] = call

    def dma_unmap_sg(self, e: DmaUnmapSg) -> None:
        self.res.stats.dma_unmaps += 1
        first = e.phys_addrs[0] if e.phys_addrs else 0
        call = self.sg_calls.pop((e.device, first), None)
        if call is None:
            self._not_mapped(e, e.device, first, 0)
            return
        head = call[0]
        nents = len(e.phys_addrs)
        ref = _entry(e, e.device, TYPE_SG, head.dev_addr, head.size, e.dir, first, nents)
        for _, msg in unmap_mismatches(head, ref):
            self.find(MISMATCH, msg, e.device, (head.line, e.line), e, None)
        for m in call:
            if m in self.dma.get((m.device, m.dev_addr), ()):
                self.remove_dma(m, e)
        self.freed[(e.device, first)] = (head.line, e.line)

    def dma_sync(self, e: DmaSync) -> None:
        by = self.dma_by_dev.get(e.device)
        for addr, size in zip(e.dma_addrs, e.sizes, strict=False):
            entry = None
            if by:
                i = by.bisect_right(addr) - 1
                if i >= 0:
                    cand = by.peekitem(i)[1][0]
                    if cand.dev_addr <= addr < cand.dev_addr + cand.size:
                        entry = cand
            if entry is None:
                msg = sync_not_allocated_message(addr, size)
                self.find(SYNC, msg, e.device, (e.line,), e, 0)
                continue
            typ = TYPE_SG if "_sg_" in e.event else entry.type
            ref = _entry(e, e.device, typ, addr, size, e.dir, 0, entry.sg_call_ents)
            for msg in sync_mismatches(entry, ref, e.for_cpu):
                self.find(SYNC, msg, e.device, (entry.line, e.line), e, None)

    # -- IOMMU -------------------------------------------------------------------------------

    def _space(
        self, table: dict[object, SortedDict[int, _Range]], key: object
    ) -> SortedDict[int, _Range]:
        sd = table.get(key)
        if sd is None:
            sd = table[key] = SortedDict()
        return sd

    def _iova_use(self, key: object, delta: int, start: int, end: int) -> None:
        st = self.res.stats
        name = f"did {key}" if isinstance(key, int) else str(key)
        n = st.iova_bytes.get(name, 0) + delta
        st.iova_bytes[name] = n
        if n > st.peak_iova_bytes.get(name, 0):
            st.peak_iova_bytes[name] = n
        lo, hi = st.iova_extent.get(name, (start, end))
        st.iova_extent[name] = (min(lo, start), max(hi, end))

    def iommu_map(self, e: IommuMap) -> None:
        self.res.stats.iommu_maps += 1
        dev = self.attributed.get(e.line)
        key = self.key(dev)
        shown = dev or UNATTRIBUTED
        for p in self._uncovered_in(key, e.iova, e.end):
            self.find(
                NO_INVALIDATION,
                f"IOVA [{p.start:#x}-{p.end:#x}) unmapped at line {p.line} was mapped again "
                f"before {p.missing()} covered it",
                p.device, (p.map_line, p.line, e.line), e, p.line,
            )  # fmt: skip
        live = self._space(self.live_iova, key)
        if key != UNATTRIBUTED:
            for r in _overlapping(live, e.iova, e.end):
                self.find(
                    OVERLAP,
                    f"iommu map [{e.iova:#x}-{e.end:#x}) overlaps the live mapping "
                    f"[{r.start:#x}-{r.end:#x}) made at line {r.line}",
                    shown, (r.line, e.line), e, None,
                )  # fmt: skip
        live[e.iova] = _Range(e.iova, e.end, e.line, shown)
        self._iova_use(key, e.end - e.iova, e.iova, e.end)

    def _uncovered_in(self, key: object, start: int, end: int) -> list[_Pending]:
        out: list[_Pending] = []
        for k in (key,) if key != UNATTRIBUTED else tuple(self.uncovered):
            lst = self.uncovered.get(k)
            if not lst:
                continue
            hit = [p for p in lst if p.start < end and start < p.end]
            if hit:
                out.extend(hit)
                self.uncovered[k] = [p for p in lst if p not in hit]
        return out

    def iommu_unmap(self, e: IommuUnmap) -> None:
        st = self.res.stats
        st.iommu_unmaps += 1
        dev = self.attributed.get(e.line)
        key = self.key(dev)
        shown = dev or UNATTRIBUTED
        live = self._space(self.live_iova, key)
        gone = _overlapping(live, e.iova, e.end)
        map_line = gone[0].line if gone else 0
        for r in gone:
            del live[r.start]
            self._iova_use(key, r.start - r.end, r.start, r.end)
        if gone:
            st.iommu_reconciled += 1
        elif key != UNATTRIBUTED:
            self.find(
                NOT_MAPPED,
                f"iommu unmap of IOVA [{e.iova:#x}-{e.end:#x}) that is not mapped",
                shown, (e.line,), e, 0,
            )  # fmt: skip
        if e.unmapped_size != e.size:
            self.find(
                UNMAPPED_SIZE,
                f"iommu unmap of IOVA [{e.iova:#x}-{e.end:#x}) unmapped {e.unmapped_size} "
                f"bytes of the {e.size} requested",
                shown, (map_line, e.line) if map_line else (e.line,), e, None,
            )  # fmt: skip
        self._space(self.unmapped, key)[e.iova] = _Range(e.iova, e.end, e.line, shown, map_line)
        need: set[object] = {IOTLB}
        if isinstance(key, int):
            need.update(self.devtlb.get(key, ()))
        self.uncovered.setdefault(key, []).append(
            _Pending(e.iova, e.end, e.line, shown, map_line, need)
        )

    def invalidate(
        self, did: int | None, start: int, end: int, whole: bool, what: object = IOTLB
    ) -> None:
        """An invalidation of ``[start, end)`` (or the whole domain) for ``did`` (``None``:
        every domain) of ``what``: the IOTLB, or one (device, PASID)'s device-TLB."""
        self.res.stats.invalidations += 1
        for k, lst in self.uncovered.items():
            if not lst or (did is not None and isinstance(k, int) and k != did):
                continue
            for p in lst:
                if what in p.need and (whole or (start <= p.start and p.end <= end)):
                    p.need.discard(what)
            self.uncovered[k] = [p for p in lst if p.need]

    def qi(self, e: QiSubmit) -> None:
        inv = decode(e)
        if inv.cache == "devtlb" and inv.sid is not None:
            sid = inv.sid
            dev = f"0000:{sid >> 8:02x}:{(sid >> 3) & 0x1F:02x}.{sid & 7}"
            what = (dev, inv.pasid or 0)
            whole = inv.granularity != "page"
            self.invalidate(None, inv.start, inv.start + inv.size, whole, what)
        elif inv.cache != "iotlb":
            return
        elif inv.granularity == "page":
            self.invalidate(inv.did, inv.start, inv.start + inv.size, False)
        else:
            self.invalidate(None if inv.granularity == "global" else inv.did, 0, 0, True)

    def cache_tag(self, tag: CacheTag) -> None:
        if tag.type == "devtlb":
            tags = self.devtlb.setdefault(tag.did, set())
            if tag.event == "cache_tag_assign":
                tags.add((tag.dev, tag.pasid))
            elif tag.event == "cache_tag_unassign" and tag.ref <= 1:
                tags.discard((tag.dev, tag.pasid))  # Linux traces before the decrement
            elif tag.event == "cache_tag_flush_all":
                self.invalidate(tag.did, 0, 0, True, (tag.dev, tag.pasid))
        elif tag.event == "cache_tag_assign" and tag.type == "iotlb":
            self.tag_did[tag.cpu] = tag.did
        elif tag.event == "cache_tag_flush_all" and tag.type == "iotlb":
            self.invalidate(tag.did, 0, 0, True)

    def fault(self, e: IoPageFault) -> None:
        key = self.key(e.device)
        page = e.iova & ~(PAGE_SIZE - 1)
        live = self.live_iova.get(key)
        if live is not None and _overlapping(live, page, page + 1):
            return
        gone = self.unmapped.get(key)
        hit = _overlapping(gone, page, page + 1) if gone is not None else []
        if hit:
            r = hit[0]
            self.find(
                FAULT_UNMAPPED,
                f"device DMA at IOVA {e.iova:#x} after it was unmapped at line {r.line} "
                f"(use after unmap; mapped at line {r.map_line})",
                e.device, (r.map_line, r.line, e.line), e, r.line,
            )  # fmt: skip
        else:
            self.find(
                FAULT_NEVER_MAPPED,
                f"device DMA at IOVA {e.iova:#x} that was never mapped for it",
                e.device, (e.line,), e, 0,
            )  # fmt: skip

    # -- the walk ----------------------------------------------------------------------------

    def step(self, e: Event) -> None:
        st = self.res.stats
        if st.first_ts is None:
            st.first_ts = e.ts_ns
        st.last_ts = max(st.last_ts, e.ts_ns)
        t = type(e)
        if t is DmaMap or t is DmaAlloc:
            self.dma_map(e)  # type: ignore[arg-type]
        elif t is DmaUnmap or t is DmaFree:
            self.dma_unmap(e)  # type: ignore[arg-type]
        elif t is IommuMap:
            self.iommu_map(e)  # type: ignore[arg-type]
        elif t is IommuUnmap:
            self.iommu_unmap(e)  # type: ignore[arg-type]
        elif t is CacheTagFlush:
            f: CacheTagFlush = e  # type: ignore[assignment]
            if f.type in ("iotlb", "nesting_iotlb"):
                self.invalidate(f.did, f.start, f.end + 1, False)
            elif f.type in ("devtlb", "nesting_devtlb"):
                self.invalidate(f.did, f.start, f.end + 1, False, (f.dev, f.pasid))
        elif t is QiSubmit:
            self.qi(e)  # type: ignore[arg-type]
        elif t is CacheTag:
            self.cache_tag(e)  # type: ignore[arg-type]
        elif t is IommuAttach:
            a: IommuAttach = e  # type: ignore[assignment]
            did = self.tag_did.pop(a.cpu, None)
            if did is not None:
                self.did_of[a.device] = did
        elif t is DmaMapSg:
            self.dma_map_sg(e)  # type: ignore[arg-type]
        elif t is DmaUnmapSg:
            self.dma_unmap_sg(e)  # type: ignore[arg-type]
        elif t is DmaSync:
            self.dma_sync(e)  # type: ignore[arg-type]
        elif t is IoPageFault:
            self.fault(e)  # type: ignore[arg-type]
        elif t is Marker:
            st.at_markers.append((e, dict(st.live)))  # type: ignore[arg-type]
        elif t is Lost:
            lost: Lost = e  # type: ignore[assignment]
            self.res.lost.append(lost)
            self.lost.append(lost)

    def finish(self, end: Event | None, at_end: bool, lazy: bool) -> None:
        """Report what the end of the trace decides (not at an ``--until`` cut, where
        the trace goes on): unmaps never invalidated, mappings never unmapped."""
        self.res.live = sorted((m for lst in self.dma.values() for m in lst), key=lambda m: m.line)
        if not at_end:
            return
        line = end.line if end is not None else 0
        ts = end.ts_ns if end is not None else 0
        tail = Event(line, ts, 0, "")
        for lst in () if lazy else self.uncovered.values():
            for p in lst:
                self.find(
                    NO_INVALIDATION,
                    f"IOVA [{p.start:#x}-{p.end:#x}) unmapped at line {p.line} was never "
                    f"covered by {p.missing()} before the trace ended",
                    p.device, (p.map_line, p.line) if p.map_line else (p.line,), tail, p.line,
                )  # fmt: skip
        for m in self.res.live:
            self.find(
                LIVE_AT_END,
                "DMA mapping still live at the end of the trace "
                f"[device address=0x{m.dev_addr:016x}] [size={m.size} bytes] "
                f"[mapped as {m.type}]",
                m.device, (m.line,), tail, m.line,
            )  # fmt: skip


def check(events: Sequence[Event], until: int | None = None, lazy: bool = False) -> Result:
    """Run every check over ``events`` (up to and including line ``until``; the checks
    that need the end of the trace are not made at such a cut). ``lazy``: the kernel ran
    with ``iommu.strict=0``, so an unmap still waiting in the flush queue when the trace
    ends is no finding (an IOVA mapped again before its invalidation still is)."""
    if until is not None:
        events = [e for e in events if e.line <= until]
    w = _Walker(attribute(events))
    step = w.step
    for e in events:
        step(e)
    w.finish(events[-1] if events else None, until is None, lazy)
    w.res.until_line = events[-1].line if events else 0
    return w.res
