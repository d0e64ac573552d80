"""Device-TLB: ATS Translation Requests, translated requests, device-TLB invalidation.

A DSA function sits behind the unit with its ATS capability enabled, so its DMA goes
through its ATC (hw.ats). Tables and invalidations go through RAM and registers only;
the device side is driven by its DMA interface (what its engines use).
"""

from __future__ import annotations

from typing import Any

import pytest

from hw.ats import ATS_R, ATS_W, AddressTranslationCache
from hw.bus import PciAddr
from hw.dsa.device import DsaDevice
from hw.machine import Machine, build_machine
from hw.pci import PCI_EXT_CAP_ID_ATS
from hw.vtd import VtdUnit
from hw.vtd import entries as ent
from hw.vtd.faults import FR
from hw.vtd.qi import ATS_INV_NS, devtlb_range
from hw.vtd.unit import StaleTranslationError
from tests.hw.vtd.helpers import (
    RAM,
    RID,
    Pages,
    PageTable,
    Queue,
    Tables,
    cc_inval,
    enable_te,
    iotlb_dsi,
    pc_inval,
    piotlb,
    reg_read,
    set_root,
)

BDF = PciAddr.parse("00:02.0")
assert BDF.rid == RID
PASID = 5
DID = 3


class Rig:
    """A unit and a DSA (RID 00:02.0) with PCI bus mastering and ATS enabled."""

    def __init__(self, config: dict[str, Any] | None = None, scalable: bool = True) -> None:
        cfg = dict(config or {})
        if not scalable:
            cfg |= {"smts": False, "pasid": False}
        self.m: Machine = build_machine(
            {
                "ram": RAM,
                "devices": [{"kind": "dsa", "bdf": "00:02.0"}],
                "iommus": [{"kind": "vtd", "name": "dmar0", "config": cfg}],
            }
        )
        unit = self.m.iommus["dmar0"]
        fn = self.m.functions[BDF]
        assert isinstance(unit, VtdUnit) and isinstance(fn, DsaDevice)
        self.unit, self.fn = unit, fn
        self.events: list[tuple[str, dict[str, object]]] = []
        self.pages = Pages(self.m)
        self.t = Tables(self.m, self.pages, scalable)
        self.m.pci_config_write(BDF, 0x04, 2, 0x6)

    def trace(self) -> None:
        self.m.set_hw_trace_sink(lambda name, ts, fields: self.events.append((name, fields)))

    def named(self, name: str) -> list[dict[str, object]]:
        return [f for n, f in self.events if n == name]

    def ats(self, on: bool = True) -> None:
        off = self.fn.find_ext_cap(PCI_EXT_CAP_ID_ATS)
        self.m.pci_config_write(BDF, off + 6, 2, 0x8000 if on else 0)

    @property
    def atc(self) -> AddressTranslationCache:
        assert self.fn.ats_port is not None
        return self.fn.ats_port.atc

    def start(self) -> None:
        set_root(self.m, self.unit, self.t.root, scalable=self.t.scalable)
        enable_te(self.m, self.unit)
        self.ats()

    def queue(self) -> Queue:
        return Queue(self.m, self.unit, self.pages, dw=1 if self.t.scalable else 0)

    def read(self, addr: int, size: int, pasid: int | None = None) -> Any:
        return self.fn.dma_translate(pasid, False, addr, size, False)

    def write(self, addr: int, size: int, pasid: int | None = None) -> Any:
        return self.fn.dma_translate(pasid, False, addr, size, True)


def sm_rig(
    dte: bool = True, fl: bool = False, config: dict[str, Any] | None = None
) -> tuple[Rig, PageTable]:
    """Scalable mode: RID_PASID (0) second-stage and PASID 5 first-stage, one table."""
    r = Rig(config)
    ctx = r.t.sm_ctx(RID)
    if dte:
        r.m.memory.write_u64(ctx, r.m.memory.read_u64(ctx) | ent.SmCtxLo.DTE.mask)
    pt = PageTable(r.m, r.pages, 4, fl=fl)
    pgtt = ent.PGTT_FL if fl else ent.PGTT_SL
    r.t.pasid_entry(RID, 0, pgtt, DID, pt)
    r.t.pasid_entry(RID, PASID, pgtt, DID, pt)
    r.start()
    return r, pt


