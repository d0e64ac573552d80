"""The mock IOMMU model (hw/mock_iommu.py) through MMIO and RAM only: registers,
tables, the IOTLB that keeps entries until invalidated, stale-use detection, fault
recording, and bad input faulting with the model's reasons (never an exception)."""

from __future__ import annotations

import pytest

from hw import mock_iommu as mi
from hw.bus import DMA_FAULT_BUS
from hw.machine import Machine, build_machine

BASE = 0xFED9_0000
RID = 0x0010  # 00:02.0
PT_ROOT = 0x10_0000
ROOT = 0x20_0000
CTX = 0x20_1000
PDIR = 0x20_2000
PTAB = 0x20_3000
FL_ROOT = 0x30_0000


def make(pasid_width: int = 8) -> tuple[Machine, mi.MockIommuUnit]:
    m = build_machine(
        {
            "ram": "16M",
            "iommus": [{"kind": "mock", "name": "mock0", "config": {"pasid_width": pasid_width}}],
        }
    )
    unit = m.iommus["mock0"]
    assert isinstance(unit, mi.MockIommuUnit)
    return m, unit


def wq(m: Machine, off: int, value: int) -> None:
    m.mmio_write(BASE + off, 8, value)


def rq(m: Machine, off: int) -> int:
    return m.mmio_read(BASE + off, 8)


def tte(tt: int, root: int = 0, did: int = 0) -> int:
    return 1 | tt << 1 | root | did << 52


class Tables:
    """A root table with RID's context entry, and a mock page table at PT_ROOT."""

    def __init__(self, m: Machine, did: int = 3) -> None:
        self.m = m
        self.next = 0x40_0000
        mem = m.memory
        mem.write_u64(ROOT + 8 * (RID >> 8), CTX | 1)
        mem.write_u64(CTX + 16 * (RID & 0xFF), tte(mi.TT_PAGING, PT_ROOT, did))
        wq(m, 0x08, ROOT)
        wq(m, 0x10, 1)

    def _page(self) -> int:
        self.next += 0x1000
        return self.next

    def slot(self, iova: int, level: int = 1) -> int:
        mem, table = self.m.memory, PT_ROOT
        for lvl in range(4, level, -1):
            addr = table + 8 * ((iova >> (12 + 9 * (lvl - 1))) & 0x1FF)
            pte = mem.read_u64(addr)
            if not pte & 3:
                pte = self._page() | 3
                mem.write_u64(addr, pte)
            table = pte & mi.ADDR_MASK
        return table + 8 * ((iova >> (12 + 9 * (level - 1))) & 0x1FF)

    def map(self, iova: int, phys: int, perm: int = 3, level: int = 1) -> None:
        self.m.memory.write_u64(self.slot(iova, level), phys | perm | (0x80 if level == 2 else 0))

    def unmap(self, iova: int) -> None:
        self.m.memory.write_u64(self.slot(iova), 0)


def test_registers_report_the_pasid_width_and_latch_root_and_enable() -> None:
    m, _ = make(pasid_width=12)
    assert rq(m, 0x00) == 12
    wq(m, 0x08, ROOT | 0x123)  # low bits are reserved: dropped
    wq(m, 0x10, 1)
    assert rq(m, 0x08) == ROOT and rq(m, 0x10) == 1
    wq(m, 0x00, 0)  # read-only
    assert rq(m, 0x00) == 12


def test_a_pasid_width_beyond_20_is_refused_at_build() -> None:
    with pytest.raises(ValueError, match="pasid_width 21"):
        make(pasid_width=21)


def test_translation_disabled_passes_dma_through() -> None:
    _, unit = make()
    res = unit.translate(RID, None, False, 0x1234, 64, True)
    assert res.runs == ((0x1234, 64),) and res.fault is None


def test_mapped_pages_translate_into_coalesced_runs() -> None:
    m, unit = make()
    t = Tables(m)
    t.map(0x1000, 0x50_0000)
    t.map(0x2000, 0x50_1000)
    t.map(0x3000, 0x60_0000)
    res = unit.translate(RID, None, False, 0x1800, 0x2000, False)
    assert res.runs == ((0x50_0800, 0x1800), (0x60_0000, 0x800)) and res.fault is None


