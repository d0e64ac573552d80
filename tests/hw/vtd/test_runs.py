"""The run-oriented IOTLB hit path: the model's own A/D-bit updates and writes to other
entries of a table page leave cached entries clean, 2 MiB block summaries return merged
physical runs, and every change a summary could hide is still seen (stale use,
invalidation, dirty bits, permissions, re-bound stages)."""

from __future__ import annotations

import pytest
from attrs import evolve

from hw.machine import Machine
from hw.vtd import StaleTranslationError, VtdUnit
from hw.vtd import entries as ent
from hw.vtd.caches import BLOCK, Block, TlbEntry
from hw.vtd.faults import FR
from hw.vtd.walk import PERM_U, Walker
from tests.hw.vtd.helpers import (
    RID,
    Pages,
    PageTable,
    Queue,
    Tables,
    iotlb_global,
    pc_inval,
    piotlb,
    set_root,
    sm_setup,
)

DID = 2
PASID = 1
IOVA = 0x40_0000  # 2 MiB aligned
PHYS = 0x100_0000
BLK = 2 << 20
A_BIT = ent.FlPte.A.mask
D_BIT = ent.FlPte.D.mask

Setup = tuple[Machine, VtdUnit, Pages, Tables, PageTable, Queue]


def fl_setup(config: dict[str, object] | None = None, npages: int = 1024) -> Setup:
    """PASID 1 -> first-stage table mapping IOVA.. -> PHYS.. contiguously, A/D clear."""
    m, unit, pages, t = sm_setup(config)
    q = Queue(m, unit, pages)
    pt = PageTable(m, pages, 4, fl=True)
    for i in range(npages):
        pt.map(IOVA + (i << 12), PHYS + (i << 12))
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt)
    return m, unit, pages, t, pt, q


def tlb(unit: VtdUnit, iova: int) -> TlbEntry:
    return unit.caches.iotlb.tables[DID, PASID][0][iova >> 12]


def blocks(unit: VtdUnit) -> dict[int, Block]:
    return unit.caches.iotlb.tables[DID, PASID][BLOCK]


def pte(m: Machine, pt: PageTable, iova: int, level: int = 1) -> int:
    return m.memory.read_u64(pt.entry_addr(iova, level))


def tr(unit: VtdUnit, addr: int, size: int, write: bool = False) -> tuple[tuple[int, int], ...]:
    r = unit.translate(RID, PASID, False, addr, size, write)
    assert r.fault is None, r.fault
    return r.runs


def fresh_runs(unit: VtdUnit, addr: int, size: int, write: bool) -> list[tuple[int, int]]:
    """What a page-by-page walk of the tables gives, merged like the unit merges."""
    out: list[tuple[int, int]] = []
    a, end = addr, addr + size
    while a < end:
        page, reason = unit.fresh_outcome(RID, PASID, False, False, write, a)
        assert reason == 0
        n = min(end, (a | 0xFFF) + 1) - a
        pa = page | (a & 0xFFF)
        if out and out[-1][0] + out[-1][1] == pa:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((pa, n))
        a += n
    return out


# -- the model's own A/D updates ------------------------------------------------------------
def test_own_accessed_bit_updates_do_not_make_cached_entries_suspect() -> None:
    m, unit, _pages, _t, pt, _q = fl_setup(npages=1)
    pt.map(IOVA + 0x1000, PHYS + 0x1000)
    pt.map(IOVA + BLK, PHYS + BLK)  # another L1 table: its L2 entry has A clear
    tr(unit, IOVA, 4096)
    assert pte(m, pt, IOVA, 2) & A_BIT and pte(m, pt, IOVA) & A_BIT
    tr(unit, IOVA + 0x1000, 4096)  # sets A in a neighbouring leaf slot
    tr(unit, IOVA + BLK, 4096)  # sets A in a neighbouring L2 slot
    assert pte(m, pt, IOVA + 0x1000) & A_BIT and pte(m, pt, IOVA + BLK, 2) & A_BIT
    assert not tlb(unit, IOVA).suspect and not tlb(unit, IOVA + 0x1000).suspect
    misses = unit.stats.iotlb_misses
    tr(unit, IOVA, 4096)
    assert (unit.stats.iotlb_misses, unit.stats.stale_uses) == (misses, 0)
    # Software clears A in the L2 entry IOVA's translation was read through; the fill
    # of a sibling page sets it again: the model's own write marks nothing.
    l2 = pt.entry_addr(IOVA, 2)
    m.memory.write_u64(l2, m.memory.read_u64(l2) & ~A_BIT)
    tr(unit, IOVA, 4096)  # re-verified, same translation
    pt.map(IOVA + 0x2000, PHYS + 0x2000)
    tr(unit, IOVA + 0x2000, 4096)
    assert m.memory.read_u64(l2) & A_BIT
    assert not tlb(unit, IOVA).suspect and unit.stats.stale_uses == 0


