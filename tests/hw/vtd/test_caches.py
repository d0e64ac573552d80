"""Caches keep entries until invalidated; stale use is detected; each invalidation
type and granularity drops exactly its entries."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hw.memory import Memory
from hw.translation import Pipeline, PipelineStats, TlbEntry
from hw.vtd import StaleTranslationError
from hw.vtd import entries as ent
from hw.vtd.caches import Caches
from tests.hw.vtd.helpers import (
    RID,
    RID2,
    PageTable,
    Queue,
    cc_inval,
    iotlb_dsi,
    iotlb_global,
    iotlb_psi,
    legacy_setup,
    pc_inval,
    piotlb,
    sm_setup,
)


def fl_two_pasids() -> tuple:  # type: ignore[type-arg]
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    pa = PageTable(m, pages, 4, fl=True)
    pb = PageTable(m, pages, 4, fl=True)
    pa.map(0x1000, 0xA000)
    pb.map(0x1000, 0xB000)
    t.pasid_entry(RID, 1, ent.PGTT_FL, did=5, pt=pa)
    t.pasid_entry(RID, 2, ent.PGTT_FL, did=5, pt=pb)
    unit.translate(RID, 1, False, 0x1000, 4, False)
    unit.translate(RID, 2, False, 0x1000, 4, False)
    return m, unit, pages, t, q, pa, pb


def test_second_translation_hits_the_iotlb() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    unit.translate(RID, None, False, 0x1000, 4, False)
    assert (unit.stats.iotlb_misses, unit.stats.iotlb_hits) == (1, 1)


def test_changed_pte_without_invalidation_keeps_old_translation_and_is_stale() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    pt.map(0x1000, 0x300000)
    r = unit.translate(RID, None, False, 0x1000, 4, False)
    assert r.runs == ((0x200000, 4),)
    assert unit.stats.stale_uses == 1


def test_stale_use_emits_hw_trace_event() -> None:
    m, unit, _pages, _t, pt = legacy_setup()
    events: list[tuple[str, dict[str, object]]] = []
    m.set_hw_trace_sink(lambda name, ts, fields: events.append((name, fields)))
    pt.map(0x1000, 0x200000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    pt.unmap(0x1000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    stale = [f for n, f in events if n == "hw_vtd:stale_translation"]
    assert stale == [
        {
            "unit": "dmar0",
            "rid": RID,
            "pasid": None,
            "addr": 0x1000,
            "cached": (0x200000, 0),
            "current": (-1, 6),
            "cache": "iotlb",
            "write_ns": [m.clock.now],
            "missing": [
                "IOTLB invalidation (iotlb_inv_dsc, type 0x2): "
                "G=page-selective-within-domain DID=1 ADDR=0x1000 AM=0"
            ],
        }
    ]


def test_strict_stale_raises() -> None:
    _m, unit, _pages, _t, pt = legacy_setup({"strict_stale": True})
    pt.map(0x1000, 0x200000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    pt.unmap(0x1000)
    with pytest.raises(StaleTranslationError):
        unit.translate(RID, None, False, 0x1000, 4, False)


def test_unrelated_write_to_table_page_is_not_stale() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    pt.map(0x2000, 0x300000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    unit.translate(RID, None, False, 0x1000, 4, False)
    assert unit.stats.stale_uses == 0 and unit.stats.iotlb_hits == 2


def test_psi_flush_makes_the_new_mapping_visible() -> None:
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    pt = PageTable(m, pages, 4)
    pt.map(0x1000, 0x200000)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    unit.translate(RID, None, False, 0x1000, 4, False)
    pt.map(0x1000, 0x300000)
    q.submit(iotlb_psi(2, 0x1000))
    r = unit.translate(RID, None, False, 0x1000, 4, False)
    assert r.runs == ((0x300000, 4),) and unit.stats.stale_uses == 0


def test_psi_flush_leaves_other_pages() -> None:
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    pt = PageTable(m, pages, 4)
    pt.map(0x1000, 0x200000)
    pt.map(0x5000, 0x500000)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    unit.translate(RID, None, False, 0x1000, 0x1000, False)
    unit.translate(RID, None, False, 0x5000, 0x1000, False)
    q.submit(iotlb_psi(2, 0x1000, am=1))
    assert unit.caches.iotlb_size == 1


def test_psi_flush_drops_a_covering_2m_entry() -> None:
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    pt = PageTable(m, pages, 4)
    pt.map(0x20_0000, 0x40_0000, level=2)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    unit.translate(RID, None, False, 0x20_0000, 4, False)
    q.submit(iotlb_psi(2, 0x21_0000))
    assert unit.caches.iotlb_size == 0


def test_dsi_flush_drops_only_that_domain() -> None:
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    pa, pb = PageTable(m, pages, 4), PageTable(m, pages, 4)
    pa.map(0x1000, 0x200000)
    pb.map(0x1000, 0x300000)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pa)
    t.sm_ctx(RID2)
    t.pasid_entry(RID2, 0, ent.PGTT_SL, did=3, pt=pb)
    unit.translate(RID, None, False, 0x1000, 4, False)
    unit.translate(RID2, None, False, 0x1000, 4, False)
    q.submit(iotlb_dsi(2))
    assert list(unit.caches.iotlb.tables) == [(3, -1)]


def test_global_iotlb_flush_drops_everything() -> None:
    _m, unit, _pages, _t, q, _pa, _pb = fl_two_pasids()
    q.submit(iotlb_global())
    assert unit.caches.iotlb_size == 0


def test_dsi_iotlb_flush_leaves_first_stage_entries() -> None:
    _m, unit, _pages, _t, q, _pa, _pb = fl_two_pasids()
    q.submit(iotlb_dsi(5))
    assert unit.caches.iotlb_size == 2


def test_pasid_selective_piotlb_of_a_leaves_b() -> None:
    _m, unit, _pages, _t, q, _pa, _pb = fl_two_pasids()
    q.submit(piotlb(5, 1))
    assert list(unit.caches.iotlb.tables) == [(5, 2)]


def test_page_selective_piotlb_drops_one_page_of_one_pasid() -> None:
    _m, unit, _pages, _t, q, pa, _pb = fl_two_pasids()
    pa.map(0x2000, 0xC000)
    unit.translate(RID, 1, False, 0x2000, 4, False)
    q.submit(piotlb(5, 1, 0x2000))
    assert sorted(unit.caches.iotlb.tables[5, 1][0]) == [1]
    assert sorted(unit.caches.iotlb.tables[5, 2][0]) == [1]


def test_stale_pasid_entry_is_reported_until_pasid_cache_flush() -> None:
    m, unit, pages, t, q, _pa, _pb = fl_two_pasids()
    pc = PageTable(m, pages, 4, fl=True)
    pc.map(0x1000, 0xD000)
    t.pasid_entry(RID, 1, ent.PGTT_FL, did=5, pt=pc)
    r = unit.translate(RID, 1, False, 0x1000, 4, False)
    assert r.runs == ((0xA000, 4),) and unit.stats.stale_uses == 1
    q.submit(pc_inval(1, did=5, pasid=1), piotlb(5, 1))
    r = unit.translate(RID, 1, False, 0x1000, 4, False)
    assert r.runs == ((0xD000, 4),) and unit.stats.stale_uses == 1


def test_pasid_cache_flush_pasid_selective_leaves_other_pasid() -> None:
    _m, unit, _pages, _t, q, _pa, _pb = fl_two_pasids()
    q.submit(pc_inval(1, did=5, pasid=1))
    assert list(unit.caches.pasid) == [(RID, 2)]


def test_pasid_cache_flush_domain_selective_drops_all_pasids_of_did() -> None:
    _m, unit, _pages, _t, q, _pa, _pb = fl_two_pasids()
    q.submit(pc_inval(0, did=5))
    assert unit.caches.pasid == {}


def test_pasid_cache_flush_of_other_domain_keeps_entries() -> None:
    _m, unit, _pages, _t, q, _pa, _pb = fl_two_pasids()
    q.submit(pc_inval(0, did=6))
    assert len(unit.caches.pasid) == 2


def test_pasid_cache_global_flush() -> None:
    _m, unit, _pages, _t, q, _pa, _pb = fl_two_pasids()
    q.submit(pc_inval(3))
    assert unit.caches.pasid == {}


def test_context_cache_device_selective_flush_leaves_other_device() -> None:
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    t.sm_ctx(RID2)
    t.pasid_entry(RID, 0, ent.PGTT_PT, did=1)
    t.pasid_entry(RID2, 0, ent.PGTT_PT, did=1)
    unit.translate(RID, None, False, 0, 4, False)
    unit.translate(RID2, None, False, 0, 4, False)
    q.submit(cc_inval(3, sid=RID))
    assert list(unit.caches.ctx) == [RID2]


def test_context_cache_function_mask_covers_all_functions() -> None:
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    t.sm_ctx(RID + 1)
    t.pasid_entry(RID, 0, ent.PGTT_PT, did=1)
    t.pasid_entry(RID + 1, 0, ent.PGTT_PT, did=1)
    unit.translate(RID, None, False, 0, 4, False)
    unit.translate(RID + 1, None, False, 0, 4, False)
    q.submit(cc_inval(3, sid=RID, fm=3))
    assert unit.caches.ctx == {}


def test_context_cache_global_flush() -> None:
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    t.pasid_entry(RID, 0, ent.PGTT_PT, did=1)
    unit.translate(RID, None, False, 0, 4, False)
    q.submit(cc_inval(1))
    assert unit.caches.ctx == {}


def test_cleared_context_entry_without_flush_is_stale() -> None:
    m, unit, _pages, t = sm_setup()
    t.pasid_entry(RID, 0, ent.PGTT_PT, did=1)
    unit.translate(RID, None, False, 0x1000, 4, False)
    m.memory.write_u64(t.ctx_addr(RID), 0)
    r = unit.translate(RID, None, False, 0x1000, 4, False)
    assert r.fault is None and unit.stats.stale_uses == 1


def test_new_root_table_without_flush_is_stale() -> None:
    from tests.hw.vtd.helpers import Tables, set_root

    m, unit, pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    t2 = Tables(m, pages, scalable=False)
    pt2 = PageTable(m, pages, 4)
    pt2.map(0x1000, 0x300000)
    t2.legacy_ctx(RID, pt2.root, did=1)
    set_root(m, unit, t2.root, scalable=False)
    r = unit.translate(RID, None, False, 0x1000, 4, False)
    assert r.runs == ((0x200000, 4),) and unit.stats.stale_uses == 1


def test_shared_did_with_different_tables_is_stale() -> None:
    m, unit, pages, t, pt = legacy_setup()
    pt.map(0x1000, 0x200000)
    pt2 = PageTable(m, pages, 4)
    pt2.map(0x1000, 0x300000)
    t.legacy_ctx(RID2, pt2.root, did=1)
    unit.translate(RID, None, False, 0x1000, 4, False)
    r = unit.translate(RID2, None, False, 0x1000, 4, False)
    assert r.runs == ((0x200000, 4),) and unit.stats.stale_uses == 1


def test_permission_upgrade_without_flush_faults_and_is_stale() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000, w=False)
    unit.translate(RID, None, False, 0x1000, 4, False)
    pt.map(0x1000, 0x200000)
    r = unit.translate(RID, None, False, 0x1000, 4, True)
    assert r.fault is not None and unit.stats.stale_uses == 1


def test_not_present_result_is_not_cached() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    unit.translate(RID, None, False, 0x1000, 4, False)
    pt.map(0x1000, 0x200000)
    r = unit.translate(RID, None, False, 0x1000, 4, False)
    assert r.runs == ((0x200000, 4),) and unit.stats.stale_uses == 0


def test_flushed_entries_stop_watching_table_pages() -> None:
    m, unit, pages, t = sm_setup()
    q = Queue(m, unit, pages)
    pt = PageTable(m, pages, 4)
    pt.map(0x1000, 0x200000)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    unit.translate(RID, None, False, 0x1000, 4, False)
    assert m.memory.watched(pt.root >> 12)
    q.submit(iotlb_global(), pc_inval(3), cc_inval(1))
    assert not any(unit.caches.deps.deps.values())  # nothing depends on any table entry
    assert not unit.caches.deps.dependants()  # neither on its own nor under a table path
    m.memory.write_u64(pt.root + 8, 0)  # unwatched at the page's next write
    assert not m.memory.watched(pt.root >> 12)


# ---------------------------------------------------------------- nested IOTLB entries

_NEST_TAGS = {
    "sl": (5, -1),
    "fl3": (5, 3),
    "nest3": (5, 3 | (1 << 20)),
    "nest4": (5, 4 | (1 << 20)),
    "nest0": (5, 0 | (1 << 20)),
    "other_did": (6, 3 | (1 << 20)),
}


@pytest.mark.parametrize(
    ("op", "kept"),
    [
        # P_IOTLB of PASID 3 (all, then page 0x1000 only): first-stage and nested of PASID 3
        (lambda c: c.flush_tlb(did=5, tag=3, nested=True), {"sl", "nest4", "nest0", "other_did"}),
        (
            lambda c: c.flush_tlb(did=5, tag=3, addr=0x1000, nested=True),
            {"sl", "nest4", "nest0", "other_did", "fl3@0x5000", "nest3@0x5000"},
        ),
        # P_IOTLB of PASID 0 does not reach the nested entries of other PASIDs
        (lambda c: c.flush_tlb(did=5, tag=0, nested=True), set(_NEST_TAGS) - {"nest0"}),
        # IOTLB DSI: second-stage and every nested entry of the DID, not first-stage ones
        (lambda c: c.flush_tlb(did=5, tag=-1, nested=True), {"fl3", "other_did"}),
        # IOTLB PSI: the second-stage page, and every nested entry of the DID
        (
            lambda c: c.flush_tlb(did=5, tag=-1, addr=0x1000, nested=True),
            {"fl3", "other_did", "sl@0x5000"},
        ),
    ],
    ids=["piotlb", "piotlb_psi", "piotlb_pasid0", "iotlb_dsi", "iotlb_psi"],
)
def test_which_invalidations_reach_nested_entries(
    op: Callable[[Caches], int], kept: set[str]
) -> None:
    """A reference table of spec 6.5.2.3/6.5.2.4 for nested entries: each tag holds
    pages 0x1000 and 0x5000; ``kept`` names the tags left whole (``name``) or the
    single page left (``name@addr``)."""
    caches = Caches(Pipeline(Memory(1 << 20), PipelineStats(), False))
    for tag in _NEST_TAGS.values():
        for addr in (0x1000, 0x5000):
            caches.iotlb.put(TlbEntry(tag, addr >> 12, 12, addr, 3, None))
    op(caches)
    left = {(e.tag, e.addr) for e in caches.iotlb.entries()}
    want: set[tuple[tuple[int, int], int]] = set()
    for name in kept:
        label, _, at = name.partition("@")
        addrs = (int(at, 16),) if at else (0x1000, 0x5000)
        want |= {(_NEST_TAGS[label], a) for a in addrs}
    assert left == want