def test_a_2mib_leaf_translates_every_page_inside() -> None:
    m, unit = make()
    t = Tables(m)
    t.map(0x20_0000, 0x80_0000, level=2)
    res = unit.translate(RID, None, False, 0x23_4560, 16, False)
    assert res.runs == ((0x83_4560, 16),)


def test_iotlb_keeps_a_translation_until_invalidated_and_counts_its_stale_use() -> None:
    m, unit = make()
    t = Tables(m, did=3)
    t.map(0x1000, 0x50_0000)
    assert unit.translate(RID, None, False, 0x1000, 8, False).runs == ((0x50_0000, 8),)
    t.map(0x1000, 0x60_0000)  # changed without invalidation
    res = unit.translate(RID, None, False, 0x1000, 8, False)
    assert res.runs == ((0x50_0000, 8),)  # the cached entry, as hardware would
    assert unit.stats.stale_uses == 1
    wq(m, 0x20, 0x1000)
    wq(m, 0x18, mi.INV_RANGE | 3 << 16)  # DID 3, one page
    assert unit.translate(RID, None, False, 0x1000, 8, False).runs == ((0x60_0000, 8),)
    assert unit.stats.stale_uses == 1


def test_a_rewrite_to_the_same_value_is_not_a_stale_use() -> None:
    m, unit = make()
    t = Tables(m)
    t.map(0x1000, 0x50_0000)
    t.map(0x2000, 0x51_0000)
    unit.translate(RID, None, False, 0x1000, 8, False)
    t.map(0x2000, 0x52_0000)  # a neighbour in the same table page
    assert unit.translate(RID, None, False, 0x1000, 8, False).runs == ((0x50_0000, 8),)
    assert unit.stats.stale_uses == 0


@pytest.mark.parametrize(
    ("cmd", "kept"),
    [
        (mi.INV_GLOBAL, {3: False, 4: False}),
        (mi.INV_DOMAIN | 3 << 16, {3: False, 4: True}),
        (mi.INV_RANGE | 3 << 16 | 1 << 4, {3: False, 4: True}),  # two pages at 0
        (mi.INV_RANGE | 4 << 16 | 1 << 4, {3: True, 4: False}),
        (mi.INV_RANGE | 4 << 16, {3: True, 4: True}),  # page 0 only
    ],
)
def test_invalidation_drops_what_its_type_selects(cmd: int, kept: dict[int, bool]) -> None:
    m, unit = make()
    t = Tables(m, did=3)
    t.map(0x1000, 0x50_0000)
    unit.translate(RID, None, False, 0x1000, 8, False)
    m.memory.write_u64(CTX + 16 * (RID & 0xFF), tte(mi.TT_PAGING, PT_ROOT, 4))
    unit.translate(RID, None, False, 0x1000, 8, False)
    wq(m, 0x20, 0x0)
    wq(m, 0x18, cmd)
    assert {did: unit.iotlb.lookup(did, 0x1000) is not None for did in (3, 4)} == kept


def test_a_reserved_invalidation_type_is_ignored_and_logged() -> None:
    m, unit = make()
    t = Tables(m)
    t.map(0x1000, 0x50_0000)
    unit.translate(RID, None, False, 0x1000, 8, False)
    wq(m, 0x18, 0)
    wq(m, 0x18, mi.INV_DOMAIN | 9 << 16)  # a domain with nothing cached
    assert unit.iotlb.lookup(3, 0x1000) is not None
    assert unit.errors == ["INV: reserved type 0 ignored"]


def test_faults_are_recorded_once_then_overflow_and_clear_by_writing_one() -> None:
    m, unit = make()
    Tables(m)
    res = unit.translate(RID, None, True, 0x7000, 8, True)
    assert res.fault is not None and res.fault.reason == mi.FAULT_NOT_PRESENT
    assert res.fault.addr == 0x7000
    assert rq(m, 0x28) == 1 and rq(m, 0x38) == 0x7000
    frec = mi.MockFrec.decode(rq(m, 0x30))
    assert (frec["REASON"], frec["WRITE"], frec["PV"], frec["RID"]) == (1, 1, 0, RID)
    unit.translate(RID, None, False, 0x8000, 8, False)
    assert rq(m, 0x28) == 3 and rq(m, 0x38) == 0x7000  # PFO: the record kept
    wq(m, 0x28, 3)
    assert rq(m, 0x28) == 0
    assert unit.faults == [(RID, None, 0x7000, 1), (RID, None, 0x8000, 1)]