def test_own_dirty_bit_updates_do_not_make_cached_entries_suspect() -> None:
    m, unit, _pages, _t, pt, _q = fl_setup(npages=4)
    tr(unit, IOVA, 4 << 12)  # read: A set, D clear
    assert not pte(m, pt, IOVA) & D_BIT
    tr(unit, IOVA, 4 << 12, write=True)
    for i in range(4):
        assert pte(m, pt, IOVA + (i << 12)) & D_BIT
        e = tlb(unit, IOVA + (i << 12))
        assert e.dirty and not e.suspect
    assert unit.stats.stale_uses == 0


def test_first_warm_run_after_cold_fill_walks_nothing() -> None:
    _m, unit, _pages, _t, _pt, _q = fl_setup()
    tr(unit, IOVA, 2 * BLK, write=True)
    calls = []
    real = unit.walker.walk_fl
    unit.walker.walk_fl = lambda *a: calls.append(a) or real(*a)  # type: ignore[method-assign]
    assert tr(unit, IOVA, 2 * BLK, write=True) == ((PHYS, 2 * BLK),)
    assert calls == [] and unit.stats.iotlb_misses == 1024


# -- granularity of suspect marking ------------------------------------------------------------
def test_write_to_a_neighbouring_pte_leaves_the_cached_entry_clean() -> None:
    _m, unit, _pages, _t, pt, _q = fl_setup(npages=1)
    tr(unit, IOVA, 4096)
    pt.map(IOVA + 0x5000, PHYS + 0x5000)
    pt.map(IOVA + BLK, PHYS)  # new L1 table, written into the cached L2 page
    assert not tlb(unit, IOVA).suspect


def test_rewriting_the_same_value_leaves_the_entry_clean() -> None:
    m, unit, _pages, _t, pt, _q = fl_setup(npages=1)
    tr(unit, IOVA, 4096)
    addr = pt.entry_addr(IOVA, 1)
    m.memory.write_u64(addr, m.memory.read_u64(addr))
    assert not tlb(unit, IOVA).suspect
    m.memory.write_u64(addr, m.memory.read_u64(addr) | 1 << 9)  # ignored bit, still a change
    assert tlb(unit, IOVA).suspect
    tr(unit, IOVA, 4096)
    assert not tlb(unit, IOVA).suspect and unit.stats.stale_uses == 0


def test_software_clearing_accessed_bit_is_not_stale() -> None:
    m, unit, _pages, _t, pt, _q = fl_setup(npages=1)
    tr(unit, IOVA, 4096, write=True)
    addr = pt.entry_addr(IOVA, 1)
    m.memory.write_u64(addr, m.memory.read_u64(addr) & ~(A_BIT | D_BIT))
    assert tr(unit, IOVA, 4096, write=True) == ((PHYS, 4096),)
    assert unit.stats.stale_uses == 0


# -- stale detection through block summaries ---------------------------------------------------
def test_pte_rewritten_after_caching_is_stale_on_a_warm_run() -> None:
    m, unit, _pages, _t, pt, _q = fl_setup()
    events: list[tuple[str, dict[str, object]]] = []
    m.set_hw_trace_sink(lambda name, ts, fields: events.append((name, fields)))
    tr(unit, IOVA, BLK)
    tr(unit, IOVA, BLK)
    assert IOVA >> 21 in blocks(unit)
    pt.map(IOVA + 100 * 4096, 0x1F0_0000)  # no invalidation
    assert tr(unit, IOVA, BLK) == ((PHYS, BLK),)  # the cached translation is used
    assert unit.stats.stale_uses == 1
    stale = [f for n, f in events if n == "hw_vtd:stale_translation"]
    assert stale[0]["addr"] == IOVA + 100 * 4096
    assert stale[0]["current"] == (0x1F0_0000, 0)
    assert tr(unit, IOVA, BLK) == ((PHYS, BLK),)
    assert unit.stats.stale_uses == 2  # reported on every use until invalidated


def test_pte_rewritten_after_caching_raises_with_strict_stale() -> None:
    _m, unit, _pages, _t, pt, _q = fl_setup({"strict_stale": True})
    tr(unit, IOVA, BLK)
    tr(unit, IOVA, BLK)
    pt.unmap(IOVA + 511 * 4096)
    with pytest.raises(StaleTranslationError):
        tr(unit, IOVA, BLK)


