"""Stage-1 translation through STE -> CD -> LPAE tables, and every negative path of
facts C4 with the event it records (IHI 0070 chapter 5 and 7)."""

from __future__ import annotations

import pytest

from hw.bus import DMA_FAULT_BUS
from hw.smmuv3 import Evt
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from tests.hw.smmuv3.helpers import (
    RAM,
    RID,
    RID2,
    CdTable,
    Pages,
    PageTable,
    Rig,
    Smmu,
    cd_words,
    make,
    reason,
    reg_write,
    ste_abort,
    ste_bypass,
    ste_s1,
)

IOVA = 0x4000_0000


def rig_with_cd0(**cd_fields: int) -> Rig:
    r = Rig()
    r.cd(0, 1, **cd_fields)
    return r


def test_4k_page_translates_to_its_frame() -> None:
    r = rig_with_cd0()
    r.table(1).map(IOVA, 0x20_0000)
    assert r.translate(IOVA + 0x10, 0x20).runs == ((0x20_0010, 0x20),)


def test_2m_block_translates_every_page_inside() -> None:
    r = rig_with_cd0()
    r.table(1).map(IOVA, 0x40_0000, level=2)
    res = r.translate(IOVA + 0x1F_F000, 0x1000)
    assert res.runs == ((0x5F_F000, 0x1000),) and res.fault is None


def test_1g_block_translates() -> None:
    r = rig_with_cd0()
    r.table(1).map(0x8000_0000, 0, level=1)
    assert r.translate(0x8123_4000, 8).runs == ((0x123_4000, 8),)


def test_contiguous_pages_merge_into_one_run() -> None:
    r = rig_with_cd0()
    for i in range(4):
        r.table(1).map(IOVA + 0x1000 * i, 0x30_0000 + 0x1000 * i)
    assert r.translate(IOVA, 0x4000).runs == ((0x30_0000, 0x4000),)


def test_unmapped_iova_with_ssid_gives_f_translation_event_with_ssid() -> None:
    r = rig_with_cd0()
    r.cd(3, 1)
    res = r.translate(IOVA, 4, pasid=3, write=True)
    assert res.fault is not None and res.fault.reason == Evt.F_TRANSLATION
    (evt,) = r.smmu.events()
    d0, d1 = ent.EvtDw0.decode(evt[0]), ent.EvtDw1.decode(evt[1])
    assert (d0["ID"], d0["SSV"], d0["SSID"], d0["SID"]) == (Evt.F_TRANSLATION, 1, 3, RID)
    assert (d1["RNW"], d1["PNU"], d1["CLASS"]) == (0, 0, ent.EVT_CLASS_IN)
    assert evt[2] == IOVA


def test_fault_stops_the_run_after_the_translated_prefix() -> None:
    r = rig_with_cd0()
    r.table(1).map(IOVA, 0x20_0000)
    res = r.translate(IOVA + 0x800, 0x1000)
    assert res.runs == ((0x20_0800, 0x800),)
    assert res.fault is not None and res.fault.addr == IOVA + 0x1000


def test_write_to_read_only_mapping_is_f_permission() -> None:
    r = rig_with_cd0()
    r.table(1).map(IOVA, 0x20_0000, ro=True)
    assert r.translate(IOVA, 4).fault is None
    res = r.translate(IOVA, 4, write=True)
    assert res.fault is not None and res.fault.reason == Evt.F_PERMISSION
    (evt,) = r.smmu.events()
    assert ent.EvtDw1.RNW.get(evt[1]) == 0


def test_unprivileged_access_to_privileged_page_is_f_permission() -> None:
    r = rig_with_cd0()
    r.table(1).map(IOVA, 0x20_0000, user=False)
    assert r.translate(IOVA).fault is not None
    assert r.unit.translate(RID, None, True, IOVA, 4, False).fault is None


def test_pan_forbids_privileged_access_to_user_page() -> None:
    r = rig_with_cd0(PAN=1)
    r.table(1).map(IOVA, 0x20_0000)
    res = r.unit.translate(RID, None, True, IOVA, 4, False)
    assert res.fault is not None and res.fault.reason == Evt.F_PERMISSION
    assert r.translate(IOVA).fault is None


def test_aptable_read_only_restricts_the_leaves_below() -> None:
    r = rig_with_cd0()
    pt = r.table(1)
    pt.map(IOVA, 0x20_0000)
    l0 = pt.root + ((IOVA >> 39) & 0x1FF) * 8
    r.m.memory.write_u64(l0, r.m.memory.read_u64(l0) | (1 << 62))
    res = r.translate(IOVA, 4, write=True)
    assert res.fault is not None and res.fault.reason == Evt.F_PERMISSION


