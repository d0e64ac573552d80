"""Scalable-mode translation: SM context, PASID directory/table, first/second stage, PT."""

from __future__ import annotations

import pytest

from hw.vtd import FR
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from tests.hw.vtd.helpers import (
    RID,
    RID2,
    PageTable,
    enable_te,
    gcmd,
    make,
    reg_write,
    set_root,
    sm_setup,
)


def fl_setup(**kw: bool) -> tuple:  # type: ignore[type-arg]
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    t.pasid_entry(RID, 0, ent.PGTT_FL, did=3, pt=pt, **kw)
    return m, unit, pages, t, pt


def test_request_without_pasid_uses_rid_pasid_entry() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4)
    pt.map(0x2000, 0x9000)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    r = unit.translate(RID, None, False, 0x2004, 4, False)
    assert r.runs == ((0x9004, 4),)


def test_first_stage_translation_with_pasid() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(0x4000, 0xA000)
    t.pasid_entry(RID, 7, ent.PGTT_FL, did=3, pt=pt)
    r = unit.translate(RID, 7, False, 0x4000, 0x1000, True)
    assert r.runs == ((0xA000, 0x1000),) and r.fault is None


def test_first_stage_write_sets_accessed_and_dirty() -> None:
    m, unit, _pages, _t, pt = fl_setup()
    addr = pt.map(0x4000, 0xA000)
    unit.translate(RID, None, False, 0x4000, 8, True)
    pte = m.memory.read_u64(addr)
    assert pte & ent.FlPte.A.mask and pte & ent.FlPte.D.mask


def test_first_stage_read_sets_accessed_only() -> None:
    m, unit, _pages, _t, pt = fl_setup()
    addr = pt.map(0x4000, 0xA000)
    unit.translate(RID, None, False, 0x4000, 8, False)
    pte = m.memory.read_u64(addr)
    assert pte & ent.FlPte.A.mask and not pte & ent.FlPte.D.mask


def test_first_stage_2m_page() -> None:
    _m, unit, _pages, _t, pt = fl_setup()
    pt.map(0x20_0000, 0x40_0000, level=2)
    r = unit.translate(RID, None, False, 0x21_0000, 4, False)
    assert r.runs == ((0x41_0000, 4),)


def test_first_stage_1g_page() -> None:
    _m, unit, _pages, _t, pt = fl_setup()
    pt.map(0x4000_0000, 0, level=3)
    r = unit.translate(RID, None, False, 0x4012_3000, 4, False)
    assert r.runs == ((0x12_3000, 4),)