def legacy_rig(tt: int) -> tuple[Rig, PageTable]:
    r = Rig(scalable=False)
    pt = PageTable(r.m, r.pages, 4)
    r.t.legacy_ctx(RID, pt.root, did=DID, tt=tt)
    r.start()
    return r, pt


def dev_tlb(addr: int, s: bool = False, sid: int = RID) -> tuple[int, int]:
    return ent.QiDevTlbQw0.encode(TYPE=ent.QI_DEVTLB, SID=sid), addr | int(s)


def pdev_tlb(pasid: int, addr: int, s: bool = False, g: bool = False) -> tuple[int, int]:
    qw0 = ent.QiPdevTlbQw0.encode(TYPE=ent.QI_PDEVTLB, SID=RID, PASID=pasid)
    return qw0, addr | (int(s) << 11) | int(g)


def linux_dev_tlb(addr: int, mask: int) -> tuple[int, int]:
    """Linux ``qi_desc_dev_iotlb``: S=1 and the bits below 12 + mask - 1 set."""
    if mask:
        return dev_tlb(((addr | ((1 << (12 + mask - 1)) - 1)) & ~0xFFF), s=True)
    return dev_tlb(addr)


# -- size encoding (facts A9) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("qw1_addr", "s", "expect"),
    [
        (0x5000, False, (0x5000, 0x1000)),
        (0x4000, True, (0x4000, 0x2000)),
        (0x5000, True, (0x4000, 0x4000)),
        (0x7000, True, (0x0, 0x10000)),
        (0x1_2345_6000 | 0x7FF000, True, (0x1_2300_0000, 1 << 24)),
        (((1 << 63) - 1) & ~0xFFF, True, (0, 1 << 64)),
        (((1 << 64) - 1) & ~0xFFF, True, (0, 1 << 65)),
    ],
)
def test_devtlb_size_encoding(qw1_addr: int, s: bool, expect: tuple[int, int]) -> None:
    assert devtlb_range(qw1_addr, s) == expect


@pytest.mark.parametrize("mask", [0, 1, 2, 5, 9])
def test_linux_encoding_decodes_to_its_aligned_range(mask: int) -> None:
    addr = 0x40_0000
    _qw0, qw1 = linux_dev_tlb(addr, mask)
    assert devtlb_range(qw1 & ~0xFFF, bool(qw1 & 1)) == (addr, 4096 << mask)


# -- translation requests and the ATC --------------------------------------------------------
def test_ats_enable_binds_the_function_and_disable_unbinds() -> None:
    r, pt = sm_rig()
    assert r.unit.atcs == {RID: r.atc}
    pt.map(0x1000, 0x200000)
    assert r.read(0x1000, 64).runs == ((0x200000, 64),)
    assert len(r.unit.caches.devtlb) == 1
    r.ats(False)
    assert r.fn.ats_port is None and r.unit.atcs == {} and not r.unit.caches.devtlb


def test_translation_request_then_atc_hits() -> None:
    r, pt = sm_rig()
    r.trace()
    for i in range(4):
        pt.map(0x10000 + 0x1000 * i, 0x300000 + 0x1000 * i)
    res = r.read(0x10800, 0x2800)
    assert res.runs == ((0x300800, 0x2800),) and res.fault is None
    assert r.unit.stats.ats_requests == 1 and r.atc.stats.translation_requests == 1
    assert len(r.atc) == 3 and all(e.perms == ATS_R for e in r.atc.entries())
    before = r.unit.stats.iotlb_hits + r.unit.stats.iotlb_misses
    assert r.read(0x10000, 0x4000).runs == ((0x300000, 0x4000),)
    assert r.unit.stats.ats_requests == 2  # page 0x13000 was not cached yet
    assert r.read(0x10000, 0x4000).runs == ((0x300000, 0x4000),)
    assert r.unit.stats.ats_requests == 2
    assert r.unit.stats.iotlb_hits + r.unit.stats.iotlb_misses == before + 1
    assert r.atc.stats.hits >= 4 + 3
    reqs = r.named("hw_vtd:ats_translate")
    assert [(f["addr"], f["size"], f["pasid"]) for f in reqs] == [
        (0x10800, 0x2800, None),
        (0x13000, 0x1000, None),
    ]


