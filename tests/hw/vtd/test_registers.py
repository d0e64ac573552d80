"""GCMD/GSTS protocol, register-based invalidation, fault recording and events."""

from __future__ import annotations

from typing import Any

import pytest

from hw.vtd import FR
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from tests.hw.vtd.helpers import (
    RID,
    Pages,
    PageTable,
    Queue,
    Tables,
    gcmd,
    legacy_setup,
    make,
    reg_read,
    reg_write,
    sm_setup,
)


def test_gcmd_reads_zero() -> None:
    m, _unit = make()
    reg_write(m, vr.GCMD_OFF, vr.GCMD.WBF.mask)
    assert reg_read(m, vr.GCMD_OFF) == 0


def test_srtp_clears_rtps_then_sets_it_after_an_event() -> None:
    m, unit = make()
    reg_write(m, vr.RTADDR_OFF, 0x100000, 8)
    reg_write(m, vr.GCMD_OFF, vr.GCMD.SRTP.mask)
    assert not reg_read(m, vr.GSTS_OFF) & vr.GSTS.RTPS.mask
    m.clock.advance(1000)
    assert reg_read(m, vr.GSTS_OFF) & vr.GSTS.RTPS.mask
    assert unit.root == 0x100000


def test_te_status_follows_after_an_event() -> None:
    m, unit = make()
    reg_write(m, vr.GCMD_OFF, vr.GCMD.TE.mask)
    assert not reg_read(m, vr.GSTS_OFF) & vr.GSTS.TES.mask
    m.clock.advance(1000)
    assert reg_read(m, vr.GSTS_OFF) & vr.GSTS.TES.mask and unit.te


def test_writing_gcmd_without_te_turns_translation_off() -> None:
    m, unit, _pages, _t, _pt = legacy_setup()
    reg_write(m, vr.GCMD_OFF, 0)
    m.clock.advance(1000)
    assert not unit.te


def test_wbf_completes() -> None:
    m, _unit = make({"rwbf": True})
    reg_write(m, vr.GCMD_OFF, vr.GCMD.WBF.mask)
    assert reg_read(m, vr.GSTS_OFF) & vr.GSTS.WBFS.mask
    m.clock.advance(1000)
    assert not reg_read(m, vr.GSTS_OFF) & vr.GSTS.WBFS.mask


def test_multi_bit_gcmd_write_acts_on_each_bit_and_is_recorded() -> None:
    m, unit = make()
    reg_write(m, vr.RTADDR_OFF, 0x100000, 8)
    reg_write(m, vr.GCMD_OFF, vr.GCMD.TE.mask | vr.GCMD.SRTP.mask)
    m.clock.advance(1000)
    gsts = reg_read(m, vr.GSTS_OFF)
    assert gsts & vr.GSTS.TES.mask and gsts & vr.GSTS.RTPS.mask
    assert any("2 controls" in e for e in unit.errors)


@pytest.mark.parametrize(
    ("config", "bit"), [({"ir": False}, vr.GCMD.IRE.mask), ({}, vr.GCMD.SFL.mask)]
)
def test_unsupported_gcmd_bits_are_ignored_and_recorded(config: dict[str, Any], bit: int) -> None:
    m, unit = make(config)
    reg_write(m, vr.GCMD_OFF, bit)
    m.clock.advance(1000)
    assert reg_read(m, vr.GSTS_OFF) == 0 and unit.errors


def test_qie_without_qi_capability_is_ignored() -> None:
    m, unit = make({"smts": False, "pasid": False, "qi": False})
    reg_write(m, vr.GCMD_OFF, vr.GCMD.QIE.mask)
    m.clock.advance(1000)
    assert reg_read(m, vr.GSTS_OFF) == 0 and unit.errors


def test_register_writes_to_read_only_cap_are_ignored() -> None:
    m, _unit = make()
    cap = reg_read(m, vr.CAP_OFF, 8)
    reg_write(m, vr.CAP_OFF, 0, 8)
    assert reg_read(m, vr.CAP_OFF, 8) == cap