def test_first_stage_1g_page_without_fl1gp_is_reserved() -> None:
    m, unit = make({"fl1gp": False})
    from tests.hw.vtd.helpers import Pages, Tables

    pages = Pages(m)
    t = Tables(m, pages, scalable=True)
    t.sm_ctx(RID)
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(0x4000_0000, 0, level=3)
    t.pasid_entry(RID, 0, ent.PGTT_FL, did=3, pt=pt)
    set_root(m, unit, t.root, True)
    enable_te(m, unit)
    r = unit.translate(RID, None, False, 0x4000_0000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.FS_RSVD


def test_first_stage_write_to_read_only_faults_0x85() -> None:
    _m, unit, _pages, _t, pt = fl_setup()
    pt.map(0x4000, 0xA000, w=False)
    r = unit.translate(RID, None, False, 0x4000, 4, True)
    assert r.fault is not None and r.fault.reason == FR.SM_WRITE == 0x85


def test_first_stage_user_access_to_supervisor_page_faults_0x81() -> None:
    _m, unit, _pages, _t, pt = fl_setup()
    pt.map(0x4000, 0xA000, u=False)
    r = unit.translate(RID, None, False, 0x4000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_US == 0x81


def test_supervisor_access_to_supervisor_page_with_sre() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(0x4000, 0xA000, u=False)
    t.pasid_entry(RID, 9, ent.PGTT_FL, did=3, pt=pt, sre=True)
    r = unit.translate(RID, 9, True, 0x4000, 4, False)
    assert r.runs == ((0xA000, 4),)


def test_supervisor_write_to_read_only_page_is_allowed_without_wpe() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(0x4000, 0xA000, w=False)
    t.pasid_entry(RID, 9, ent.PGTT_FL, did=3, pt=pt, sre=True)
    assert unit.translate(RID, 9, True, 0x4000, 4, True).fault is None


def test_supervisor_write_to_read_only_page_faults_with_wpe() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(0x4000, 0xA000, w=False)
    t.pasid_entry(RID, 9, ent.PGTT_FL, did=3, pt=pt, sre=True, wpe=True)
    r = unit.translate(RID, 9, True, 0x4000, 4, True)
    assert r.fault is not None and r.fault.reason == FR.SM_WRITE


def test_supervisor_request_without_sre_faults_0x5d() -> None:
    _m, unit, _pages, t, pt = fl_setup()
    t.pasid_entry(RID, 9, ent.PGTT_FL, did=3, pt=pt)
    r = unit.translate(RID, 9, True, 0x4000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_SRE


def test_execute_request_without_ere_faults_0x5c() -> None:
    _m, unit, _pages, t, pt = fl_setup()
    t.pasid_entry(RID, 9, ent.PGTT_FL, did=3, pt=pt)
    r = unit.translate_ex(RID, 9, False, 0x4000, 4, False, True)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_ERE


def test_execute_of_xd_page_faults_0x82() -> None:
    m, unit, pages, t = sm_setup({"ers": True})
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(0x4000, 0xA000, xd=True)
    t.pasid_entry(RID, 9, ent.PGTT_FL, did=3, pt=pt, extra=(0, 0, 2, 0, 0, 0, 0, 0))
    r = unit.translate_ex(RID, 9, False, 0x4000, 4, False, True)
    assert r.fault is not None and r.fault.reason == FR.SM_EXEC


def test_first_stage_not_present_faults_0x71() -> None:
    _m, unit, _pages, _t, _pt = fl_setup()
    r = unit.translate(RID, None, False, 0x4000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.FS_NOT_PRESENT


def test_first_stage_non_canonical_address_faults_0x80() -> None:
    _m, unit, _pages, _t, _pt = fl_setup()
    r = unit.translate(RID, None, False, 1 << 50, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_NON_CANONICAL


def test_first_stage_reserved_bits_fault_0x72() -> None:
    m, unit, _pages, _t, pt = fl_setup()
    addr = pt.map(0x4000, 0xA000)
    m.memory.write_u64(addr, m.memory.read_u64(addr) | (1 << 50))
    r = unit.translate(RID, None, False, 0x4000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.FS_RSVD


def test_first_stage_root_outside_ram_faults_0x73() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    pt.root = 0x1_0000_0000
    t.pasid_entry(RID, 0, ent.PGTT_FL, did=3, pt=pt)
    r = unit.translate(RID, None, False, 0x4000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.FS_PTR_INVALID


def test_first_stage_lower_table_outside_ram_faults_0x70() -> None:
    m, unit, _pages, _t, pt = fl_setup()
    m.memory.write_u64(pt.root, 0x1_0000_0000 | 7)
    r = unit.translate(RID, None, False, 0x4000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.FS_ACCESS


def test_second_stage_scalable_write_to_read_only_faults_0x85() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4)
    pt.map(0x2000, 0x9000, w=False)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    r = unit.translate(RID, None, False, 0x2000, 4, True)
    assert r.fault is not None and r.fault.reason == FR.SM_WRITE


def test_second_stage_scalable_not_present_read_faults_0x86() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    r = unit.translate(RID, None, False, 0x2000, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_READ


def test_second_stage_scalable_beyond_aw_faults_0x83() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 3)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt, aw=1)
    r = unit.translate(RID, None, False, 1 << 40, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_ADDR_BEYOND


def test_second_stage_scalable_reserved_bit_faults_0x7a() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4)
    m.memory.write_u64(pt.root, pages.alloc() | 3 | (1 << 7))
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SS_RSVD


def test_second_stage_scalable_table_outside_ram_faults_0x78() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4)
    pt.root = 0x1_0000_0000
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SS_ACCESS


def test_second_stage_ssade_sets_accessed_and_dirty() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4)
    addr = pt.map(0x2000, 0x9000)
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=2, pt=pt, extra=(1 << 9, 0, 0, 0, 0, 0, 0, 0))
    unit.translate(RID, None, False, 0x2000, 4, True)
    pte = m.memory.read_u64(addr)
    assert pte & ent.SlPte.A.mask and pte & ent.SlPte.D.mask


def test_pass_through_pasid_entry_is_identity() -> None:
    _m, unit, _pages, t = sm_setup()
    t.pasid_entry(RID, 0, ent.PGTT_PT, did=1)
    r = unit.translate(RID, None, False, 0x5000, 0x3000, True)
    assert r.runs == ((0x5000, 0x3000),)


def test_pass_through_to_interrupt_range_faults_0x87() -> None:
    _m, unit, _pages, t = sm_setup()
    t.pasid_entry(RID, 0, ent.PGTT_PT, did=1)
    r = unit.translate(RID, None, False, 0xFEE0_1000, 4, True)
    assert r.fault is not None and r.fault.reason == FR.SM_INTERRUPT_ADDR


@pytest.mark.parametrize("pgtt", [0, 3, 5, 6, 7])
def test_unsupported_pgtt_faults_0x5b(pgtt: int) -> None:
    _m, unit, _pages, t = sm_setup()
    t.pasid_entry(RID, 0, pgtt, did=1)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_INVALID


def test_second_stage_aw_not_in_sagaw_faults_0x5b() -> None:
    m, unit, pages, t = sm_setup()
    t.pasid_entry(RID, 0, ent.PGTT_SL, did=1, pt=PageTable(m, pages), aw=3)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_INVALID


def test_five_level_first_stage_without_fl5lp_faults_0x5b() -> None:
    _m, unit, _pages, t = sm_setup()
    t.pasid_entry(RID, 0, ent.PGTT_FL, did=1, extra=(0, 0, 1 << 2, 0, 0, 0, 0, 0))
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_INVALID


def test_five_level_first_stage_translates_with_fl5lp() -> None:
    m, unit, pages, t = sm_setup({"fl5lp": True, "mgaw": 57, "sagaw": 0b1110})
    pt = PageTable(m, pages, 5, fl=True)
    pt.map(0x1_0000_0000_0000, 0x7000)
    t.pasid_entry(RID, 0, ent.PGTT_FL, did=1, pt=pt, extra=(0, 0, 1 << 2, 0, 0, 0, 0, 0))
    r = unit.translate(RID, None, False, 0x1_0000_0000_0000, 4, False)
    assert r.runs == ((0x7000, 4),)


def test_did_beyond_nd_faults_0x5b() -> None:
    _m, unit, _pages, t = sm_setup({"nd": 0})
    t.pasid_entry(RID, 0, ent.PGTT_PT, did=16)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_INVALID


@pytest.mark.parametrize("word", [0, 1, 2, 3, 7])
def test_pasid_entry_reserved_bits_fault_0x5a(word: int) -> None:
    _m, unit, _pages, t = sm_setup()
    bits = {0: 1 << 10, 1: 1 << 16, 2: 1 << 8, 3: 1, 7: 1 << 63}[word]
    extra = tuple(bits if i == word else 0 for i in range(8))
    t.pasid_entry(RID, 0, ent.PGTT_PT, did=1, extra=extra)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_RSVD


def test_pasid_entry_not_present_faults_0x59() -> None:
    _m, unit, _pages, t = sm_setup()
    t.pasid_addr(RID, 0)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_NOT_PRESENT


def test_pasid_directory_entry_not_present_faults_0x51() -> None:
    _m, unit, _pages, _t = sm_setup()
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_DIR_NOT_PRESENT


def test_pasid_directory_reserved_bits_fault_0x52() -> None:
    m, unit, _pages, t = sm_setup()
    t.pasid_addr(RID, 0)
    d = t.pasid_dirs[RID]
    m.memory.write_u64(d, m.memory.read_u64(d) | 0x4)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_DIR_RSVD


def test_pasid_table_pointer_outside_ram_faults_0x58() -> None:
    m, unit, _pages, t = sm_setup()
    m.memory.write_u64(t.pasid_dirs[RID], 0x1_0000_0000 | 1)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_ACCESS


def test_pasid_directory_outside_ram_faults_0x50() -> None:
    m, unit, _pages, t = sm_setup()
    addr = t.ctx_addr(RID)
    m.memory.write_u64(addr, ent.SmCtxLo.encode(P=1, PASIDE=1, PASIDDIRPTR=0x1_0000_0000 >> 12))
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_DIR_ACCESS


def test_pasid_beyond_pdts_faults_0x46() -> None:
    _m, unit, _pages, _t = sm_setup()
    r = unit.translate(RID, 1 << 13, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_PASID_TOO_LARGE


def test_pasid_request_without_paside_faults_0x45() -> None:
    _m, unit, _pages, t = sm_setup()
    t.sm_ctx(RID2, paside=False)
    r = unit.translate(RID2, 3, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_CTX_PASIDE


def test_sm_context_not_present_faults_0x41() -> None:
    _m, unit, _pages, t = sm_setup()
    t.ctx_addr(RID2)
    r = unit.translate(RID2, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_CTX_NOT_PRESENT


@pytest.mark.parametrize("word", [0, 1, 2, 3])
def test_sm_context_reserved_bits_fault_0x42(word: int) -> None:
    m, unit, _pages, t = sm_setup({"dt": False})
    addr = t.sm_ctx(RID2)
    bits = {0: 1 << 5, 1: 1 << 21, 2: 1, 3: 1 << 63}[word]
    m.memory.write_u64(addr + 8 * word, m.memory.read_u64(addr + 8 * word) | bits)
    r = unit.translate(RID2, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_CTX_RSVD


def test_sm_root_lower_not_present_faults_0x39() -> None:
    _m, unit, _pages, _t = sm_setup()
    r = unit.translate(0x0200, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_ROOT_NOT_PRESENT


def test_sm_root_upper_half_serves_devfn_0x80_and_up() -> None:
    m, unit, _pages, t = sm_setup()
    t.sm_ctx(0x0080)
    t.pasid_entry(0x0080, 0, ent.PGTT_PT, did=1)
    assert unit.translate(0x0080, None, False, 0x1000, 4, False).fault is None
    assert m.memory.read_u64(t.root + 8) & 1


def test_sm_root_reserved_bits_fault_0x3a() -> None:
    m, unit, pages, t = sm_setup()
    m.memory.write_u64(t.root + 32, pages.alloc() | 1 | 0x20)
    r = unit.translate(0x0200, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_ROOT_RSVD


def test_sm_root_table_outside_ram_faults_0x38() -> None:
    m, unit = make()
    set_root(m, unit, 0x1_0000_0000, scalable=True)
    enable_te(m, unit)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_ROOT_ACCESS


def test_sm_context_table_outside_ram_faults_0x40() -> None:
    m, unit, _pages, t = sm_setup()
    m.memory.write_u64(t.root + 16, 0x1_0000_0000 | 1)
    r = unit.translate(0x0100, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_CTX_ACCESS


@pytest.mark.parametrize("ttm", [2, 3])
def test_reserved_ttm_faults_0x30(ttm: int) -> None:
    m, unit = make()
    reg_write(m, vr.RTADDR_OFF, 0x100000 | (ttm << 10), 8)
    gcmd(m, unit, vr.GCMD.SRTP.mask)
    enable_te(m, unit)
    r = unit.translate(RID, None, False, 0, 4, False)
    assert r.fault is not None and r.fault.reason == FR.SM_RTADDR_INVALID
