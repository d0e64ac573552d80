"""The straight single-page miss of a clean stage-1 selection
(:meth:`~hw.smmuv3.slow_path.S1MissPath.fill`, taken by the slow path for a request's
last page and by the unit's ``translate`` for a one-page request) is exact: over
random tables (3 and 4 levels, every leaf kind: not accessed, privileged, read-only,
DBM, global, a block at level 3, Address Size bits, output beyond RAM or the IPS;
APTable, Address Size and ignored bits in the table descriptors above), random CD
controls (HA, HD, AFFD, HAD0, PAN, TBI0, IPS), random requests within a page and
across a page boundary, TLB invalidations and descriptor rewrites with and without
their TLBI, a unit taking it gives exactly what a unit whose slow paths are all the
general one (:class:`TlbSlowPath`: ``_fill``, ``walk_raw``'s level loop) gives: the
same runs and faults, TLB entries (tags, frames, rights, granules, sources),
dependencies, Access/dirty bits in RAM, event records, counters and stale uses. The
comparison is never vacuous: every seed has misses the straight path served."""

from __future__ import annotations

import random
from typing import Any

import pytest

from hw.bus import DmaResult
from hw.smmuv3 import entries as ent
from hw.smmuv3.caches import Sel
from hw.smmuv3.slow_path import TlbSlowPath
from hw.smmuv3.unit import Smmuv3Unit
from tests.hw.cache_state import deps_state, tlb_state
from tests.hw.smmuv3.helpers import (
    RAM,
    RID,
    PageTable,
    Rig,
    cd_words,
    cmd_tlbi_nh_all,
    cmd_tlbi_nh_va,
)

IOVA = 0x4000_0000
PHYS = 0x100_0000
PAGES = 12
SSIDS = {1: 1, 2: 2}
"""SubstreamID -> ASID of its CD (one table each). SSID 1's table has 4 levels and
clean table descriptors, so every seed has misses the straight path may serve."""
DBM = ent.LpaeLeaf.DBM.mask


def _leaf(rnd: random.Random) -> int:
    """A random leaf: half of them the common kind (accessed, EL0, nG random)."""
    phys = PHYS + (rnd.randrange(64) << 12)
    if rnd.random() < 0.5:
        dbm = DBM if rnd.random() < 0.3 else 0
        return PageTable.leaf(phys, ro=rnd.random() < 0.4, ng=rnd.random() < 0.7) | dbm
    pte = PageTable.leaf(
        phys,
        ro=rnd.random() < 0.5,
        user=rnd.random() < 0.6,
        af=rnd.random() < 0.6,
        ng=rnd.random() < 0.6,
    )
    kind = rnd.randrange(8)
    if kind == 0:
        pte |= DBM
    elif kind == 1:
        pte &= ~2  # a block at level 3
    elif kind == 2:
        pte = 0
    elif kind == 3:
        pte |= 1 << rnd.choice((48, 49))
    elif kind == 4:
        pte = (pte & ~ent.LpaeLeaf.OA.mask) | (RAM + (rnd.randrange(8) << 12))
    elif kind == 5:
        pte |= 1 << 40  # beyond a 32-bit IPS, beyond RAM
    return pte