def test_no_trace_events_without_a_sink() -> None:
    r, pt = sm_rig()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    assert r.unit.stats.ats_requests == 1 and not r.events


def test_write_needs_a_write_translation_and_sets_dirty_on_first_stage() -> None:
    r, pt = sm_rig(fl=True)
    pte = pt.map(0x5000, 0x200000)
    r.read(0x5000, 8, PASID)
    assert r.atc.lookup(PASID, 0x5000).perms == ATS_R  # type: ignore[union-attr]
    assert not r.m.memory.read_u64(pte) & ent.FlPte.D.mask
    res = r.write(0x5000, 8, PASID)
    assert res.runs == ((0x200000, 8),) and r.unit.stats.ats_requests == 2
    assert r.atc.lookup(PASID, 0x5000).perms == ATS_R | ATS_W  # type: ignore[union-attr]
    assert r.m.memory.read_u64(pte) & ent.FlPte.D.mask
    assert r.unit.stats.stale_uses == 0


def test_privilege_is_part_of_the_translation() -> None:
    r, pt = sm_rig(fl=True)
    pt.map(0x5000, 0x200000)
    r.read(0x5000, 8, PASID)
    res = r.fn.dma_translate(PASID, True, 0x5000, 8, False)
    assert res.fault is not None and res.fault.reason == FR.SM_PASID_SRE
    assert r.unit.stats.faults_recorded == 1


def test_large_pages_are_one_atc_entry() -> None:
    r, pt = sm_rig()
    pt.map(0x4000_0000, 0x40_0000, level=2)
    assert r.read(0x4000_1000, 0x3000).runs == ((0x40_1000, 0x3000),)
    (e,) = r.atc.entries()
    assert (e.shift, e.phys, e.addr) == (21, 0x40_0000, 0x4000_0000)
    assert r.read(0x401F_F000, 0x1000).runs == ((0x5F_F000, 0x1000),)
    assert r.unit.stats.ats_requests == 1


def test_not_present_completes_without_a_fault_record() -> None:
    r, pt = sm_rig()
    pt.map(0x1000, 0x200000)
    res = r.read(0x1000, 0x2000)
    assert res.runs == ((0x200000, 0x1000),)
    assert res.fault is not None and res.fault.addr == 0x2000
    assert res.fault.reason == FR.SM_READ
    assert r.unit.stats.ats_no_access == 1 and r.unit.stats.faults == 0
    assert reg_read(r.m, 0x34) == 0  # FSTS: nothing recorded


def test_read_only_page_refuses_a_write() -> None:
    r, pt = sm_rig(fl=True)
    pt.map(0x1000, 0x200000, w=False)
    res = r.write(0x1000, 8, PASID)
    assert not res.runs and res.fault is not None and res.fault.reason == FR.SM_WRITE
    assert r.unit.stats.ats_no_access == 1 and r.unit.stats.faults == 0


def test_dte_clear_blocks_translation_requests() -> None:
    r, pt = sm_rig(dte=False)
    pt.map(0x1000, 0x200000)
    res = r.read(0x1000, 8)
    assert res.fault is not None and res.fault.reason == FR.SM_CTX_DTE
    assert r.unit.stats.faults_recorded == 1 and not r.atc.entries()


def test_legacy_tt01_allows_ats_and_tt00_blocks_it() -> None:
    r, pt = legacy_rig(ent.TT_SL_ATS)
    pt.map(0x1000, 0x200000)
    assert r.read(0x1000, 8).runs == ((0x200000, 8),)
    r2, pt2 = legacy_rig(ent.TT_SL)
    pt2.map(0x1000, 0x200000)
    res = r2.read(0x1000, 8)
    assert res.fault is not None and res.fault.reason == FR.CTX_TT_BLOCKED


def test_remapping_off_translates_to_the_identity() -> None:
    r = Rig()
    r.ats()
    res = r.write(0x3000, 0x1800)
    assert res.runs == ((0x3000, 0x1800),) and r.unit.stats.ats_requests == 1
    assert r.read(0x3000, 8).runs == ((0x3000, 8),)
    assert r.unit.stats.ats_requests == 1


