"""Filling a request's further pages of a last-level table from one read (the
SMMUv3 ``_fill_ahead``) is exact: a request over many 4 KiB pages leaves the TLB
(tags, frames, rights, granules), the tables' Access/dirty bits, the stale tracker's
dependencies, the event queue and the counters as the same pages requested one at a
time (each a request of its own, so each a full walk) leave them, whatever stops the
run midway; and a leaf filled that way is still reported when it is used after its
descriptor changed without an invalidation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hw.bus import DmaResult
from hw.smmuv3 import Evt, StaleTranslationError
from hw.smmuv3 import entries as ent
from tests.hw.cache_state import deps_state, tlb_state
from tests.hw.smmuv3.helpers import RAM, RID, PageTable, Rig

IOVA = 0x4000_0000
PHYS = 0x100_0000
ASID = 5
PAGES = 40
"""Pages per request: crosses no 2 MiB boundary, so one walk then one run."""

Request = Callable[[int, int, bool], DmaResult]


def _leaf(phys: int, ng: bool = True, ro: bool = False, af: bool = True, dbm: bool = False) -> int:
    return PageTable.leaf(phys, ro=ro, af=af, ng=ng) | (ent.LpaeLeaf.DBM.mask if dbm else 0)


class Setup:
    """A Rig whose CD for ``pasid`` maps ``PAGES`` pages at IOVA, leaf ``i`` made by
    ``leaf(i)``."""

    def __init__(
        self,
        leaf: Callable[[int], int],
        pasid: int | None = None,
        config: dict[str, object] | None = None,
        priv: bool = False,
        **cd_fields: int,
    ) -> None:
        self.rig = r = Rig(config)
        self.pasid = pasid
        self.priv = priv
        r.cd(pasid or 0, ASID, **cd_fields)
        self.pt = r.table(ASID)
        for i in range(PAGES + 1):
            self.set_leaf(i, leaf(i))

    def leaf_addr(self, i: int) -> int:
        return self.pt.entry_addr(IOVA + (i << 12), 3)

    def set_leaf(self, i: int, value: int) -> None:
        self.rig.m.memory.write_u64(self.leaf_addr(i), value)

    def req(self, addr: int, size: int, write: bool) -> DmaResult:
        return self.rig.unit.translate(RID, self.pasid, self.priv, addr, size, write)

    def state(self) -> tuple[object, ...]:
        """Everything a fill leaves behind, keyed so two machines compare equal."""
        unit = self.rig.unit
        tlb = tlb_state(unit.caches.tlb, src=True)
        deps = deps_state(unit.pipeline.deps)
        mem = self.rig.m.memory
        leaves = [mem.read_u64(self.leaf_addr(i)) for i in range(PAGES + 1)]
        s = unit.stats
        counters = (s.iotlb_misses, s.iotlb_hits, s.faults, s.faults_suppressed, s.stale_uses)
        events = self.rig.smmu.events()
        return tlb, deps, leaves, counters, events


KINDS: dict[str, Callable[[], Setup]] = {
    "asid": lambda: Setup(lambda i: _leaf(PHYS + (i << 12))),
    "global": lambda: Setup(lambda i: _leaf(PHYS + (i << 12), ng=False)),
    "mixed-ng": lambda: Setup(lambda i: _leaf(PHYS + (i << 12), ng=bool(i % 3))),
    "pasid": lambda: Setup(lambda i: _leaf(PHYS + (i << 12)), pasid=3),
    "ha": lambda: Setup(
        lambda i: _leaf(PHYS + (i << 12), af=bool(i % 2)), config={"httu": 1}, HA=1
    ),
    "dbm": lambda: Setup(
        lambda i: _leaf(PHYS + (i << 12), ro=True, dbm=i % 4 != 1),
        config={"httu": 2},
        HA=1,
        HD=1,
    ),
    "scattered": lambda: Setup(lambda i: _leaf(PHYS + (((i * 7) % PAGES) << 12))),
    "aptable-ro": lambda: _aptable(1 << 62),
    "aptable-no-el0-priv": lambda: _aptable(1 << 61, priv=True),
}


def _aptable(bits: int, priv: bool = False) -> Setup:
    """APTable bits in the level-2 table descriptor above the leaves: they take
    rights from every leaf below (read-only; no EL0 access)."""
    s = Setup(lambda i: _leaf(PHYS + (i << 12)), priv=priv)
    addr = s.pt.entry_addr(IOVA, 2)
    mem = s.rig.m.memory
    mem.write_u64(addr, mem.read_u64(addr) | bits)
    return s


Break = Callable[[Setup], None]


def _hole(s: Setup) -> None:
    s.set_leaf(17, 0)


def _read_only(s: Setup) -> None:
    s.set_leaf(9, _leaf(PHYS + (9 << 12), ro=True))


def _cached_midway(s: Setup) -> None:
    s.req(IOVA + (21 << 12), 4096, False)


def _beyond_ram(s: Setup) -> None:
    s.set_leaf(30, _leaf(RAM + (5 << 12)))


def _addr_size(s: Setup) -> None:
    s.set_leaf(12, _leaf(PHYS + (12 << 12)) | 1 << 49)


def _no_af(s: Setup) -> None:
    s.set_leaf(14, _leaf(PHYS + (14 << 12), af=False))


def _block_at_level3(s: Setup) -> None:
    s.set_leaf(8, _leaf(PHYS + (8 << 12)) & ~2)


def _privileged_only(s: Setup) -> None:
    s.set_leaf(19, PageTable.leaf(PHYS + (19 << 12), user=False))


BREAKS: dict[str, Break] = {
    "none": lambda s: None,
    "hole": _hole,
    "read-only": _read_only,
    "cached-midway": _cached_midway,
    "beyond-ram": _beyond_ram,
    "addr-size": _addr_size,
    "no-af": _no_af,
    "block-at-level-3": _block_at_level3,
    "privileged-only": _privileged_only,
}


def _merge(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for phys, size in runs:
        if merged and merged[-1][0] + merged[-1][1] == phys:
            merged[-1] = (merged[-1][0], merged[-1][1] + size)
        else:
            merged.append((phys, size))
    return merged


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("brk", list(BREAKS), ids=list(BREAKS))
@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_one_request_leaves_what_page_by_page_requests_leave(
    kind: str, brk: str, write: bool
) -> None:
    one, ref = KINDS[kind](), KINDS[kind]()
    BREAKS[brk](one)
    BREAKS[brk](ref)
    start = IOVA + (2 << 12)  # the first page is a walk, the rest one run
    n = PAGES - 2
    whole = one.req(start, n << 12, write)
    runs: list[tuple[int, int]] = []
    fault = None
    for i in range(n):
        r = ref.req(start + (i << 12), 4096, write)
        runs += r.runs
        if r.fault is not None:
            fault = r.fault
            break
    assert list(whole.runs) == _merge(runs)
    assert whole.fault == fault
    assert one.state() == ref.state()
    assert one.rig.unit.stats.stale_uses == 0


def test_the_run_fills_every_page_with_its_own_leaf() -> None:
    """Against the tables the test wrote: frame i of the run is PHYS + i pages, one
    miss each, no hit counted."""
    s = KINDS["scattered"]()
    walker = s.rig.unit.walker
    walks: list[int] = []
    walk_raw = walker.walk_raw
    walker.walk_raw = lambda cd, va, *a: walks.append(va) or walk_raw(cd, va, *a)  # type: ignore[method-assign]
    r = s.req(IOVA, PAGES << 12, False)
    assert walks == [IOVA]  # one walk; the other pages from one read of its table
    assert r.fault is None and sum(n for _, n in r.runs) == PAGES << 12
    d = s.rig.unit.caches.tlb.tables[0, ASID][0]
    assert sorted(d) == [(IOVA >> 12) + i for i in range(PAGES)]
    assert all(d[(IOVA >> 12) + i].phys == PHYS + (((i * 7) % PAGES) << 12) for i in range(PAGES))
    st = s.rig.unit.stats
    assert (st.iotlb_misses, st.iotlb_hits) == (PAGES, 0)


def test_global_leaves_go_under_the_global_tag() -> None:
    s = KINDS["mixed-ng"]()
    s.req(IOVA, PAGES << 12, False)
    tables = s.rig.unit.caches.tlb.tables
    local, glob = tables[0, ASID][0], tables[0, -1][0]
    base = IOVA >> 12
    assert sorted(local) == [base + i for i in range(PAGES) if i % 3]
    assert sorted(glob) == [base + i for i in range(PAGES) if not i % 3]


def test_dbm_read_run_then_write_marks_the_written_leaf_dirty() -> None:
    """A read fills writable-clean leaves without touching them; a write through the
    cached entry makes its leaf dirty (AP[2] cleared) and nothing else."""
    s = KINDS["dbm"]()
    s.req(IOVA, PAGES << 12, False)
    mem = s.rig.m.memory
    ap2 = ent.LpaeLeaf.AP2.mask
    assert all(mem.read_u64(s.leaf_addr(i)) & ap2 for i in range(PAGES))
    r = s.req(IOVA + (6 << 12), 4096, True)
    assert r.fault is None
    dirty = [i for i in range(PAGES) if not mem.read_u64(s.leaf_addr(i)) & ap2]
    assert dirty == [6]


@pytest.mark.parametrize("kind", ["asid", "global"])
def test_leaf_of_the_run_rewritten_without_invalidation_is_a_stale_use(kind: str) -> None:
    s = Setup(lambda i: _leaf(PHYS + (i << 12), ng=kind == "asid"), config={"strict_stale": True})
    s.req(IOVA, PAGES << 12, False)
    s.set_leaf(25, _leaf(PHYS + (100 << 12), ng=kind == "asid"))
    with pytest.raises(StaleTranslationError):
        s.req(IOVA + (25 << 12), 4096, False)
    assert s.rig.unit.stats.stale_uses == 1
    # Its neighbours in the same table page were not touched: still exact, no report.
    s.req(IOVA + (26 << 12), 4096, False)
    assert s.rig.unit.stats.stale_uses == 1


def test_upper_level_rewritten_after_the_run_is_a_stale_use() -> None:
    s = KINDS["asid"]()
    s.req(IOVA, PAGES << 12, False)
    l2 = s.pt.entry_addr(IOVA, 2)
    s.rig.m.memory.write_u64(l2, 0)  # the whole last-level table is gone
    r = s.req(IOVA + (7 << 12), 4096, False)
    assert s.rig.unit.stats.stale_uses == 1
    assert r.fault is None  # the cached answer is used


def test_with_hardware_tracing_every_page_is_its_own_miss_event() -> None:
    s = KINDS["asid"]()
    events: list[tuple[str, dict[str, object]]] = []
    s.rig.m.set_hw_trace_sink(lambda name, ts, fields: events.append((name, fields)))
    s.req(IOVA, 8 << 12, False)
    misses = [f["addr"] for name, f in events if name == "hw_smmuv3:tlb_miss"]
    assert misses == [IOVA + (i << 12) for i in range(8)]


def test_the_page_that_stops_the_run_faults_with_its_own_event() -> None:
    s = KINDS["asid"]()
    s.set_leaf(11, 0)
    r = s.req(IOVA, PAGES << 12, False)
    assert r.runs == ((PHYS, 11 << 12),)
    assert r.fault is not None and r.fault.addr == IOVA + (11 << 12)
    assert r.fault.reason == Evt.F_TRANSLATION
    assert s.rig.unit.stats.iotlb_misses == 12  # 11 filled, and the walk that faulted
    assert s.rig.smmu.event_ids() == [Evt.F_TRANSLATION]


def test_whole_block_filled_at_once_is_summarised_and_served_in_the_same_request() -> None:
    """A whole 2 MiB block: the first page is walked, the rest filled from one read,
    the block summarised there and the rest of the request served from the summary;
    counted as 512 misses and no hit, and the next request is 512 hits."""
    s = Setup(lambda i: _leaf(PHYS + (i << 12)))
    for i in range(PAGES + 1, 512):
        s.set_leaf(i, _leaf(PHYS + (i << 12)))
    r = s.req(IOVA, 2 << 20, False)
    assert r.runs == ((PHYS, 2 << 20),) and r.fault is None
    st = s.rig.unit.stats
    assert (st.iotlb_misses, st.iotlb_hits) == (512, 0)
    assert sorted(s.rig.unit.caches.tlb.tables[0, ASID][3]) == [IOVA >> 21]
    assert s.req(IOVA, 2 << 20, False).runs == r.runs
    assert (st.iotlb_misses, st.iotlb_hits) == (512, 512)
