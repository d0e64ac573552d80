"""Legacy-mode translation: root -> context -> second-stage tables, and its faults."""

from __future__ import annotations

from hw.bus import DMA_FAULT_BUS
from hw.vtd import FR
from hw.vtd import entries as ent
from tests.hw.vtd.helpers import RID, RID2, PageTable, legacy_setup, make


def test_translation_disabled_passes_addresses_through() -> None:
    _m, unit = make()
    r = unit.translate(RID, None, False, 0x5000, 0x100, False)
    assert r.runs == ((0x5000, 0x100),) and r.fault is None


def test_translation_disabled_beyond_ram_is_a_bus_fault() -> None:
    m, unit = make()
    r = unit.translate(RID, None, False, m.memory.size - 0x10, 0x20, True)
    assert r.runs == ((m.memory.size - 0x10, 0x10),)
    assert r.fault is not None and r.fault.reason == DMA_FAULT_BUS


def test_4k_pages_translate_and_merge_contiguous_runs() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x10000, 0x300000)
    pt.map(0x11000, 0x301000)
    pt.map(0x12000, 0x400000)
    r = unit.translate(RID, None, False, 0x10800, 0x2000, False)
    assert r.runs == ((0x300800, 0x1800), (0x400000, 0x800))
    assert r.fault is None


def test_2m_page_translates() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x4000_0000, 0x0060_0000, level=2)
    r = unit.translate(RID, None, False, 0x4001_2345, 0x10, False)
    assert r.runs == ((0x0061_2345, 0x10),)


def test_1g_page_translates() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x80_0000_0000, 0, level=3)
    r = unit.translate(RID, None, False, 0x80_0123_4000, 0x1000, True)
    assert r.runs == ((0x0123_4000, 0x1000),)


def test_2m_page_without_sllps_is_reserved() -> None:
    _m, unit, _pages, _t, pt = legacy_setup({"sllps": 0})
    pt.map(0x4000_0000, 0x0060_0000, level=2)
    r = unit.translate(RID, None, False, 0x4000_0000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.PAGING_ENTRY_RSVD


def test_write_to_read_only_page_faults_0x05() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000, w=False)
    r = unit.translate(RID, None, False, 0x1000, 8, True)
    assert r.fault is not None and r.fault.reason == FR.WRITE == 0x05


def test_read_from_write_only_page_faults_0x06() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000, r=False)
    r = unit.translate(RID, None, False, 0x1000, 8, False)
    assert r.fault is not None and r.fault.reason == FR.READ == 0x06


def test_not_present_leaf_faults_as_read_permission() -> None:
    _m, unit, _pages, _t, _pt = legacy_setup()
    r = unit.translate(RID, None, False, 0x7000, 8, False)
    assert r.fault is not None and r.fault.reason == FR.READ


def test_not_present_intermediate_level_faults_as_write_permission() -> None:
    _m, unit, _pages, _t, _pt = legacy_setup()
    r = unit.translate(RID, None, False, 0x7F_0000_0000, 8, True)
    assert r.fault is not None and r.fault.reason == FR.WRITE


def test_address_beyond_agaw_faults_0x04() -> None:
    _m, unit, _pages, _t, _pt = legacy_setup()
    r = unit.translate(RID, None, False, 1 << 48, 8, False)
    assert r.fault is not None and r.fault.reason == FR.ADDR_BEYOND_MGAW


def test_root_entry_not_present_faults_0x01() -> None:
    _m, unit, _pages, _t, _pt = legacy_setup()
    r = unit.translate(0x0100, None, False, 0, 8, False)
    assert r.fault is not None and r.fault.reason == FR.ROOT_NOT_PRESENT


def test_context_entry_not_present_faults_0x02() -> None:
    _m, unit, _pages, _t, _pt = legacy_setup()
    r = unit.translate(RID2, None, False, 0, 8, False)
    assert r.fault is not None and r.fault.reason == FR.CTX_NOT_PRESENT


def test_root_reserved_bits_fault_0x0a() -> None:
    m, unit, _pages, t, _pt = legacy_setup()
    m.memory.write_u64(t.root, m.memory.read_u64(t.root) | 0x10)
    r = unit.translate(RID2, None, False, 0, 8, False)
    assert r.fault is not None and r.fault.reason == FR.ROOT_RSVD


def test_root_upper_qword_nonzero_is_reserved_in_legacy_mode() -> None:
    m, unit, _pages, t, _pt = legacy_setup()
    m.memory.write_u64(t.root + 8, 1)
    r = unit.translate(RID2, None, False, 0, 8, False)
    assert r.fault is not None and r.fault.reason == FR.ROOT_RSVD


def test_context_reserved_bits_fault_0x0b() -> None:
    m, unit, _pages, t, pt = legacy_setup()
    addr = t.legacy_ctx(RID2, pt.root)
    m.memory.write_u64(addr, m.memory.read_u64(addr) | 0x100)
    r = unit.translate(RID2, None, False, 0, 8, False)
    assert r.fault is not None and r.fault.reason == FR.CTX_RSVD