def test_pass_through_pasid_entry() -> None:
    r = Rig({"haw": 39, "mgaw": 39, "sagaw": 0b0010})
    ctx = r.t.sm_ctx(RID)
    r.m.memory.write_u64(ctx, r.m.memory.read_u64(ctx) | ent.SmCtxLo.DTE.mask)
    r.t.pasid_entry(RID, 0, ent.PGTT_PT, DID, aw=1)
    r.start()
    assert r.read(0x7000, 0x2000).runs == ((0x7000, 0x2000),)
    res = r.unit.ats_translate(RID, None, False, 0xFEE0_0000 - 0x1000, 0x2000, False)
    assert len(res.entries) == 1 and res.fault is not None
    assert res.fault.reason == FR.SM_INTERRUPT_ADDR
    res = r.unit.ats_translate(RID, None, False, (1 << 39) - 0x1000, 0x2000, False)
    assert len(res.entries) == 1 and res.fault is not None
    assert res.fault.reason == FR.SM_ADDR_BEYOND
    assert r.unit.stats.faults_recorded == 2


def test_mapping_into_the_interrupt_range_is_a_recorded_fault() -> None:
    r, pt = sm_rig()
    pt.map(0x1000, 0xFEE0_0000)
    res = r.read(0x1000, 8)
    assert res.fault is not None and res.fault.reason == FR.SM_INTERRUPT_ADDR
    assert r.unit.stats.faults_recorded == 1


def test_translation_beyond_ram_is_cut_at_the_end_of_ram() -> None:
    r, pt = sm_rig()
    pt.map(0x1000, RAM - 0x1000)
    pt.map(0x2000, RAM)
    res = r.read(0x1000, 0x2000)
    assert res.runs == ((RAM - 0x1000, 0x1000),)
    assert res.fault is not None and res.fault.addr == 0x2000


# -- translated requests -------------------------------------------------------------------
def test_translated_requests_blocked_once_dte_is_cleared_and_invalidated() -> None:
    r, pt = sm_rig()
    q = r.queue()
    ctx = r.t.ctx_addr(RID)
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    r.m.memory.write_u64(ctx, r.m.memory.read_u64(ctx) & ~ent.SmCtxLo.DTE.mask)
    q.submit(cc_inval(1))
    res = r.read(0x1000, 8)
    assert not res.runs and res.fault is not None and res.fault.reason == FR.SM_CTX_DTE
    assert r.unit.stats.faults_recorded == 1 and r.unit.stats.stale_uses == 0


def test_translated_request_with_a_stale_context_is_reported() -> None:
    r, pt = sm_rig()
    r.trace()
    ctx = r.t.ctx_addr(RID)
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    r.m.memory.write_u64(ctx, r.m.memory.read_u64(ctx) & ~ent.SmCtxLo.DTE.mask)
    assert r.read(0x1000, 8).runs == ((0x200000, 8),)  # cached context: let through
    (ev,) = r.named("hw_vtd:stale_translation")
    assert ev["cache"] == "devtlb" and ev["cached"] == (0x200000, 12, ATS_R)
    assert ev["current"] == (-1, int(FR.SM_CTX_DTE))
    r.m.memory.write_u64(ctx, 0)
    r.read(0x1000, 8)
    assert r.named("hw_vtd:stale_translation")[-1]["current"] == (-1, int(FR.SM_CTX_NOT_PRESENT))


def test_translated_request_when_the_root_became_invalid_faults() -> None:
    r, pt = sm_rig()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    r.unit.ttm = 0b11
    res = r.read(0x1000, 8)
    assert res.fault is not None and res.fault.reason == FR.SM_RTADDR_INVALID


def test_translated_requests_pass_once_remapping_is_off() -> None:
    r, pt = sm_rig()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    r.unit.te = False
    assert r.read(0x1000, 8).runs == ((0x200000, 8),)


# -- stale detection -----------------------------------------------------------------------
def unmap_without_devtlb_flush(r: Rig, pt: PageTable, iova: int, q: Queue) -> None:
    pt.unmap(iova)
    q.submit(iotlb_dsi(DID), piotlb(DID, PASID))


def test_skipped_devtlb_flush_is_a_stale_use() -> None:
    r, pt = sm_rig()
    r.trace()
    q = r.queue()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    unmap_without_devtlb_flush(r, pt, 0x1000, q)
    assert r.read(0x1000, 8).runs == ((0x200000, 8),)  # the ATC still answers
    assert r.unit.stats.stale_uses == 1
    (ev,) = r.named("hw_vtd:stale_translation")
    assert ev["cache"] == "devtlb" and ev["addr"] == 0x1000
    assert ev["cached"] == (0x200000, 12, ATS_R) and ev["current"] == (-1, int(FR.SM_READ))
    r.read(0x1000, 8)
    assert r.unit.stats.stale_uses == 2  # every use is reported, like the IOTLB's