def test_permissions_fault_with_their_reasons() -> None:
    m, unit = make()
    t = Tables(m)
    t.map(0x1000, 0x50_0000, perm=1)  # read-only
    t.map(0x2000, 0x51_0000, perm=2)  # write-only
    write = unit.translate(RID, None, False, 0x1000, 8, True).fault
    read = unit.translate(RID, None, False, 0x2000, 8, False).fault
    assert write is not None and write.reason == mi.FAULT_WRITE
    assert read is not None and read.reason == mi.FAULT_READ


@pytest.mark.parametrize("pasid", [256, 1 << 20, 1 << 40, -1])
def test_a_pasid_beyond_the_width_faults_instead_of_raising(pasid: int) -> None:
    m, unit = make(pasid_width=8)
    Tables(m)
    res = unit.translate(RID, pasid, False, 0x1000, 8, False)
    assert res.fault is not None and res.fault.reason == mi.FAULT_PASID
    assert mi.MockFrec.decode(rq(m, 0x30))["PV"] == 1


def test_pasid_requests_use_the_pasid_table_entry() -> None:
    m, unit = make()
    t = Tables(m)
    t.map(0x1000, 0x50_0000)
    mem = m.memory
    ctx = CTX + 16 * (RID & 0xFF)
    res = unit.translate(RID, 5, False, 0x1000, 8, False)  # no PASID directory yet
    assert res.fault is not None and res.fault.reason == mi.FAULT_PASID
    mem.write_u64(ctx + 8, PDIR | 1)
    res = unit.translate(RID, 5, False, 0x1000, 8, False)  # no PASID table
    assert res.fault is not None and res.fault.reason == mi.FAULT_BLOCKED
    mem.write_u64(PDIR, PTAB | 1)
    mem.write_u64(PTAB + 8 * 5, tte(mi.TT_PAGING, PT_ROOT, 7))
    assert unit.translate(RID, 5, False, 0x1000, 8, False).runs == ((0x50_0000, 8),)
    assert unit.entry(RID, 5) == tte(mi.TT_PAGING, PT_ROOT, 7) and unit.entry(RID, 6) == 0
    mem.write_u64(PTAB + 8 * 6, tte(mi.TT_PASS))
    assert unit.translate(RID, 6, False, 0x1234, 8, False).runs == ((0x1234, 8),)


def first_stage(m: Machine) -> int:
    """Point RID's context entry at an x86 4-level table at FL_ROOT whose first
    entries lead to one leaf table; returns the leaf table's address."""
    mem = m.memory
    mem.write_u64(CTX + 16 * (RID & 0xFF), tte(mi.TT_X86, FL_ROOT))
    table = FL_ROOT
    for i in range(3):
        nxt = FL_ROOT + 0x1000 * (i + 1)
        mem.write_u64(table, nxt | 7)
        table = nxt
    return table


def test_first_stage_entries_walk_x86_tables_uncached() -> None:
    m, unit = make()
    Tables(m)
    mem = m.memory
    table = first_stage(m)
    mem.write_u64(table + 8, 0x70_0000 | 5)  # va 0x1000, read-only
    assert unit.translate(RID, None, False, 0x1010, 8, False).runs == ((0x70_0010, 8),)
    fault = unit.translate(RID, None, False, 0x1010, 8, True).fault
    assert fault is not None and fault.reason == mi.FAULT_WRITE
    miss = unit.translate(RID, None, False, 0x2000, 8, False).fault
    assert miss is not None and miss.reason == mi.FAULT_NOT_PRESENT
    assert len(unit.iotlb) == 0


