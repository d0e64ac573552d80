"""Filling the rest of a last-level table in one read (``Translation.fill_ahead``) is
exact: a request over many 4 KiB pages leaves the IOTLB, the tables' A/D bits, the
stale tracker's dependencies, the fault log and the counters as the same pages
requested one at a time (each a request of its own, so each a full walk) leave them,
whatever stops the run midway; and a leaf filled that way is still reported when it
is used after its table entry changed without an invalidation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hw.bus import DmaResult
from hw.machine import Machine
from hw.vtd import StaleTranslationError, VtdUnit
from hw.vtd import entries as ent
from hw.vtd.caches import TlbEntry
from hw.vtd.faults import FR
from tests.hw.cache_state import deps_state, tlb_state
from tests.hw.vtd.helpers import RAM, RID, PageTable, legacy_setup, sm_setup

DID = 2
PASID = 1
IOVA = 0x40_0000
PHYS = 0x100_0000
PAGES = 40
"""Pages per request: crosses no 2 MiB boundary, so one walk then one run."""

Setup = tuple[Machine, VtdUnit, PageTable, Callable[[int, int, bool], DmaResult]]


def _fl(config: dict[str, object] | None = None) -> Setup:
    m, unit, pages, t = sm_setup(config)
    pt = PageTable(m, pages, 4, fl=True)
    for i in range(PAGES):
        pt.map(IOVA + (i << 12), PHYS + (i << 12))
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt)
    return m, unit, pt, lambda a, n, w: unit.translate(RID, PASID, False, a, n, w)


def _sl_scalable(config: dict[str, object] | None = None) -> Setup:
    m, unit, pages, t = sm_setup(config)
    pt = PageTable(m, pages, 4)
    for i in range(PAGES):
        pt.map(IOVA + (i << 12), PHYS + (i << 12))
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=DID, pt=pt)
    return m, unit, pt, lambda a, n, w: unit.translate(RID, None, False, a, n, w)


def _sl_legacy(config: dict[str, object] | None = None) -> Setup:
    m, unit, _pages, _t, pt = legacy_setup(config)
    for i in range(PAGES):
        pt.map(IOVA + (i << 12), PHYS + (i << 12))
    return m, unit, pt, lambda a, n, w: unit.translate(RID, None, False, a, n, w)


def _sl_ssade(config: dict[str, object] | None = None) -> Setup:
    """Scalable second stage with SSADE: the model keeps A/D in its leaves."""
    m, unit, pages, t = sm_setup(config)
    pt = PageTable(m, pages, 4)
    for i in range(PAGES):
        pt.map(IOVA + (i << 12), PHYS + (i << 12))
    addr = t.pasid_entry(RID, 0, ent.PGTT_SL, did=DID, pt=pt)
    m.memory.write_u64(addr, m.memory.read_u64(addr) | ent.PasidQw0.SSADE.mask)
    return m, unit, pt, lambda a, n, w: unit.translate(RID, None, False, a, n, w)


KINDS = {"fl": _fl, "sl-scalable": _sl_scalable, "sl-legacy": _sl_legacy, "sl-ssade": _sl_ssade}


def _state(m: Machine, unit: VtdUnit, pt: PageTable) -> tuple[object, ...]:
    """Everything a fill leaves behind, keyed so two machines compare equal."""
    iotlb = tlb_state(unit.caches.iotlb)
    deps = deps_state(unit.caches.deps)
    leaves = [m.memory.read_u64(pt.entry_addr(IOVA + (i << 12), 1)) for i in range(PAGES + 1)]
    s = unit.stats
    counters = (s.iotlb_misses, s.iotlb_hits, s.faults, s.stale_uses)
    records = [
        (unit.regs[f"FRCD{i}_LO"], unit.regs[f"FRCD{i}_HI"]) for i in range(unit.faults.count)
    ]
    return iotlb, deps, leaves, counters, records


Break = Callable[[Machine, PageTable, Callable[[int, int, bool], DmaResult]], None]


def _none(m: Machine, pt: PageTable, req: Callable[[int, int, bool], DmaResult]) -> None:
    pass


def _hole(m: Machine, pt: PageTable, req: Callable[[int, int, bool], DmaResult]) -> None:
    pt.unmap(IOVA + (17 << 12))


def _read_only(m: Machine, pt: PageTable, req: Callable[[int, int, bool], DmaResult]) -> None:
    pt.map(IOVA + (9 << 12), PHYS + (9 << 12), w=False)


def _cached_midway(m: Machine, pt: PageTable, req: Callable[[int, int, bool], DmaResult]) -> None:
    req(IOVA + (21 << 12), 4096, False)


def _beyond_ram(m: Machine, pt: PageTable, req: Callable[[int, int, bool], DmaResult]) -> None:
    pt.map(IOVA + (30 << 12), RAM + (5 << 12))


def _rsvd_bit(m: Machine, pt: PageTable, req: Callable[[int, int, bool], DmaResult]) -> None:
    addr = pt.entry_addr(IOVA + (12 << 12), 1)
    m.memory.write_u64(addr, m.memory.read_u64(addr) | 1 << 51)


BREAKS: dict[str, Break] = {
    "none": _none,
    "hole": _hole,
    "read-only": _read_only,
    "cached-midway": _cached_midway,
    "beyond-ram": _beyond_ram,
    "reserved-bit": _rsvd_bit,
}


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("brk", list(BREAKS), ids=list(BREAKS))
@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_one_request_leaves_what_page_by_page_requests_leave(
    kind: str, brk: str, write: bool
) -> None:
    m1, u1, pt1, req1 = KINDS[kind]()
    m2, u2, pt2, req2 = KINDS[kind]()
    BREAKS[brk](m1, pt1, req1)
    BREAKS[brk](m2, pt2, req2)
    start = IOVA + (2 << 12)  # the first page is a walk, the rest one run
    n = PAGES - 2
    whole = req1(start, n << 12, write)
    runs: list[tuple[int, int]] = []
    fault = None
    hits_before = u2.stats.iotlb_hits
    for i in range(n):
        r = req2(start + (i << 12), 4096, write)
        runs += r.runs
        if r.fault is not None:
            fault = r.fault
            break
    merged: list[tuple[int, int]] = []
    for phys, size in runs:
        if merged and merged[-1][0] + merged[-1][1] == phys:
            merged[-1] = (merged[-1][0], merged[-1][1] + size)
        else:
            merged.append((phys, size))
    assert list(whole.runs) == merged
    assert whole.fault == fault
    # A page that was cached before counts a hit either way; nothing else does.
    assert u2.stats.iotlb_hits - hits_before == (1 if brk == "cached-midway" else 0)
    assert _state(m1, u1, pt1) == _state(m2, u2, pt2)
    assert u1.stats.stale_uses == 0


def test_second_stage_with_ssade_sets_a_and_d_in_every_leaf_of_the_run() -> None:
    m, _unit, pt, req = _sl_ssade()
    req(IOVA, PAGES << 12, True)
    a_d = ent.SlPte.A.mask | ent.SlPte.D.mask
    leaves = [m.memory.read_u64(pt.entry_addr(IOVA + (i << 12), 1)) for i in range(PAGES)]
    assert all(v & a_d == a_d for v in leaves)


def test_the_run_fills_every_page_with_its_own_leaf() -> None:
    """Against the tables the test wrote: frame i of the run is PHYS + i pages."""
    _m, unit, _pt, req = _fl()
    r = req(IOVA, PAGES << 12, True)
    assert r.runs == ((PHYS, PAGES << 12),)
    d = unit.caches.iotlb.tables[DID, PASID][0]
    assert sorted(d) == [(IOVA >> 12) + i for i in range(PAGES)]
    assert all(d[(IOVA >> 12) + i].phys == PHYS + (i << 12) for i in range(PAGES))
    assert (unit.stats.iotlb_misses, unit.stats.iotlb_hits) == (PAGES, 0)


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_leaf_of_the_run_rewritten_without_invalidation_is_a_stale_use(kind: str) -> None:
    _m, unit, pt, req = KINDS[kind]({"strict_stale": True})
    req(IOVA, PAGES << 12, False)
    victim = IOVA + (25 << 12)
    pt.map(victim, PHYS + (100 << 12))
    with pytest.raises(StaleTranslationError):
        req(victim, 4096, False)
    assert unit.stats.stale_uses == 1
    # Its neighbours in the same table page were not touched: still exact, no report.
    req(victim + 4096, 4096, False)
    assert unit.stats.stale_uses == 1


def test_upper_level_rewritten_after_the_run_is_a_stale_use() -> None:
    m, unit, pt, req = _fl()
    req(IOVA, PAGES << 12, False)
    l2 = pt.entry_addr(IOVA, 2)
    m.memory.write_u64(l2, 0)  # the whole last-level table is gone
    r = req(IOVA + (7 << 12), 4096, False)
    assert unit.stats.stale_uses == 1
    assert r.fault is None  # the cached answer is used


def test_with_hardware_tracing_every_page_is_its_own_miss_event() -> None:
    m, _unit, _pt, req = _fl()
    events: list[tuple[str, dict[str, object]]] = []
    m.set_hw_trace_sink(lambda name, ts, fields: events.append((name, fields)))
    req(IOVA, 8 << 12, False)
    misses = [f["addr"] for name, f in events if name == "hw_vtd:iotlb_miss"]
    assert misses == [IOVA + (i << 12) for i in range(8)]


def test_the_page_that_stops_the_run_faults_with_its_own_reason() -> None:
    _m, unit, pt, req = _fl()
    pt.unmap(IOVA + (11 << 12))
    r = req(IOVA, PAGES << 12, False)
    assert r.runs == ((PHYS, 11 << 12),)
    assert r.fault is not None and r.fault.addr == IOVA + (11 << 12)
    assert unit.stats.iotlb_misses == 12  # 11 filled, and the walk that faulted
    hi = unit.regs["FRCD0_HI"]
    assert (hi >> 32) & 0xFF == FR.FS_NOT_PRESENT


def _fl_blocks(n: int) -> Setup:
    """``n`` pages mapped contiguously from the 2 MiB-aligned IOVA."""
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    for i in range(n):
        pt.map(IOVA + (i << 12), PHYS + (i << 12))
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt)
    return m, unit, pt, lambda a, n, w: unit.translate(RID, PASID, False, a, n, w)


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_whole_blocks_filled_at_once_are_summarised_and_served_in_the_same_request(
    write: bool,
) -> None:
    """Two 2 MiB blocks: the first page of each is walked, the rest filled from one
    read, the block summarised there, and the request's remaining pages served from
    the summary; everything left behind and counted equals page-by-page requests."""
    n = 1024
    m1, u1, pt1, req1 = _fl_blocks(n)
    m2, u2, _pt2, req2 = _fl_blocks(n)
    r = req1(IOVA, n << 12, write)
    assert r.runs == ((PHYS, n << 12),) and r.fault is None
    for i in range(n):
        req2(IOVA + (i << 12), 4096, write)
    s1 = u1.stats
    assert (s1.iotlb_misses, s1.iotlb_hits) == (n, 0)
    iotlb1 = {k: (e.phys, e.dirty, sorted(e.slots)) for k, e in _d4(u1).items()}
    iotlb2 = {k: (e.phys, e.dirty, sorted(e.slots)) for k, e in _d4(u2).items()}
    assert iotlb1 == iotlb2
    leaves = [pt1.entry_addr(IOVA + (i << 12), 1) for i in range(n)]
    assert [m1.memory.read_u64(a) for a in leaves] == [m2.memory.read_u64(a) for a in leaves]
    assert sorted(u1.caches.iotlb.tables[DID, PASID][3]) == [IOVA >> 21, (IOVA >> 21) + 1]
    again = req1(IOVA, n << 12, write)  # warm: two summaries, no page looked up
    assert again.runs == r.runs
    assert (s1.iotlb_misses, s1.iotlb_hits) == (n, n)


def _d4(unit: VtdUnit) -> dict[int, TlbEntry]:
    return unit.caches.iotlb.tables[DID, PASID][0]