def test_strict_stale_raises_on_a_stale_devtlb_use() -> None:
    r, pt = sm_rig(config={"strict_stale": True})
    q = r.queue()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    unmap_without_devtlb_flush(r, pt, 0x1000, q)
    with pytest.raises(StaleTranslationError, match="devtlb"):
        r.read(0x1000, 8)


def test_devtlb_flush_after_unmap_makes_the_dma_fault() -> None:
    r, pt = sm_rig()
    q = r.queue()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    pt.unmap(0x1000)
    q.submit(iotlb_dsi(DID), dev_tlb(0x1000))
    assert q.done() and not r.atc.entries() and not r.unit.caches.devtlb
    res = r.read(0x1000, 8)
    assert not res.runs and res.fault is not None
    assert r.unit.stats.stale_uses == 0 and r.unit.stats.ats_no_access == 1


def suspect(x: object) -> bool:
    return bool(getattr(x, "suspect"))  # noqa: B009 - read again after the flag was tested


def test_unrelated_change_to_a_watched_entry_is_rechecked_not_reported() -> None:
    r, pt = sm_rig(fl=True)
    pte = pt.map(0x1000, 0x200000)
    r.read(0x1000, 8, PASID)
    r.m.memory.write_u64(pte, r.m.memory.read_u64(pte) | ent.FlPte.G.mask)  # software write
    (shadow,) = r.unit.caches.devtlb
    assert shadow.suspect
    assert r.read(0x1000, 8, PASID).runs == ((0x200000, 8),)
    assert not suspect(shadow) and r.unit.stats.stale_uses == 0


def test_root_pointer_reload_rechecks_device_tlb_shadows() -> None:
    r, pt = sm_rig()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    set_root(r.m, r.unit, r.t.root, scalable=True)
    (shadow,) = r.unit.caches.devtlb
    assert shadow.suspect
    r.read(0x1000, 8)
    assert not suspect(shadow) and r.unit.stats.stale_uses == 0


def test_block_summaries_and_stale_use_inside_a_block() -> None:
    r, pt = sm_rig()
    q = r.queue()
    for i in range(512):
        pt.map(0x20_0000 + 0x1000 * i, 0x40_0000 + 0x1000 * i)
    assert r.read(0x20_0000, 0x20_0000).runs == ((0x40_0000, 0x20_0000),)
    t = r.atc.tables[None]
    assert 1 in t[3]
    hits = r.atc.stats.hits
    assert r.read(0x20_1000, 0x2000).runs == ((0x40_1000, 0x2000),)
    assert r.atc.stats.hits == hits + 2 and t[3][1].version == r.unit.caches.deps.version
    unmap_without_devtlb_flush(r, pt, 0x20_5000, q)
    r.read(0x20_0000, 0x1000)  # a page of the block whose entry is still right
    assert r.unit.stats.stale_uses == 0
    r.read(0x20_0000, 0x20_0000)  # the whole block: the outdated summary is not used,
    assert r.unit.stats.stale_uses == 1  # and the one stale entry in it is found
    pt.map(0x20_5000, 0x40_5000)  # back as it was: nothing stale any more
    r.read(0x20_0000, 0x20_0000)
    assert r.unit.stats.stale_uses == 1
    assert r.read(0x20_0000, 0x20_0000).runs == ((0x40_0000, 0x20_0000),)
    assert t[3][1].version == r.unit.caches.deps.version  # summarised again


def test_pasid_entry_change_without_invalidation_is_stale_for_the_atc() -> None:
    r, pt = sm_rig(fl=True)
    q = r.queue()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8, PASID)
    other = PageTable(r.m, r.pages, 4, fl=True)
    other.map(0x1000, 0x300000)
    r.t.pasid_entry(RID, PASID, ent.PGTT_FL, DID, other)
    q.submit(pc_inval(1, DID, PASID), piotlb(DID, PASID))
    r.read(0x1000, 8, PASID)
    assert r.unit.stats.stale_uses == 1