def test_page_invalidation_in_a_summarised_block_shows_the_new_mapping() -> None:
    _m, unit, _pages, _t, pt, q = fl_setup()
    tr(unit, IOVA, BLK)
    tr(unit, IOVA, BLK)
    pt.map(IOVA + 7 * 4096, 0x1F0_0000)
    q.submit(piotlb(DID, PASID, IOVA + 7 * 4096))
    assert IOVA >> 21 not in blocks(unit)
    misses = unit.stats.iotlb_misses
    assert tr(unit, IOVA, BLK) == (
        (PHYS, 7 * 4096),
        (0x1F0_0000, 4096),
        (PHYS + 8 * 4096, BLK - 8 * 4096),
    )
    assert unit.stats.iotlb_misses == misses + 1 and unit.stats.stale_uses == 0


def test_global_invalidation_drops_the_summaries() -> None:
    _m, unit, _pages, _t, _pt, q = fl_setup()
    tr(unit, IOVA, BLK)
    q.submit(iotlb_global())
    assert (DID, PASID) not in unit.caches.iotlb.tables
    assert tr(unit, IOVA, BLK) == ((PHYS, BLK),)


def test_changed_pasid_entry_is_stale_through_a_summarised_block() -> None:
    m, unit, pages, t, _pt, _q = fl_setup()
    tr(unit, IOVA, BLK)
    other = PageTable(m, pages, 4, fl=True)
    for i in range(512):
        other.map(IOVA + (i << 12), 0x1C0_0000 + (i << 12))
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=other)  # no PASID-cache flush
    assert tr(unit, IOVA, BLK) == ((PHYS, BLK),)
    assert unit.stats.stale_uses == 512


def test_pasid_cache_flush_rebinds_the_stage_without_stale_use() -> None:
    _m, unit, _pages, _t, _pt, q = fl_setup()
    tr(unit, IOVA, BLK)
    q.submit(pc_inval(2, did=DID, pasid=PASID))
    assert tr(unit, IOVA, BLK) == ((PHYS, BLK),)
    stage = unit.caches.pasid[RID, PASID].info.stage
    assert blocks(unit)[IOVA >> 21].src is stage
    assert unit.stats.stale_uses == 0 and unit.stats.iotlb_misses == 512


def test_new_root_pointer_rechecks_summarised_entries() -> None:
    m, unit, _pages, t, _pt, _q = fl_setup()
    tr(unit, IOVA, BLK)
    old = blocks(unit)[IOVA >> 21]
    set_root(m, unit, t.root, scalable=True)  # same tables: every entry re-verified
    assert tr(unit, IOVA, BLK) == ((PHYS, BLK),)
    assert unit.stats.stale_uses == 0 and blocks(unit)[IOVA >> 21] is not old


# -- permissions and dirty bits through summaries -------------------------------------------
def test_write_over_a_read_summary_sets_every_dirty_bit() -> None:
    m, unit, _pages, _t, pt, _q = fl_setup()
    tr(unit, IOVA, BLK)
    assert not blocks(unit)[IOVA >> 21].dirty
    tr(unit, IOVA, BLK, write=True)
    assert all(pte(m, pt, IOVA + (i << 12)) & D_BIT for i in range(512))
    assert blocks(unit)[IOVA >> 21].dirty


def test_read_only_page_in_a_summarised_block_faults_exactly() -> None:
    _m, unit, _pages, _t, pt, _q = fl_setup()
    pt.map(IOVA + 300 * 4096, PHYS + 300 * 4096, w=False)
    tr(unit, IOVA, BLK)
    tr(unit, IOVA, BLK)
    r = unit.translate(RID, PASID, False, IOVA, BLK, True)
    assert r.runs == ((PHYS, 300 * 4096),)
    assert r.fault is not None and r.fault.addr == IOVA + 300 * 4096
    assert r.fault.reason == FR.SM_WRITE and unit.stats.stale_uses == 0


def test_supervisor_page_in_a_summarised_block_faults_a_user_request() -> None:
    _m, unit, _pages, t, pt, _q = fl_setup()
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt, sre=True)
    pt.map(IOVA + 5 * 4096, PHYS + 5 * 4096, u=False)
    unit.translate(RID, PASID, True, IOVA, BLK, False)  # supervisor request builds it
    assert blocks(unit)[IOVA >> 21].perms & PERM_U == 0
    r = unit.translate(RID, PASID, False, IOVA, BLK, False)
    assert r.fault is not None and r.fault.reason == FR.SM_US
    assert r.runs == ((PHYS, 5 * 4096),)


# -- merged runs ----------------------------------------------------------------------------
def test_contiguous_blocks_merge_into_one_run() -> None:
    _m, unit, _pages, _t, _pt, _q = fl_setup()
    assert tr(unit, IOVA, 2 * BLK) == ((PHYS, 2 * BLK),)
    assert tr(unit, IOVA, 2 * BLK) == ((PHYS, 2 * BLK),)
    assert sorted(blocks(unit)) == [IOVA >> 21, (IOVA >> 21) + 1]