def test_had0_disables_aptable() -> None:
    r = Rig()
    words = list(cd_words(r.table(1).root, 1))
    words[1] |= ent.CdDw1.HAD0.mask
    r.cds.write(0, (words[0], words[1], words[2], words[3]))
    pt = r.table(1)
    pt.map(IOVA, 0x20_0000)
    l0 = pt.root + ((IOVA >> 39) & 0x1FF) * 8
    r.m.memory.write_u64(l0, r.m.memory.read_u64(l0) | (3 << 61))
    assert r.translate(IOVA, 4, write=True).fault is None


def test_access_flag_clear_is_f_access() -> None:
    r = rig_with_cd0()
    r.table(1).map(IOVA, 0x20_0000, af=False)
    res = r.translate(IOVA)
    assert res.fault is not None and res.fault.reason == Evt.F_ACCESS


def test_affd_disables_access_flag_faults() -> None:
    r = rig_with_cd0(AFFD=1)
    r.table(1).map(IOVA, 0x20_0000, af=False)
    assert r.translate(IOVA).fault is None


def test_hardware_access_flag_update_sets_af() -> None:
    r = Rig({"httu": 1})
    r.cd(0, 1, HA=1)
    pte = r.table(1).map(IOVA, 0x20_0000, af=False)
    assert r.translate(IOVA).fault is None
    assert r.m.memory.read_u64(pte) & ent.LpaeLeaf.AF.mask


def test_output_beyond_ips_is_f_addr_size() -> None:
    r = rig_with_cd0(IPS=0)
    r.table(1).map(IOVA, 1 << 33)
    res = r.translate(IOVA)
    assert res.fault is not None and res.fault.reason == Evt.F_ADDR_SIZE


def test_leaf_bits_49_48_are_f_addr_size() -> None:
    """A leaf's OA bits above 47 (49:48; 50 is GP and 51 DBM, attributes) with a
    48-bit output; a table descriptor's bits 51:48 are all address bits."""
    r = rig_with_cd0()
    pte = r.table(1).map(IOVA, 0x20_0000)
    r.m.memory.write_u64(pte, r.m.memory.read_u64(pte) | (1 << 49))
    assert reason(r.translate(IOVA)) == Evt.F_ADDR_SIZE
    r.m.memory.write_u64(pte, r.m.memory.read_u64(pte) & ~(1 << 49) | (1 << 50))
    assert r.translate(IOVA).fault is None


def test_table_address_beyond_ips_is_f_addr_size() -> None:
    r = rig_with_cd0(IPS=0)
    pt = r.table(1)
    r.m.memory.write_u64(pt.root + ((IOVA >> 39) & 0x1FF) * 8, (1 << 33) | 3)
    assert reason(r.translate(IOVA)) == Evt.F_ADDR_SIZE


def test_block_at_level_3_and_level_0_are_translation_faults() -> None:
    r = rig_with_cd0()
    pte = r.table(1).map(IOVA, 0x20_0000)
    r.m.memory.write_u64(pte, r.m.memory.read_u64(pte) & ~2)
    assert reason(r.translate(IOVA)) == Evt.F_TRANSLATION
    r.m.memory.write_u64(r.table(1).root + 8 * 5, 0x8000_0000 | 1 | (1 << 10))
    assert reason(r.translate(5 << 39)) == Evt.F_TRANSLATION


@pytest.mark.parametrize(("va_bits", "levels"), [(48, 4), (39, 3), (30, 2), (25, 2)])
def test_start_level_follows_t0sz(va_bits: int, levels: int) -> None:
    r = Rig()
    pt = PageTable(r.m, r.pages, va_bits)
    r.cds.write(0, cd_words(pt.root, 7, t0sz=64 - va_bits))
    iova = (1 << va_bits) - 0x1000
    pt.map(iova, 0x20_0000)
    assert r.translate(iova).runs == ((0x20_0000, 4),)
    assert 4 - pt.start == levels


def test_iova_above_the_t0sz_range_is_f_translation() -> None:
    r = Rig()
    r.cds.write(0, cd_words(r.table(1).root, 1, t0sz=25))
    assert reason(r.translate(1 << 39)) == Evt.F_TRANSLATION


def test_top_byte_ignore_allows_tagged_addresses() -> None:
    r = rig_with_cd0(TBI0=1)
    r.table(1).map(IOVA, 0x20_0000)
    assert r.translate((0x5A << 56) | IOVA).runs == ((0x20_0000, 4),)


