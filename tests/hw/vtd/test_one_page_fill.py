"""A one-page request that misses is filled by ``Translation.translate`` itself when
the walk grants it (``one_page_fills``); everything else goes through the slow path.
Either way the unit must behave as when every miss goes through the slow path: the
same results and faults, the same IOTLB contents, the same A/D bits in the tables,
the same fault records, counters and stale uses, over randomized sequences of table
changes (with and without the invalidations they need), IOTLB flushes and one-page
requests of every kind (reads and writes, user and supervisor, offsets and sizes
inside the page), leaves beyond RAM and in the interrupt range included."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from hw.bus import DmaResult
from hw.machine import Machine
from hw.vtd import VtdUnit
from hw.vtd import entries as ent
from tests.hw.cache_state import deps_state, tlb_state
from tests.hw.vtd.helpers import RAM, RID, PageTable, legacy_setup, sm_setup

DID = 3
PASID = 1
IOVA = 0x40_0000
PAGES = 24
PHYS = 0x100_0000

Req = Callable[[int, int, bool, bool], DmaResult]
Setup = tuple[Machine, VtdUnit, PageTable, Req]


def _fl() -> Setup:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt)
    return m, unit, pt, lambda a, n, w, priv: unit.translate(RID, PASID, priv, a, n, w)


def _sl(ssade: bool) -> Callable[[], Setup]:
    def setup() -> Setup:
        m, unit, pages, t = sm_setup()
        pt = PageTable(m, pages, 4)
        addr = t.pasid_entry(RID, 0, ent.PGTT_SL, did=DID, pt=pt)
        if ssade:
            m.memory.write_u64(addr, m.memory.read_u64(addr) | ent.PasidQw0.SSADE.mask)
        return m, unit, pt, lambda a, n, w, priv: unit.translate(RID, None, priv, a, n, w)

    return setup


def _legacy() -> Setup:
    m, unit, _pages, _t, pt = legacy_setup()
    return m, unit, pt, lambda a, n, w, priv: unit.translate(RID, None, priv, a, n, w)


KINDS = {"fl": _fl, "sl": _sl(False), "sl-ssade": _sl(True), "sl-legacy": _legacy}


def _state(m: Machine, unit: VtdUnit, pt: PageTable) -> tuple[object, ...]:
    iotlb = tlb_state(unit.caches.iotlb)
    deps = deps_state(unit.caches.deps)
    leaves = [m.memory.read_u64(pt.entry_addr(IOVA + (i << 12), 1)) for i in range(PAGES)]
    s = unit.stats
    counters = (s.iotlb_misses, s.iotlb_hits, s.faults, s.stale_uses, s.ctx_hits, s.pasid_hits)
    records = [
        (unit.regs[f"FRCD{i}_LO"], unit.regs[f"FRCD{i}_HI"]) for i in range(unit.faults.count)
    ]
    return iotlb, deps, leaves, counters, records


def _step(rng: random.Random, setups: list[Setup]) -> None:
    """One random operation, the same on every setup."""
    page = rng.randrange(PAGES)
    iova = IOVA + (page << 12)
    roll = rng.random()
    if roll < 0.2:
        where = rng.random()
        phys = (
            RAM + (rng.randrange(4) << 12)  # beyond RAM
            if where < 0.1
            else 0xFEE0_0000  # the interrupt range
            if where < 0.15
            else PHYS + (rng.randrange(64) << 12)
        )
        w, u = rng.random() < 0.8, rng.random() < 0.8
        for _m, _unit, pt, _req in setups:
            if pt.fl:
                pt.map(iova, phys, w=w, u=u)
            else:
                pt.map(iova, phys, w=w)
    elif roll < 0.27:
        for _m, _unit, pt, _req in setups:
            pt.unmap(iova)
    elif roll < 0.32:
        for _m, unit, _pt, _req in setups:
            unit.caches.flush_tlb()
    else:
        off = rng.randrange(4096)
        size = rng.randrange(1, 4097 - off)
        write, priv = rng.random() < 0.5, rng.random() < 0.3
        results = [req(iova + off, size, write, priv) for _m, _u, _pt, req in setups]
        assert results[0] == results[1], (hex(iova + off), size, write, priv)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_one_page_fills_leave_what_the_slow_path_leaves(kind: str, seed: int) -> None:
    rng = random.Random(seed)
    fast, ref = KINDS[kind](), KINDS[kind]()
    ref[1].xlate.one_page_fills = False
    for i in range(PAGES):
        if rng.random() < 0.8:
            for _m, _unit, pt, _req in (fast, ref):
                pt.map(IOVA + (i << 12), PHYS + (i << 12))
    for _ in range(300):
        _step(rng, [fast, ref])
        assert _state(*fast[:3]) == _state(*ref[:3])
    assert fast[1].stats.iotlb_misses > 20  # fills happened, on both paths


HIGH = 0x1_4000_0000
"""A 2 MiB page above 4 GiB: the fill takes the general walk (a large leaf), and every
address of it is beyond the small-int range."""
HIGH_PHYS = 0x80_0000


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_one_page_fills_of_a_large_page_high_up_leave_what_the_slow_path_leaves(
    kind: str, seed: int
) -> None:
    rng = random.Random(seed)
    fast, ref = KINDS[kind](), KINDS[kind]()
    ref[1].xlate.one_page_fills = False
    for _m, _unit, pt, _req in (fast, ref):
        pt.map(HIGH, HIGH_PHYS, level=2)
    for _ in range(150):
        roll = rng.random()
        if roll < 0.1:
            w = rng.random() < 0.7
            for _m, unit, pt, _req in (fast, ref):
                pt.map(HIGH, HIGH_PHYS, level=2, w=w)
                unit.caches.flush_tlb()
        elif roll < 0.25:
            for _m, unit, _pt, _req in (fast, ref):
                unit.caches.flush_tlb()
        else:
            addr = HIGH + (rng.randrange(512) << 12) + (off := rng.randrange(4096))
            size = rng.randrange(1, 4097 - off)
            write, priv = rng.random() < 0.5, rng.random() < 0.3
            results = [req(addr, size, write, priv) for _m, _u, _pt, req in (fast, ref)]
            assert results[0] == results[1], (hex(addr), size, write, priv)
        assert _state(*fast[:3]) == _state(*ref[:3])
    assert fast[1].stats.iotlb_misses > 10