class Side:
    """One rig built from ``seed``; ``general`` makes every slow path the general one."""

    def __init__(self, seed: int, general: bool) -> None:
        rnd = random.Random(seed)
        self.rig = r = Rig({"httu": 2, "strict_stale": False})
        unit = r.unit
        self.fills = 0
        fill = unit._fill

        def counted(*args: Any) -> Any:
            self.fills += 1
            return fill(*args)

        unit._fill = counted  # type: ignore[method-assign,assignment]
        if general:

            def slow_path(rid: int, pasid: int | None, priv: bool, write: bool, sel: Sel) -> Any:
                return TlbSlowPath(unit, rid, pasid, priv, write, sel, ())

            unit._slow_path = slow_path  # type: ignore[method-assign]
        self.leaves: dict[tuple[int, int], int] = {}
        """(ASID, page) -> its leaf descriptor's address."""
        for ssid, asid in SSIDS.items():
            plain = ssid == 1  # 4 levels, clean table descriptors: straight walks
            va_bits = 48 if plain else rnd.choice((48, 48, 48, 39))
            pt = r.tables[asid] = PageTable(r.m, r.pages, va_bits)
            fields = {
                name: int(rnd.random() < p)
                for name, p in (("HA", 0.3), ("HD", 0.3), ("AFFD", 0.2), ("PAN", 0.2))
            }
            fields["TBI0"] = int(rnd.random() < 0.2)
            fields["IPS"] = rnd.choice((5, 5, 0))
            dw0, dw1, dw2, dw3 = cd_words(pt.root, asid, t0sz=64 - va_bits, **fields)
            if rnd.random() < 0.2:
                dw1 |= ent.CdDw1.HAD0.mask
            r.cds.write(ssid, (dw0, dw1, dw2, dw3))
            for i in range(PAGES):
                page = IOVA + (i << 12)
                self.leaves[asid, i] = pt.map(page, PHYS)
                r.m.memory.write_u64(self.leaves[asid, i], _leaf(rnd))
            self.leaves[asid, PAGES] = pt.map(IOVA + (5 << 21), PHYS)  # another table
            uppers = [pt.entry_addr(IOVA, level) for level in range(pt.start, 3)]
            if not plain and rnd.random() < 0.7:  # a table descriptor above the leaves:
                # mostly the last (its neighbours are tables of mapped pages too)
                addr = rnd.choice([*uppers, uppers[-1], uppers[-1]])
                bit = rnd.choice((61, 62, 48, 40, 3, 11, 55, 63))
                r.m.memory.write_u64(addr, r.m.memory.read_u64(addr) | 1 << bit)

    def state(self) -> tuple[object, ...]:
        unit: Smmuv3Unit = self.rig.unit
        tlb = tlb_state(unit.caches.tlb, src=True)
        deps = deps_state(unit.pipeline.deps)
        mem = self.rig.m.memory
        tables = bytes(mem.read(1 << 20, self.rig.pages.next - (1 << 20)))
        s = unit.stats
        counters = (
            s.iotlb_misses,
            s.iotlb_hits,
            s.faults,
            s.faults_suppressed,
            s.stale_uses,
            s.ste_hits,
            s.cd_hits,
        )
        return tlb, deps, tables, counters, self.rig.smmu.events()


def _req(side: Side, ssid: int, addr: int, size: int, priv: bool, write: bool) -> DmaResult:
    return side.rig.unit.translate(RID, ssid, priv, addr, size, write)


@pytest.mark.parametrize("seed", range(60))
def test_straight_miss_matches_the_general_slow_path(seed: int) -> None:
    fast, ref = Side(seed, False), Side(seed, True)
    assert fast.state() == ref.state()
    rnd = random.Random(seed ^ 0x5EED)
    for _ in range(80):
        op = rnd.random()
        sides = (fast, ref)
        if op < 0.75:
            ssid = rnd.choice(list(SSIDS))
            page = rnd.choice([*range(PAGES), PAGES, PAGES + 1])
            base = IOVA + (5 << 21) if page == PAGES else IOVA + (page << 12)
            off = rnd.choice((0, 0, rnd.randrange(4096)))
            size = rnd.choice((4096 - off, rnd.randrange(1, 4097)))
            if rnd.random() < 0.1:
                base |= 1 << 55  # the upper half (EPD1)
            priv, write = rnd.random() < 0.3, rnd.random() < 0.4
            got = [_req(s, ssid, base + off, size, priv, write) for s in sides]
            assert got[0] == got[1]
        elif op < 0.82:
            for s in sides:
                s.rig.unit.caches.flush_tlb()
        elif op < 0.86:
            for s in sides:
                s.rig.smmu.submit(cmd_tlbi_nh_all())
        else:
            asid, i = rnd.choice(sorted(fast.leaves))
            value = _leaf(rnd)
            tlbi = rnd.random() < 0.5
            va = IOVA + (5 << 21) if i == PAGES else IOVA + (i << 12)
            for s in sides:
                s.rig.m.memory.write_u64(s.leaves[asid, i], value)
                if tlbi:
                    s.rig.smmu.submit(cmd_tlbi_nh_va(asid, va))
        assert fast.state() == ref.state()
    assert ref.fills > fast.fills, "the straight path served no miss"
    assert fast.rig.unit.stats.iotlb_misses == ref.rig.unit.stats.iotlb_misses


def test_with_hardware_tracing_a_one_page_miss_is_its_miss_event() -> None:
    """Tracing on, the one-page miss goes the general way, which reports it."""
    side = Side(0, False)
    side.rig.m.memory.write_u64(side.leaves[1, 3], PageTable.leaf(PHYS + (7 << 12)))
    events: list[tuple[str, dict[str, object]]] = []
    side.rig.m.set_hw_trace_sink(lambda name, ts, fields: events.append((name, fields)))
    r = _req(side, 1, IOVA + (3 << 12) + 8, 64, False, False)
    assert r.runs == ((PHYS + (7 << 12) + 8, 64),) and r.fault is None
    misses = [f["addr"] for name, f in events if name == "hw_smmuv3:tlb_miss"]
    assert misses == [IOVA + (3 << 12) + 8]
    assert side.fills == 1  # through the unit's _fill