def test_epd0_makes_the_lower_half_fault_without_a_walk() -> None:
    r = rig_with_cd0(EPD0=1)
    assert reason(r.translate(IOVA)) == Evt.F_TRANSLATION


def test_upper_half_faults_with_epd1() -> None:
    r = rig_with_cd0()
    assert reason(r.translate(0xFFFF_FFFF_FFFF_0000)) == Evt.F_TRANSLATION


def test_upper_half_walks_ttb1_when_enabled() -> None:
    r = Rig()
    pt1 = PageTable(r.m, r.pages)
    d0, d1, _d2, d3 = cd_words(r.table(1).root, 1, EPD1=0, T1SZ=16, TG1=ent.TG1_4K)
    r.cds.write(0, (d0, d1, ent.CdDw2.encode(TTB1=pt1.root >> 4), d3))
    va = 0xFFFF_8000_0000_1000
    pt1.map(va, 0x20_0000)
    assert r.translate(va).runs == ((0x20_0000, 4),)


def test_output_outside_ram_is_a_bus_fault_after_the_ram_part() -> None:
    r = rig_with_cd0()
    r.table(1).map(IOVA, RAM - 0x1000)
    r.table(1).map(IOVA + 0x1000, RAM)
    res = r.translate(IOVA, 0x2000)
    assert res.runs == ((RAM - 0x1000, 0x1000),)
    assert res.fault is not None and res.fault.reason == DMA_FAULT_BUS


def test_cd_r_clear_suppresses_translation_events() -> None:
    r = rig_with_cd0(R=0)
    assert r.translate(IOVA).fault is not None
    assert r.smmu.events() == []
    assert r.unit.stats.faults_suppressed == 1


def test_cd_a_clear_terminates_raz_wi() -> None:
    r = rig_with_cd0(A=0)
    res = r.translate(IOVA)
    assert res.fault is not None and res.fault.detail == "F_TRANSLATION (RAZ/WI)"


# -- stream table --------------------------------------------------------------------------
def test_two_level_stream_table_translates() -> None:
    r = Rig(two_level=True)
    r.cd(0, 1)
    r.table(1).map(IOVA, 0x20_0000)
    assert r.translate(IOVA).runs == ((0x20_0000, 4),)


def test_invalid_l1std_is_c_bad_streamid() -> None:
    r = Rig(two_level=True)
    res = r.unit.translate(0x300, None, False, IOVA, 4, False)
    assert res.fault is not None and res.fault.reason == Evt.C_BAD_STREAMID
    assert r.smmu.event_ids() == [Evt.C_BAD_STREAMID]


def test_sid_beyond_the_stream_table_is_c_bad_streamid() -> None:
    r = Rig()
    res = r.unit.translate(0x1000, None, False, IOVA, 4, False)
    assert res.fault is not None and res.fault.reason == Evt.C_BAD_STREAMID
    assert r.smmu.event_ids() == [Evt.C_BAD_STREAMID]


def test_bad_streamid_is_not_recorded_without_recinvsid() -> None:
    r = Rig()
    reg_write(r.m, sr.CR2_OFF, 0)  # CR2 is not guarded by SMMUEN in this model
    r.unit.translate(0x1000, None, False, IOVA, 4, False)
    assert r.smmu.events() == []


def test_invalid_ste_is_c_bad_ste() -> None:
    r = Rig()
    res = r.unit.translate(RID2, None, False, IOVA, 4, False)
    assert res.fault is not None and res.fault.reason == Evt.C_BAD_STE
    assert r.smmu.event_ids() == [Evt.C_BAD_STE]


def test_abort_ste_aborts_without_an_event() -> None:
    r = Rig()
    r.smmu.write_ste(RID2, ste_abort())
    res = r.unit.translate(RID2, None, False, IOVA, 4, False)
    assert res.fault is not None and res.fault.reason == Evt.ABORT
    assert r.smmu.events() == []


def test_bypass_ste_passes_addresses_through() -> None:
    r = Rig()
    r.smmu.write_ste(RID2, ste_bypass())
    assert r.unit.translate(RID2, None, False, 0x5000, 16, True).runs == ((0x5000, 16),)


def test_bypass_ste_with_a_substream_is_c_bad_substreamid() -> None:
    r = Rig()
    r.smmu.write_ste(RID2, ste_bypass())
    res = r.unit.translate(RID2, 1, False, 0x5000, 16, True)
    assert reason(res) == Evt.C_BAD_SUBSTREAMID