def test_ccmd_global_invalidation_completes_with_actual_granularity() -> None:
    m, unit, _pages, _t, _pt = legacy_setup()
    unit.translate(RID, None, False, 0, 4, False)
    reg_write(m, vr.CCMD_OFF, vr.CCMD.encode(ICC=1, CIRG=1), 8)
    assert reg_read(m, vr.CCMD_OFF, 8) >> 63
    m.clock.advance(1000)
    ccmd = reg_read(m, vr.CCMD_OFF, 8)
    assert not ccmd >> 63 and vr.CCMD.CAIG.get(ccmd) == 1
    assert unit.caches.ctx == {}


def test_ccmd_domain_selective_drops_that_domain() -> None:
    m, unit, _pages, _t, _pt = legacy_setup()
    unit.translate(RID, None, False, 0, 4, False)
    reg_write(m, vr.CCMD_OFF, vr.CCMD.encode(ICC=1, CIRG=2, DID=2), 8)
    m.clock.advance(1000)
    assert list(unit.caches.ctx) == [RID]
    reg_write(m, vr.CCMD_OFF, vr.CCMD.encode(ICC=1, CIRG=2, DID=1), 8)
    m.clock.advance(1000)
    assert unit.caches.ctx == {}


def test_iotlb_register_page_selective_invalidation() -> None:
    m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000)
    pt.map(0x2000, 0x201000)
    unit.translate(RID, None, False, 0x1000, 0x2000, False)
    iro = vr.ECAP.IRO.get(reg_read(m, vr.ECAP_OFF, 8)) * 16
    reg_write(m, iro, vr.IVA.encode(ADDR=1), 8)
    reg_write(m, iro + 8, vr.IOTLB.encode(IVT=1, IIRG=3, DID=1), 8)
    m.clock.advance(1000)
    value = reg_read(m, iro + 8, 8)
    assert not value >> 63 and vr.IOTLB.IAIG.get(value) == 3
    assert list(unit.caches.iotlb.tables[1, -1][0]) == [2]