# -- device-TLB invalidation granularities ----------------------------------------------------
def filled() -> tuple[Rig, Queue]:
    """ATC entries: no PASID at 0x10000-0x1F000, PASID 5 at the same pages, and PASID 7."""
    r, pt = sm_rig(fl=True)
    r.t.pasid_entry(RID, 7, ent.PGTT_FL, DID, pt)
    for i in range(16):
        pt.map(0x10000 + 0x1000 * i, 0x200000 + 0x1000 * i)
    r.read(0x10000, 0x10000)
    r.read(0x10000, 0x10000, PASID)
    r.read(0x10000, 0x10000, 7)
    assert len(r.atc) == 48
    return r, r.queue()


def left(r: Rig) -> dict[int | None, list[int]]:
    return {k: sorted(e.addr for d in t[:3] for e in d.values()) for k, t in r.atc.tables.items()}


ALL = [0x10000 + 0x1000 * i for i in range(16)]


def test_type3_single_page_drops_that_page_for_every_pasid() -> None:
    r, q = filled()
    q.submit(dev_tlb(0x13000))
    assert q.done()
    rest = [a for a in ALL if a != 0x13000]
    assert left(r) == {None: rest, PASID: rest, 7: rest}
    assert len(r.unit.caches.devtlb) == 45 and r.unit.stats.devtlb_invalidations == 1


@pytest.mark.parametrize(("addr", "mask"), [(0x14000, 2), (0x10000, 3), (0x18000, 1)])
def test_type3_ranges_in_linux_encoding(addr: int, mask: int) -> None:
    r, q = filled()
    q.submit(linux_dev_tlb(addr, mask))
    gone = set(range(addr, addr + (0x1000 << mask), 0x1000))
    rest = [a for a in ALL if a not in gone]
    assert left(r) == {None: rest, PASID: rest, 7: rest}


def test_type3_global_drops_everything() -> None:
    r, q = filled()
    q.submit(linux_dev_tlb(0, 52))
    assert left(r) == {} and not r.unit.caches.devtlb


def test_type3_for_another_sid_reaches_no_device() -> None:
    r, q = filled()
    q.submit(dev_tlb(0x13000, sid=RID + 8))
    assert q.done() and len(r.atc) == 48 and r.unit.stats.devtlb_invalidations == 0


def test_type8_drops_only_its_pasid() -> None:
    r, q = filled()
    q.submit(pdev_tlb(PASID, 0x12000))
    assert left(r) == {None: ALL, PASID: [a for a in ALL if a != 0x12000], 7: ALL}


def test_type8_range_and_whole_pasid() -> None:
    r, q = filled()
    q.submit(pdev_tlb(PASID, 0x14000 | 0x1000, s=True))  # 16 KiB at 0x14000
    assert left(r)[PASID] == [a for a in ALL if not 0x14000 <= a < 0x18000]
    q.submit(pdev_tlb(7, ((1 << 64) - 1) & ~0xFFF, s=True))
    assert left(r) == {None: ALL, PASID: [a for a in ALL if not 0x14000 <= a < 0x18000]}


def test_type8_global_bit_covers_every_pasid_but_not_requests_without_pasid() -> None:
    r, q = filled()
    q.submit(pdev_tlb(PASID, 0x10000 | 0x7000, s=True, g=True))  # 64 KiB
    assert left(r) == {None: ALL}


def test_type8_for_a_pasid_the_device_never_used() -> None:
    r, q = filled()
    q.submit(pdev_tlb(9, 0x10000))
    assert len(r.atc) == 48 and r.unit.stats.devtlb_invalidations == 1


def test_type8_with_reserved_bits_is_an_iqe() -> None:
    r, q = filled()
    qw0, qw1 = pdev_tlb(PASID, 0x10000)
    q.submit((qw0, qw1 | 0x10))
    assert reg_read(r.m, 0x34) & (1 << 4)  # FSTS.IQE
    assert len(r.atc) == 48