@pytest.mark.parametrize(
    ("root", "entry", "reason"),
    [
        (ROOT, 0, mi.FAULT_BLOCKED),  # context entry not present
        (ROOT, 1 | 3 << 1, mi.FAULT_BLOCKED),  # reserved TT
        (0xF000_0000, None, mi.FAULT_TABLE),  # root table outside RAM
        (ROOT, tte(mi.TT_PAGING, 0xF000_0000), mi.FAULT_TABLE),  # page table outside RAM
    ],
)
def test_bad_tables_fault_with_their_reasons(root: int, entry: int | None, reason: int) -> None:
    m, unit = make()
    Tables(m)
    if entry is not None:
        m.memory.write_u64(CTX + 16 * (RID & 0xFF), entry)
    wq(m, 0x08, root)
    res = unit.translate(RID, None, False, 0x1000, 8, False)
    assert res.fault is not None and res.fault.reason == reason


def test_a_requester_without_a_root_entry_is_blocked() -> None:
    m, unit = make()
    Tables(m)
    res = unit.translate(0x0300, None, False, 0x1000, 8, False)  # bus 3: no root entry
    assert res.fault is not None and res.fault.reason == mi.FAULT_BLOCKED
    assert unit.entry(0x0300, None) == 0


def test_an_iova_beyond_48_bits_is_not_present() -> None:
    m, unit = make()
    Tables(m)
    res = unit.translate(RID, None, False, 1 << 48, 8, False)
    assert res.fault is not None and res.fault.reason == mi.FAULT_NOT_PRESENT


def test_a_stale_entry_whose_page_was_unmapped_is_still_used_and_counted() -> None:
    m, unit = make()
    t = Tables(m)
    t.map(0x1000, 0x50_0000)
    unit.translate(RID, None, False, 0x1000, 8, False)
    t.unmap(0x1000)
    assert unit.translate(RID, None, False, 0x1000, 8, False).runs == ((0x50_0000, 8),)
    assert unit.stats.stale_uses == 1


@pytest.mark.parametrize("enabled", [False, True])
def test_dma_beyond_ram_is_a_bus_fault_not_an_exception(enabled: bool) -> None:
    m, unit = make()
    t = Tables(m)
    t.map(0x1000, 0xFF_F000)  # the last page of the 16 MiB of RAM
    t.map(0x2000, 0x100_0000)  # just past it
    if not enabled:
        wq(m, 0x10, 0)
        res = unit.translate(RID, None, False, 0xFF_FF00, 0x200, True)
        assert res.runs == ((0xFF_FF00, 0x100),)
        assert res.fault is not None and res.fault.addr == 0x100_0000
    else:
        res = unit.translate(RID, None, False, 0x1F00, 0x200, True)
        assert res.runs == ((0xFF_FF00, 0x100),)
        assert res.fault is not None and res.fault.addr == 0x2000
    assert res.fault.reason == DMA_FAULT_BUS


def test_pass_through_beyond_ram_is_a_bus_fault() -> None:
    m, unit = make()
    Tables(m)
    m.memory.write_u64(CTX + 16 * (RID & 0xFF), tte(mi.TT_PASS))
    res = unit.translate(RID, None, False, 1 << 40, 8, False)
    assert res.runs == () and res.fault is not None and res.fault.reason == DMA_FAULT_BUS


def test_a_did_reused_with_other_tables_uses_its_cached_entry_and_counts_it() -> None:
    """The IOTLB is tagged by DID only: a context entry pointing the same DID at other
    tables without an invalidation still gets the cached translation; the use is
    stale when the new tables say otherwise, and not when they agree."""
    m, unit = make()
    t = Tables(m, did=3)
    t.map(0x1000, 0x50_0000)
    t.map(0x2000, 0x51_0000)
    unit.translate(RID, None, False, 0x1000, 0x2000, False)
    other = 0x60_0000  # a second table: same answer for 0x2000, none for 0x1000
    m.memory.write_u64(CTX + 16 * (RID & 0xFF), tte(mi.TT_PAGING, other, 3))
    for level in (4, 3, 2):
        m.memory.write_u64(other + 0x1000 * (4 - level), (other + 0x1000 * (5 - level)) | 3)
    m.memory.write_u64(other + 0x3000 + 8 * 2, 0x51_0000 | 3)
    res = unit.translate(RID, None, False, 0x1000, 0x2000, False)
    assert res.runs == ((0x50_0000, 0x1000), (0x51_0000, 0x1000))
    assert unit.stats.stale_uses == 1  # 0x1000 only
    assert unit.translate(RID, None, False, 0x2000, 8, False).runs == ((0x51_0000, 8),)
    assert unit.stats.stale_uses == 1
    wq(m, 0x18, mi.INV_DOMAIN | 3 << 16)
    res = unit.translate(RID, None, False, 0x1000, 8, False)
    assert res.fault is not None and res.fault.reason == mi.FAULT_NOT_PRESENT