@pytest.mark.parametrize(
    "ste",
    [
        (ent.SteDw0.encode(V=1, CONFIG=ent.STE_CFG_S2), 0, 0),
        (ent.SteDw0.encode(V=1, CONFIG=ent.STE_CFG_S1, S1CDMAX=21), 0, 0),
        (ent.SteDw0.encode(V=1, CONFIG=ent.STE_CFG_S1, S1CTXPTR=1 << 43), 0, 0),
        (ent.SteDw0.encode(V=1, CONFIG=ent.STE_CFG_S1), ent.SteDw1.encode(S1STALLD=1), 0),
        (ent.SteDw0.encode(V=1, CONFIG=ent.STE_CFG_S1), ent.SteDw1.encode(STRW=2), 0),
    ],
    ids=["stage2", "cdmax-too-big", "ctxptr-beyond-oas", "s1stalld", "strw-el2"],
)
def test_illegal_ste_is_c_bad_ste(ste: tuple[int, int, int]) -> None:
    r = Rig()
    r.smmu.write_ste(RID2, ste)
    assert reason(r.unit.translate(RID2, None, False, IOVA, 4, False)) == Evt.C_BAD_STE


def test_two_level_cd_format_without_cd2l_is_c_bad_ste() -> None:
    m, unit = make({"cd2l": False})
    pages = Pages(m)
    smmu = Smmu(m, unit, pages)
    cds = CdTable(m, pages, 12, ent.S1FMT_64K_L2)
    smmu.write_ste(RID, cds.ste())
    assert reason(unit.translate(RID, 1, False, IOVA, 4, False)) == Evt.C_BAD_STE


def test_vmid_above_8_bits_without_vmid16_is_c_bad_ste() -> None:
    m, unit = make({"vmid16": False})
    pages = Pages(m)
    smmu = Smmu(m, unit, pages)
    smmu.write_ste(RID, ste_s1(0x10_0000, vmid=0x100))
    assert reason(unit.translate(RID, None, False, 0, 4, False)) == Evt.C_BAD_STE


def test_ste_fetch_outside_ram_is_f_ste_fetch_with_the_address() -> None:
    m, unit = make()
    pages = Pages(m)
    smmu = Smmu(m, unit, pages)
    smmu.cr0(sr.CR0.CMDQEN.mask | sr.CR0.EVTQEN.mask)
    reg_write(m, sr.STRTAB_BASE_OFF, 1 << 40, 8)
    smmu.cr0(sr.CR0.CMDQEN.mask | sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)
    assert reason(unit.translate(RID, None, False, 0, 4, False)) == Evt.F_STE_FETCH
    (evt,) = smmu.events()
    assert ent.EvtDw3.FETCH_ADDR.get(evt[3]) << 3 == (1 << 40) + 64 * RID


# -- substreams (facts A7.3, IHI 0070 §5.2 S1DSS) ------------------------------------------
def test_ssid_at_or_above_2_pow_s1cdmax_is_c_bad_substreamid() -> None:
    r = rig_with_cd0()
    res = r.translate(IOVA, pasid=16)
    assert res.fault is not None and res.fault.reason == Evt.C_BAD_SUBSTREAMID
    (evt,) = r.smmu.events()
    assert ent.EvtDw0.decode(evt[0])["SSID"] == 16


def test_substream_with_s1cdmax_zero_is_c_bad_substreamid() -> None:
    r = Rig(cdmax=0)
    r.cd(0, 1)
    assert reason(r.translate(IOVA, pasid=1)) == Evt.C_BAD_SUBSTREAMID


def test_s1cdmax_zero_sends_untagged_traffic_to_the_single_cd() -> None:
    r = Rig(cdmax=0, dss=ent.S1DSS_TERMINATE)
    r.cd(0, 1)
    r.table(1).map(IOVA, 0x20_0000)
    assert r.translate(IOVA).runs == ((0x20_0000, 4),)


def test_pasid_uses_its_own_cd() -> None:
    r = rig_with_cd0()
    r.cd(5, 2)
    r.table(1).map(IOVA, 0x20_0000)
    r.table(2).map(IOVA, 0x30_0000)
    assert r.translate(IOVA).runs == ((0x20_0000, 4),)
    assert r.translate(IOVA, pasid=5).runs == ((0x30_0000, 4),)


def test_s1dss_terminate_aborts_untagged_traffic_with_f_stream_disabled() -> None:
    r = Rig(dss=ent.S1DSS_TERMINATE)
    r.cd(0, 1)
    assert reason(r.translate(IOVA)) == Evt.F_STREAM_DISABLED
    assert r.smmu.event_ids() == [Evt.F_STREAM_DISABLED]


