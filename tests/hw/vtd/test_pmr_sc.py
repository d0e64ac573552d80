"""Protected memory regions (CAP.PLMR/PHMR: PMEN.EPM/PRS, blocking DMA into the regions
while enabled) and snoop control (ECAP.SC: the SNP bit of a legacy second-stage leaf)."""

from __future__ import annotations

from hw.bus import DmaResult
from hw.vtd import FR, VtdUnit
from hw.vtd import registers as vr
from tests.hw.vtd.helpers import RID, legacy_setup, make, reg_read, reg_write

EPM, PRS = 1 << 31, 1


def test_pmr_registers_are_read_only_zero_without_plmr_phmr() -> None:
    m, _ = make()
    reg_write(m, vr.PLMBASE_OFF, 0x20_0000)
    reg_write(m, vr.PMEN_OFF, EPM)
    m.clock.advance(1000)
    assert reg_read(m, vr.PLMBASE_OFF) == 0 and reg_read(m, vr.PMEN_OFF) == 0


def test_enabled_regions_block_dma_at_the_first_protected_byte_until_disabled() -> None:
    m, unit = make({"plmr": True, "phmr": True})
    reg_write(m, vr.PLMBASE_OFF, 0x20_0000 | 0x1234)  # bits 20:0 do not stick
    reg_write(m, vr.PLMLIMIT_OFF, 0x20_0000)
    assert reg_read(m, vr.PLMBASE_OFF) == 0x20_0000
    reg_write(m, vr.PHMBASE_OFF, 1 << 32, 8)  # base above limit: the high region is empty
    reg_write(m, vr.PMEN_OFF, EPM)
    assert not reg_read(m, vr.PMEN_OFF) & PRS  # PRS follows after the command delay
    m.clock.advance(1000)
    assert reg_read(m, vr.PMEN_OFF) & PRS
    res = unit.translate(RID, None, False, 0x1F_F000, 0x2000, True)  # TE off: untranslated
    assert res.runs == ((0x1F_F000, 0x1000),)
    assert res.fault is not None and res.fault.addr == 0x20_0000
    assert unit.stats.faults_recorded == 0  # blocked, not a remapping fault
    reg_write(m, vr.PMEN_OFF, 0)
    m.clock.advance(1000)
    assert not reg_read(m, vr.PMEN_OFF) & PRS
    assert unit.translate(RID, None, False, 0x1F_F000, 0x2000, True).fault is None


def test_snp_in_a_legacy_leaf_is_reserved_without_sc_and_accepted_with_it() -> None:
    for sc, ok in ((False, False), (True, True)):
        m, unit, pages, _, pt = legacy_setup({"sc": sc})
        phys = pages.alloc()
        addr = pt.map(0x4000, phys)
        m.memory.write_u64(addr, m.memory.read_u64(addr) | 1 << 11)
        res = unit.translate(RID, None, False, 0x4000, 8, False)
        assert (res.fault is None) == ok
        if not ok:
            assert res.fault is not None and res.fault.reason == FR.PAGING_ENTRY_RSVD


def test_with_translation_on_enabled_regions_cut_translated_dma_too() -> None:
    """With TE on and no region enabled, ``unit.translate`` is routed straight to the
    translation (``VtdUnit.route``); enabling a region routes it back through the
    method, which cuts the translated runs: both give what the method gives."""
    m, unit, _pages, _t, pt = legacy_setup({"plmr": True})
    pt.map(0x1000, 0x1F_F000)
    pt.map(0x2000, 0x20_0000)
    reg_write(m, vr.PLMBASE_OFF, 0x20_0000)
    reg_write(m, vr.PLMLIMIT_OFF, 0x20_0000)

    def both() -> tuple[DmaResult, DmaResult]:
        routed = unit.translate(RID, None, False, 0x1000, 0x2000, True)
        unit.caches.flush_tlb()
        method = VtdUnit.translate(unit, RID, None, False, 0x1000, 0x2000, True)
        unit.caches.flush_tlb()
        return routed, method

    assert "translate" in vars(unit)
    routed, method = both()
    assert routed == method and method.fault is None
    reg_write(m, vr.PMEN_OFF, EPM)
    m.clock.advance(1000)
    assert "translate" not in vars(unit)
    routed, method = both()
    assert routed == method
    assert method.runs == ((0x1F_F000, 0x1000),)
    assert method.fault is not None and method.fault.addr == 0x2000
    reg_write(m, vr.PMEN_OFF, 0)
    m.clock.advance(1000)
    assert "translate" in vars(unit)
    routed, method = both()
    assert routed == method and routed.runs == ((0x1F_F000, 0x2000),) and routed.fault is None