def test_a_2mib_request_is_one_run_and_a_changed_page_inside_still_counts() -> None:
    m, unit = make()
    t = Tables(m)
    base, phys = 0x20_0000, 0x80_0000
    for i in range(512):
        t.map(base + i * 0x1000, phys + i * 0x1000)
    for _ in range(2):  # fill, then a whole-block hit
        assert unit.translate(RID, None, True, base, 0x20_0000, True).runs == ((phys, 0x20_0000),)
    assert (unit.stats.iotlb_misses, unit.stats.iotlb_hits) == (512, 512)
    t.map(base + 7 * 0x1000, 0x70_0000)  # no invalidation
    res = unit.translate(RID, None, True, base, 0x20_0000, True)
    assert res.runs == ((phys, 0x20_0000),) and unit.stats.stale_uses == 1
    wq(m, 0x20, base + 7 * 0x1000)
    wq(m, 0x18, mi.INV_RANGE | 3 << 16)
    res = unit.translate(RID, None, True, base + 6 * 0x1000, 0x3000, True)
    assert res.runs == ((phys + 6 * 0x1000, 0x1000), (0x70_0000, 0x1000), (phys + 0x8000, 0x1000))
    assert unit.stats.stale_uses == 1


def test_a_stale_use_is_traced_with_the_cached_and_current_pages() -> None:
    m, unit = make()
    events: list[tuple[str, dict[str, object]]] = []
    m.set_hw_trace_sink(lambda name, now, fields: events.append((name, dict(fields))))
    t = Tables(m, did=3)
    t.map(0x1000, 0x50_0000)
    unit.translate(RID, None, False, 0x1234, 8, False)
    t.unmap(0x1000)
    unit.translate(RID, None, False, 0x1234, 8, False)
    stale = [f for name, f in events if name == "hw_mock:stale_translation"]
    assert stale == [
        {"unit": "mock0", "did": 3, "addr": 0x1000, "cached": 0x50_0000, "current": -1}
    ]


def test_a_stale_use_is_a_finding_with_the_write_and_the_missing_inv() -> None:
    m, unit = make()
    t = Tables(m, did=3)
    t.map(0x1000, 0x50_0000)
    pte = t.slot(0x1000, 1)
    unit.translate(RID, None, False, 0x1234, 8, False)
    t.unmap(0x1000)
    unit.translate(RID, None, False, 0x1234, 8, False)
    [found] = unit.findings
    assert (found.domain, found.iova, found.cache) == ("DID 3", 0x1000, "IOTLB")
    assert found.cached is not None and found.cached.phys == 0x50_0000
    assert found.current is not None and found.current.fault == "not present"
    [write] = found.writes
    assert (write.addr, write.new) == (pte, 0) and write.old & ~0xFFF == 0x50_0000
    assert [i.text() for i in found.missing] == [
        "INV (page range): TYPE=3 DID=3 INV_ADDR=0x1000 ORDER=0"
    ]


def test_contiguous_first_stage_pages_merge_into_one_run() -> None:
    m, unit = make()
    Tables(m)
    mem = m.memory
    table = first_stage(m)
    mem.write_u64(table + 8, 0x70_0000 | 7)
    mem.write_u64(table + 16, 0x70_1000 | 7)
    assert unit.translate(RID, None, False, 0x1800, 0x1000, True).runs == ((0x70_0800, 0x1000),)
    assert len(unit.iotlb) == 0