def test_s1dss_reserved_value_behaves_as_terminate() -> None:
    r = Rig(dss=3)
    assert reason(r.translate(IOVA)) == Evt.F_STREAM_DISABLED


def test_s1dss_bypass_passes_untagged_traffic_and_translates_pasids() -> None:
    r = Rig(dss=ent.S1DSS_BYPASS)
    r.cd(1, 1)
    r.table(1).map(IOVA, 0x20_0000)
    assert r.translate(0x7000, 8).runs == ((0x7000, 8),)
    assert r.translate(IOVA, pasid=1).runs == ((0x20_0000, 4),)


def test_s1dss_substream0_makes_ssid_0_unavailable() -> None:
    r = rig_with_cd0()
    r.table(1).map(IOVA, 0x20_0000)
    assert r.translate(IOVA).runs == ((0x20_0000, 4),)
    assert reason(r.translate(IOVA, pasid=0)) == Evt.F_STREAM_DISABLED


def test_invalid_cd_is_c_bad_cd() -> None:
    r = rig_with_cd0()
    assert reason(r.translate(IOVA, pasid=2)) == Evt.C_BAD_CD
    assert r.smmu.event_ids() == [Evt.C_BAD_CD]


@pytest.mark.parametrize(
    "fields",
    [
        {"AA64": 0},
        {"ENDI": 1},
        {"TG0": 1},
        {"t0sz": 15},
        {"t0sz": 40},
        {"HA": 1},
        {"HD": 1},
        {"S": 1},
        {"IPS": 7},
        {"ips": 0, "t0sz": 16, "TTB0_HIGH": 1},
        {"EPD1": 0, "T1SZ": 16, "TG1": 0},
    ],
    ids=lambda f: ",".join(f),
)
def test_illegal_cd_is_c_bad_cd(fields: dict[str, int]) -> None:
    r = Rig()
    root = r.table(1).root
    if fields.pop("TTB0_HIGH", 0):
        root = 1 << 33
    t0sz = fields.pop("t0sz", 16)
    ips = fields.pop("ips", 5)
    r.cds.write(0, cd_words(root, 1, t0sz=t0sz, ips=ips, **fields))
    assert reason(r.translate(IOVA)) == Evt.C_BAD_CD


def test_asid_above_8_bits_without_asid16_is_c_bad_cd() -> None:
    r = Rig({"asid16": False})
    r.cd(0, 0x100)
    assert reason(r.translate(IOVA)) == Evt.C_BAD_CD


def test_ips_52_on_smmuv3_0_behaves_as_48() -> None:
    r = Rig({"aidr": 0})
    r.cd(0, 1, IPS=6)
    r.table(1).map(IOVA, 0x20_0000)
    assert r.translate(IOVA).fault is None


@pytest.mark.parametrize("fmt", [ent.S1FMT_64K_L2, ent.S1FMT_4K_L2])
def test_two_level_cd_table_translates(fmt: int) -> None:
    r = Rig(cdmax=12, fmt=fmt)
    r.cd(0, 1)
    r.cd(0x801, 2)
    r.table(2).map(IOVA, 0x30_0000)
    assert r.translate(IOVA, pasid=0x801).runs == ((0x30_0000, 4),)


def test_invalid_l1cd_is_c_bad_substreamid() -> None:
    r = Rig(cdmax=12, fmt=ent.S1FMT_64K_L2)
    r.cd(0, 1)
    assert reason(r.translate(IOVA, pasid=0x801)) == Evt.C_BAD_SUBSTREAMID


def test_reserved_s1fmt_behaves_as_linear() -> None:
    r = Rig(cdmax=4, fmt=0)
    r.smmu.write_ste(RID, ste_s1(r.cds.base, 4, 3))
    r.cd(2, 1)
    r.table(1).map(IOVA, 0x20_0000)
    assert r.translate(IOVA, pasid=2).runs == ((0x20_0000, 4),)


def test_cd_fetch_outside_ram_is_f_cd_fetch() -> None:
    r = Rig()
    r.smmu.write_ste(RID2, ste_s1(1 << 40))
    assert reason(r.unit.translate(RID2, None, False, 0, 4, False)) == Evt.F_CD_FETCH


def test_walk_outside_ram_is_f_walk_eabt() -> None:
    r = Rig()
    r.cds.write(0, cd_words(1 << 40, 1))
    assert reason(r.translate(IOVA)) == Evt.F_WALK_EABT
    (evt,) = r.smmu.events()
    assert ent.EvtDw1.CLASS.get(evt[1]) == ent.EVT_CLASS_TT