def test_wait_completes_only_after_the_device_answered() -> None:
    r, q = filled()
    r.m.memory.write_u32(q.status, 0)
    q.put(*dev_tlb(0x10000))
    wait_at = q.put(*q.wait_desc())
    r.m.mmio_write(0xFED9_0000 + 0x88, 8, q.tail)  # IQT
    r.m.clock.advance(300)  # the queue ran: the request went out, the wait holds
    assert len(r.atc) == 45 and r.unit.qi.inflight == 1 and not q.done()
    assert reg_read(r.m, 0x80, 8) == wait_at  # IQH on the wait descriptor
    r.m.clock.advance(ATS_INV_NS)
    assert r.unit.qi.inflight == 0
    r.m.clock.advance(1000)
    assert q.done() and reg_read(r.m, 0x80, 8) == q.tail


def test_invalidation_without_an_ats_device_completes_at_once() -> None:
    r, _pt = sm_rig()
    r.ats(False)
    q = r.queue()
    q.submit(dev_tlb(0x1000), pdev_tlb(PASID, 0x1000))
    assert q.done() and r.unit.qi.inflight == 0


# -- corner paths of the translation request ---------------------------------------------------
def test_empty_translation_request() -> None:
    r, _pt = sm_rig()
    assert r.unit.ats_translate(RID, None, False, 0x1000, 0, False).entries == ()


def test_reserved_bits_in_a_pte_are_a_recorded_fault() -> None:
    r, pt = sm_rig(fl=True)
    pte = pt.map(0x1000, 0x200000)
    r.m.memory.write_u64(pte, r.m.memory.read_u64(pte) | (1 << 50))
    res = r.read(0x1000, 8, PASID)
    assert res.fault is not None and res.fault.reason == FR.FS_RSVD
    assert r.unit.stats.faults_recorded == 1 and r.unit.stats.ats_no_access == 0


def test_stale_pasid_cache_answers_translation_requests_and_is_reported() -> None:
    r, pt = sm_rig(fl=True)
    r.trace()
    pt.map(0x1000, 0x200000)
    pt.map(0x2000, 0x201000)
    pt.map(0x3000, 0x202000, w=False)
    r.read(0x1000, 8, PASID)
    other = PageTable(r.m, r.pages, 4, fl=True)
    r.t.pasid_entry(RID, PASID, ent.PGTT_FL, DID, other)  # no PASID-cache invalidation
    assert r.read(0x2000, 8, PASID).runs == ((0x201000, 8),)  # old tables, via the cache
    res = r.write(0x3000, 8, PASID)  # read-only in the old tables
    assert res.fault is not None and res.fault.reason == FR.SM_WRITE
    res = r.read(0x4000, 8, PASID)  # not mapped in the old tables either
    assert res.fault is not None
    caches = {f["cache"] for f in r.named("hw_vtd:stale_translation")}
    assert r.unit.stats.stale_uses >= 2 and "iotlb" in caches


def test_stale_context_and_a_faulting_pasid_lookup() -> None:
    r, pt = sm_rig()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    ctx = r.t.ctx_addr(RID)
    r.m.memory.write_u64(ctx, r.m.memory.read_u64(ctx) | ent.SmCtxLo.FPD.mask)
    res = r.read(0x1000, 8, 9)  # PASID 9 has no entry: the request faults
    assert res.fault is not None and res.fault.reason == FR.SM_PASID_NOT_PRESENT
    assert r.unit.stats.stale_uses == 0  # checked against the tables: same fault there


def test_pasid_cache_refill_with_an_equal_stage_reuses_the_iotlb() -> None:
    r, pt = sm_rig()
    q = r.queue()
    pt.map(0x1000, 0x200000)
    r.read(0x1000, 8)
    q.submit(pc_inval(3), dev_tlb(0x1000))
    misses = r.unit.stats.iotlb_misses
    assert r.read(0x1000, 8).runs == ((0x200000, 8),)
    assert r.unit.stats.iotlb_misses == misses and r.unit.stats.stale_uses == 0


def test_pass_through_shadows_are_rechecked() -> None:
    r = Rig()
    ctx = r.t.sm_ctx(RID)
    r.m.memory.write_u64(ctx, r.m.memory.read_u64(ctx) | ent.SmCtxLo.DTE.mask)
    r.t.pasid_entry(RID, 0, ent.PGTT_PT, DID)
    r.start()
    r.read(0x7000, 8)
    set_root(r.m, r.unit, r.t.root, scalable=True)
    assert r.read(0x7000, 8).runs == ((0x7000, 8),) and r.unit.stats.stale_uses == 0