@pytest.mark.parametrize(
    ("off", "size"),
    [
        (0, BLK),
        (0x800, 3 * 4096),
        (4096 * 250 + 17, 4096 * 20),
        (BLK - 4096, 8192),
        (BLK - 3, 2 * BLK - 4096),
        (0x123, BLK),
        (0, 1),
    ],
)
def test_summaries_give_what_a_page_walk_gives(off: int, size: int) -> None:
    """Shuffled physical pages (reversed within each 64 KiB) so runs split."""
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    for i in range(1536):
        pt.map(IOVA + (i << 12), PHYS + ((i ^ 0xF) << 12))
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt)
    tr(unit, IOVA, 3 * BLK)
    tr(unit, IOVA, 3 * BLK, write=True)
    assert len(blocks(unit)) == 3
    for write in (False, True):
        assert list(tr(unit, IOVA + off, size, write)) == fresh_runs(unit, IOVA + off, size, write)
    assert unit.stats.stale_uses == 0


def test_large_pages_build_no_summary() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(IOVA, PHYS, level=2)
    pt.map(IOVA + BLK, PHYS + BLK, level=2)
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt)
    assert tr(unit, IOVA, 2 * BLK) == ((PHYS, 2 * BLK),)
    assert tr(unit, IOVA, 2 * BLK) == ((PHYS, 2 * BLK),)
    assert blocks(unit) == {}


def test_block_with_an_unmapped_page_builds_no_summary() -> None:
    _m, unit, _pages, _t, pt, _q = fl_setup()
    pt.unmap(IOVA + 511 * 4096)
    r = unit.translate(RID, PASID, False, IOVA, BLK, False)
    assert r.fault is not None and r.fault.addr == IOVA + 511 * 4096
    tr(unit, IOVA, 511 * 4096)
    assert blocks(unit) == {}


def test_summary_needs_every_entry_clean_and_of_the_stage() -> None:
    _m, unit, _pages, _t, _pt, _q = fl_setup()
    tr(unit, IOVA, BLK)
    sizes = unit.caches.iotlb.tables[DID, PASID]
    sizes[BLOCK].clear()
    stage = unit.caches.pasid[RID, PASID].info.stage
    sizes[0][(IOVA >> 12) + 3].suspect = True
    assert unit.caches.build_block(sizes, IOVA >> 21, stage) is None
    sizes[0][(IOVA >> 12) + 3].suspect = False
    sizes[0][(IOVA >> 12) + 4].src = evolve(stage)
    assert unit.caches.build_block(sizes, IOVA >> 21, stage) is None
    del sizes[0][(IOVA >> 12) + 200]
    assert unit.caches.build_block(sizes, IOVA >> 21, stage) is None


def test_summary_refuses_runs_outside_ram_or_in_the_interrupt_range() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    ram = m.memory.size
    for i in range(512):
        pt.map(IOVA + (i << 12), ram - BLK + 4096 + (i << 12))  # the last page is outside RAM
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt)
    r = unit.translate(RID, PASID, False, IOVA, BLK, False)
    assert r.fault is not None and r.runs == ((ram - BLK + 4096, BLK - 4096),)
    sizes = unit.caches.iotlb.tables[DID, PASID]
    stage = unit.caches.pasid[RID, PASID].info.stage
    assert unit.caches.build_block(sizes, IOVA >> 21, stage) is None
    for i in range(512):
        sizes[0][(IOVA >> 12) + i].phys = 0xFEE0_0000 + (i << 12)
    assert unit.caches.build_block(sizes, IOVA >> 21, stage) is None


def test_large_page_entry_is_reverified_after_an_ignored_bit_changes() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    addr = pt.map(IOVA, PHYS, level=2)
    t.pasid_entry(RID, PASID, ent.PGTT_FL, did=DID, pt=pt)
    tr(unit, IOVA, BLK)
    m.memory.write_u64(addr, m.memory.read_u64(addr) | 1 << 9)
    assert unit.caches.iotlb.tables[DID, PASID][1][IOVA >> 21].suspect
    assert tr(unit, IOVA, BLK) == ((PHYS, BLK),)
    assert not unit.caches.iotlb.tables[DID, PASID][1][IOVA >> 21].suspect
    assert unit.stats.stale_uses == 0


def test_a_bare_walker_sets_accessed_and_dirty_bits_in_ram() -> None:
    m, unit, pages, _t = sm_setup()
    walker = Walker(m.memory, unit.cfg)
    addr = pages.alloc()
    walker.set_bits(addr, A_BIT)
    walker.set_bits(addr, A_BIT)
    assert m.memory.read_u64(addr) == A_BIT