def test_context_aw_not_in_sagaw_faults_0x03() -> None:
    _m, unit, _pages, t, pt = legacy_setup()
    t.legacy_ctx(RID2, pt.root, aw=3)
    r = unit.translate(RID2, None, False, 0, 8, False)
    assert r.fault is not None and r.fault.reason == FR.CTX_INVALID


def test_context_reserved_tt_faults_0x03() -> None:
    _m, unit, _pages, t, pt = legacy_setup()
    t.legacy_ctx(RID2, pt.root, tt=3)
    r = unit.translate(RID2, None, False, 0, 8, False)
    assert r.fault is not None and r.fault.reason == FR.CTX_INVALID


def test_pass_through_context_is_identity() -> None:
    _m, unit, _pages, t, _pt = legacy_setup()
    t.legacy_ctx(RID2, 0, tt=ent.TT_PT)
    r = unit.translate(RID2, None, False, 0x123000, 0x2000, True)
    assert r.runs == ((0x123000, 0x2000),) and r.fault is None


def test_pass_through_to_interrupt_range_faults_0x0e() -> None:
    _m, unit, _pages, t, _pt = legacy_setup()
    t.legacy_ctx(RID2, 0, tt=ent.TT_PT)
    r = unit.translate(RID2, None, False, 0xFEE0_0000, 4, True)
    assert r.fault is not None and r.fault.reason == FR.INTERRUPT_ADDR


def test_pass_through_beyond_ram_is_a_bus_fault() -> None:
    m, unit, _pages, t, _pt = legacy_setup()
    t.legacy_ctx(RID2, 0, tt=ent.TT_PT)
    r = unit.translate(RID2, None, False, m.memory.size, 4, True)
    assert r.fault is not None and r.fault.reason == DMA_FAULT_BUS


def test_pass_through_beyond_haw_faults_0x04() -> None:
    _m, unit, _pages, t, _pt = legacy_setup()
    t.legacy_ctx(RID2, 0, tt=ent.TT_PT)
    r = unit.translate(RID2, None, False, 1 << 46, 4, True)
    assert r.fault is not None and r.fault.reason == FR.ADDR_BEYOND_MGAW


def test_output_in_interrupt_range_faults_0x0e() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0xFEE0_0000)
    r = unit.translate(RID, None, False, 0x1000, 4, True)
    assert r.fault is not None and r.fault.reason == FR.INTERRUPT_ADDR


def test_output_beyond_ram_is_a_bus_fault_after_the_good_part() -> None:
    m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, m.memory.size - 0x1000)
    pt.map(0x2000, m.memory.size)
    r = unit.translate(RID, None, False, 0x1000, 0x2000, False)
    assert r.runs == ((m.memory.size - 0x1000, 0x1000),)
    assert r.fault is not None and r.fault.reason == DMA_FAULT_BUS and r.fault.addr == 0x2000


def test_page_table_pointer_outside_ram_faults_0x07() -> None:
    _m, unit, _pages, t, _pt = legacy_setup()
    t.legacy_ctx(RID2, 0x1_0000_0000)
    r = unit.translate(RID2, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.PAGING_ENTRY_ACCESS


def test_root_table_outside_ram_faults_0x08() -> None:
    from tests.hw.vtd.helpers import enable_te, set_root

    m, unit = make({"smts": False, "pasid": False})
    set_root(m, unit, 0x1_0000_0000, scalable=False)
    enable_te(m, unit)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.ROOT_ACCESS


def test_context_table_outside_ram_faults_0x09() -> None:
    m, unit, _pages, t, _pt = legacy_setup()
    m.memory.write_u64(t.root + 16, 0x1_0000_0000 | 1)
    r = unit.translate(0x0100, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.CTX_ACCESS


def test_paging_entry_reserved_bits_fault_0x0c() -> None:
    m, unit, _pages, _t, pt = legacy_setup()
    addr = pt.map(0x1000, 0x200000)
    m.memory.write_u64(addr, m.memory.read_u64(addr) | (1 << 47))
    r = unit.translate(RID, None, False, 0x1000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.PAGING_ENTRY_RSVD


def test_request_with_pasid_in_legacy_mode_faults_0x31() -> None:
    _m, unit, _pages, _t, _pt = legacy_setup()
    r = unit.translate(RID, 5, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_TTM_LEGACY_PASID


def test_3_level_table_translates() -> None:
    m, unit, pages, t, _pt = legacy_setup()
    pt3 = PageTable(m, pages, 3)
    pt3.map(0x7F_FFFF_F000, 0x5000)
    t.legacy_ctx(RID2, pt3.root, aw=1, did=2)
    r = unit.translate(RID2, None, False, 0x7F_FFFF_F010, 4, False)
    assert r.runs == ((0x5010, 4),)


def test_zero_size_request_translates_to_nothing() -> None:
    _m, unit, _pages, _t, _pt = legacy_setup()
    assert unit.translate(RID, None, False, 0, 0, False).runs == ()