def test_iotlb_register_global_invalidation() -> None:
    m, unit, _pages, _t, pt = legacy_setup()
    pt.map(0x1000, 0x200000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    iro = vr.ECAP.IRO.get(reg_read(m, vr.ECAP_OFF, 8)) * 16
    reg_write(m, iro + 8, vr.IOTLB.encode(IVT=1, IIRG=1), 8)
    m.clock.advance(1000)
    assert unit.caches.iotlb_size == 0


def test_iotlb_register_domain_selective_invalidation() -> None:
    m, unit, _pages, _t, pt = legacy_setup({"psi": False})
    pt.map(0x1000, 0x200000)
    unit.translate(RID, None, False, 0x1000, 4, False)
    iro = vr.ECAP.IRO.get(reg_read(m, vr.ECAP_OFF, 8)) * 16
    reg_write(m, iro + 8, vr.IOTLB.encode(IVT=1, IIRG=3, DID=1), 8)
    m.clock.advance(1000)
    assert vr.IOTLB.IAIG.get(reg_read(m, iro + 8, 8)) == 2
    assert unit.caches.iotlb_size == 0


def test_register_invalidation_is_rejected_in_scalable_mode() -> None:
    m, unit, _pages, _t = sm_setup()
    reg_write(m, vr.CCMD_OFF, vr.CCMD.encode(ICC=1, CIRG=1), 8)
    m.clock.advance(1000)
    assert vr.CCMD.CAIG.get(reg_read(m, vr.CCMD_OFF, 8)) == 0 and unit.errors


def test_register_invalidation_is_rejected_while_qi_enabled() -> None:
    m, unit, pages, _t, _pt = legacy_setup()
    Queue(m, unit, pages, dw=0)
    reg_write(m, vr.CCMD_OFF, vr.CCMD.encode(ICC=1, CIRG=1), 8)
    m.clock.advance(1000)
    assert vr.CCMD.CAIG.get(reg_read(m, vr.CCMD_OFF, 8)) == 0


def test_ccmd_write_without_icc_does_nothing() -> None:
    m, _unit, _pages, _t, _pt = legacy_setup()
    reg_write(m, vr.CCMD_OFF, 1, 4)
    m.clock.advance(1000)
    assert reg_read(m, vr.CCMD_OFF, 8) == 1


def frcd(m: object, unit: object, i: int) -> tuple[int, int]:
    from hw.machine import Machine

    assert isinstance(m, Machine)
    fro = vr.CAP.FRO.get(reg_read(m, vr.CAP_OFF, 8)) * 16
    return reg_read(m, fro + 16 * i, 8), reg_read(m, fro + 16 * i + 8, 8)


def test_fault_is_recorded_with_source_reason_and_address() -> None:
    m, unit, _pages, _t, _pt = legacy_setup()
    unit.translate(RID, None, False, 0x5123, 4, True)
    lo, hi = frcd(m, unit, 0)
    d = vr.FRCD_HI.decode(hi)
    assert lo == 0x5000
    assert (d["F"], d["SID"], d["FR"], d["T"], d["PP"]) == (1, RID, FR.WRITE, 0, 0)
    fsts = reg_read(m, vr.FSTS_OFF)
    assert fsts & vr.FSTS.PPF.mask and vr.FSTS.FRI.get(fsts) == 0


def test_pasid_fault_records_pasid_and_privilege() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    t.pasid_entry(RID, 9, ent.PGTT_FL, did=3, pt=pt, sre=True)
    unit.translate(RID, 9, True, 0x4000, 4, False)
    d = vr.FRCD_HI.decode(frcd(m, unit, 0)[1])
    assert (d["PP"], d["PV"], d["PRIV"], d["T"], d["FR"]) == (1, 9, 1, 1, FR.FS_NOT_PRESENT)


def test_faults_fill_records_round_robin_then_overflow() -> None:
    m, unit, _pages, _t, _pt = legacy_setup({"nfr": 2})
    for _ in range(3):
        unit.translate(RID, None, False, 0x5000, 4, False)
    assert unit.stats.faults_recorded == 2 and unit.stats.faults_overflow == 1
    assert reg_read(m, vr.FSTS_OFF) & vr.FSTS.PFO.mask


def test_clearing_records_moves_fri_and_clears_ppf() -> None:
    m, unit, _pages, _t, _pt = legacy_setup({"nfr": 2})
    unit.translate(RID, None, False, 0x5000, 4, False)
    unit.translate(RID, None, False, 0x6000, 4, False)
    fro = vr.CAP.FRO.get(reg_read(m, vr.CAP_OFF, 8)) * 16
    reg_write(m, fro + 12, 1 << 31)
    assert vr.FSTS.FRI.get(reg_read(m, vr.FSTS_OFF)) == 1
    reg_write(m, fro + 16 + 12, 1 << 31)
    assert not reg_read(m, vr.FSTS_OFF) & vr.FSTS.PPF.mask


def test_fault_event_msi_uses_feaddr_and_fedata() -> None:
    m, unit, _pages, _t, _pt = legacy_setup()
    reg_write(m, vr.FEADDR_OFF, 0xFEE0_2000)
    reg_write(m, vr.FEDATA_OFF, 0x33)
    reg_write(m, vr.FECTL_OFF, 0)
    unit.translate(RID, None, False, 0x5000, 4, False)
    unit.translate(RID, None, False, 0x6000, 4, False)
    assert m.lost_msis == [(0xFEE0_2000, 0x33)]


def test_masked_fault_event_sets_ip_and_fires_on_unmask() -> None:
    m, unit, _pages, _t, _pt = legacy_setup()
    unit.translate(RID, None, False, 0x5000, 4, False)
    assert reg_read(m, vr.FECTL_OFF) & vr.EventControl.IP.mask and m.lost_msis == []
    reg_write(m, vr.FECTL_OFF, 0)
    assert len(m.lost_msis) == 1


def test_clearing_fault_status_clears_ip() -> None:
    m, unit, _pages, _t, _pt = legacy_setup({"nfr": 1})
    unit.translate(RID, None, False, 0x5000, 4, False)
    unit.translate(RID, None, False, 0x5000, 4, False)
    fro = vr.CAP.FRO.get(reg_read(m, vr.CAP_OFF, 8)) * 16
    reg_write(m, fro + 12, 1 << 31)
    reg_write(m, vr.FSTS_OFF, vr.FSTS.PFO.mask | vr.FSTS.PPF.mask | vr.FSTS.PRO.mask)
    assert reg_read(m, vr.FSTS_OFF) == 0
    assert not reg_read(m, vr.FECTL_OFF) & vr.EventControl.IP.mask


def test_fpd_suppresses_qualified_faults() -> None:
    _m, unit, _pages, t, pt = legacy_setup()
    t.legacy_ctx(RID, pt.root, fpd=True)
    unit.translate(RID, None, False, 0x5000, 4, False)
    assert unit.stats.faults_suppressed == 1 and unit.stats.faults_recorded == 0


def test_fpd_does_not_suppress_root_entry_faults() -> None:
    _m, unit, _pages, t, pt = legacy_setup()
    t.legacy_ctx(RID, pt.root, fpd=True)
    unit.translate(0x0300, None, False, 0x5000, 4, False)
    assert unit.stats.faults_recorded == 1


def test_pasid_entry_fpd_suppresses_first_stage_faults() -> None:
    m, unit, pages, t = sm_setup()
    t.pasid_entry(RID, 0, ent.PGTT_FL, did=3, pt=PageTable(m, pages, 4, fl=True), fpd=True)
    unit.translate(RID, None, False, 0x5000, 4, False)
    assert unit.stats.faults_suppressed == 1


def test_fault_trace_event_when_tracing() -> None:
    m, unit, _pages, _t, _pt = legacy_setup()
    events: list[str] = []
    m.set_hw_trace_sink(lambda name, ts, fields: events.append(name))
    unit.translate(RID, None, False, 0x5000, 4, False)
    assert "hw_vtd:fault" in events


def test_unattached_unit_reports_runtime_error() -> None:
    import pytest

    from hw.vtd import VtdUnit

    unit = VtdUnit("lone", {})
    with pytest.raises(RuntimeError):
        _ = unit.caches
    with pytest.raises(RuntimeError):
        _ = unit.walker
    with pytest.raises(RuntimeError):
        _ = unit.qi
    with pytest.raises(RuntimeError):
        _ = unit.m


def test_dump_renders_scalable_tables() -> None:
    m, unit, pages, t = sm_setup()
    pt = PageTable(m, pages, 4, fl=True)
    pt.map(0x4000, 0xA000)
    pt.map(0x20_0000, 0x40_0000, level=2)
    t.pasid_entry(RID, 5, ent.PGTT_FL, did=3, pt=pt)
    t.pasid_entry(RID, 6, ent.PGTT_PT, did=1)
    t.pasid_entry(RID, 7, 0, did=1)
    text = unit.dump()
    assert "mode=scalable" in text
    assert "pasid 5: did=3 pgtt=1" in text and "0x4000 -> 0xa000 0x1000 rwux" in text
    assert "0x200000 -> 0x400000 0x200000" in text
    assert "pasid 6: did=1 pgtt=4 sre=0 fpd=0 pass-through" in text
    assert "pasid 7: SM_PASID_INVALID" in text


def test_dump_shows_unreadable_tables() -> None:
    m, unit, _pages, t, pt = legacy_setup()
    m.memory.write_u64(pt.root, 0x1_0000_0000 | 3)
    t.legacy_ctx(0x0020, 0, tt=3)
    text = unit.dump()
    assert "unreadable" in text and "CTX_INVALID" in text


def test_dump_of_invalid_ttm() -> None:
    m, unit = make()
    reg_write(m, vr.RTADDR_OFF, 3 << 10, 8)
    gcmd(m, unit, vr.GCMD.SRTP.mask)
    assert "invalid TTM 3" in unit.dump()


def test_dump_lists_many_leaves_with_a_cut() -> None:
    _m, unit, _pages, _t, pt = legacy_setup()
    for i in range(80):
        pt.map(0x1000 * i, 0x200000)
    assert "more" in unit.dump() or unit.dump().count("->") >= 64


def test_pages_helper_and_tables_round_trip() -> None:
    m, _unit = make()
    pages = Pages(m)
    t = Tables(m, pages, scalable=True)
    assert t.ctx_addr(0x0180) != t.ctx_addr(0x0100)
