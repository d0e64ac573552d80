"""Bit layouts of registers, STE/CD/L1 descriptors, commands, events and LPAE
descriptors against the facts file tables (A1-A10), and the ID values a config implies."""

from __future__ import annotations

import pytest

from hw.regs import Register
from hw.smmuv3 import Smmuv3Config
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.entries import Evt, Op
from tests.hw.smmuv3.helpers import BASE, make, reg_read


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("IDR0_OFF", 0x000),
        ("IDR1_OFF", 0x004),
        ("IDR3_OFF", 0x00C),
        ("IDR5_OFF", 0x014),
        ("IIDR_OFF", 0x018),
        ("CR0_OFF", 0x020),
        ("CR0ACK_OFF", 0x024),
        ("CR1_OFF", 0x028),
        ("CR2_OFF", 0x02C),
        ("GBPA_OFF", 0x044),
        ("IRQ_CTRL_OFF", 0x050),
        ("IRQ_CTRLACK_OFF", 0x054),
        ("GERROR_OFF", 0x060),
        ("GERRORN_OFF", 0x064),
        ("GERROR_IRQ_CFG0_OFF", 0x068),
        ("STRTAB_BASE_OFF", 0x080),
        ("STRTAB_BASE_CFG_OFF", 0x088),
        ("CMDQ_BASE_OFF", 0x090),
        ("CMDQ_PROD_OFF", 0x098),
        ("CMDQ_CONS_OFF", 0x09C),
        ("EVTQ_BASE_OFF", 0x0A0),
        ("EVTQ_IRQ_CFG0_OFF", 0x0B0),
        ("EVTQ_PROD_OFF", 0x100A8),
        ("EVTQ_CONS_OFF", 0x100AC),
    ],
)
def test_register_offsets_match_facts_a1(name: str, offset: int) -> None:
    assert getattr(sr, name) == offset


@pytest.mark.parametrize(
    ("cls", "field", "msb", "lsb"),
    [
        (sr.IDR0, "S1P", 1, 1),
        (sr.IDR0, "TTF", 3, 2),
        (sr.IDR0, "COHACC", 4, 4),
        (sr.IDR0, "HTTU", 7, 6),
        (sr.IDR0, "ATS", 10, 10),
        (sr.IDR0, "ASID16", 12, 12),
        (sr.IDR0, "MSI", 13, 13),
        (sr.IDR0, "SEV", 14, 14),
        (sr.IDR0, "PRI", 16, 16),
        (sr.IDR0, "VMID16", 18, 18),
        (sr.IDR0, "CD2L", 19, 19),
        (sr.IDR0, "TTENDIAN", 22, 21),
        (sr.IDR0, "STALL_MODEL", 25, 24),
        (sr.IDR0, "ST_LEVEL", 28, 27),
        (sr.IDR1, "SIDSIZE", 5, 0),
        (sr.IDR1, "SSIDSIZE", 10, 6),
        (sr.IDR1, "EVTQS", 20, 16),
        (sr.IDR1, "CMDQS", 25, 21),
        (sr.IDR3, "RIL", 10, 10),
        (sr.IDR5, "OAS", 2, 0),
        (sr.IDR5, "GRAN4K", 4, 4),
        (sr.CR0, "SMMUEN", 0, 0),
        (sr.CR0, "EVTQEN", 2, 2),
        (sr.CR0, "CMDQEN", 3, 3),
        (sr.CR2, "RECINVSID", 1, 1),
        (sr.GBPA, "ABORT", 20, 20),
        (sr.GBPA, "UPDATE", 31, 31),
        (sr.IRQ_CTRL, "EVTQ_IRQEN", 2, 2),
        (sr.GERROR, "CMDQ_ERR", 0, 0),
        (sr.GERROR, "EVTQ_ABT_ERR", 2, 2),
        (sr.GERROR, "SFM_ERR", 8, 8),
        (sr.STRTAB_BASE, "ADDR", 51, 6),
        (sr.STRTAB_BASE, "RA", 62, 62),
        (sr.STRTAB_BASE_CFG, "LOG2SIZE", 5, 0),
        (sr.STRTAB_BASE_CFG, "SPLIT", 10, 6),
        (sr.STRTAB_BASE_CFG, "FMT", 17, 16),
        (sr.QBASE, "LOG2SIZE", 4, 0),
        (sr.QBASE, "ADDR", 51, 5),
        (sr.CMDQ_CONS, "ERR", 30, 24),
        (sr.EVTQ_PROD, "OVFLG", 31, 31),
        (sr.EVTQ_CONS, "OVACKFLG", 31, 31),
        (ent.L1Std, "SPAN", 4, 0),
        (ent.L1Std, "L2PTR", 51, 6),
        (ent.SteDw0, "V", 0, 0),
        (ent.SteDw0, "CONFIG", 3, 1),
        (ent.SteDw0, "S1FMT", 5, 4),
        (ent.SteDw0, "S1CTXPTR", 51, 6),
        (ent.SteDw0, "S1CDMAX", 63, 59),
        (ent.SteDw1, "S1DSS", 1, 0),
        (ent.SteDw1, "S1CIR", 3, 2),
        (ent.SteDw1, "S1COR", 5, 4),
        (ent.SteDw1, "S1CSH", 7, 6),
        (ent.SteDw1, "S1STALLD", 27, 27),
        (ent.SteDw1, "EATS", 29, 28),
        (ent.SteDw1, "STRW", 31, 30),
        (ent.SteDw1, "SHCFG", 45, 44),
        (ent.SteDw2, "S2VMID", 15, 0),
        (ent.L1Cd, "V", 0, 0),
        (ent.L1Cd, "L2PTR", 51, 12),
        (ent.CdDw0, "T0SZ", 5, 0),
        (ent.CdDw0, "TG0", 7, 6),
        (ent.CdDw0, "IR0", 9, 8),
        (ent.CdDw0, "OR0", 11, 10),
        (ent.CdDw0, "SH0", 13, 12),
        (ent.CdDw0, "EPD0", 14, 14),
        (ent.CdDw0, "ENDI", 15, 15),
        (ent.CdDw0, "EPD1", 30, 30),
        (ent.CdDw0, "V", 31, 31),
        (ent.CdDw0, "IPS", 34, 32),
        (ent.CdDw0, "AFFD", 35, 35),
        (ent.CdDw0, "TBI0", 38, 38),
        (ent.CdDw0, "PAN", 40, 40),
        (ent.CdDw0, "AA64", 41, 41),
        (ent.CdDw0, "HD", 42, 42),
        (ent.CdDw0, "HA", 43, 43),
        (ent.CdDw0, "S", 44, 44),
        (ent.CdDw0, "R", 45, 45),
        (ent.CdDw0, "A", 46, 46),
        (ent.CdDw0, "ASET", 47, 47),
        (ent.CdDw0, "ASID", 63, 48),
        (ent.CdDw1, "HAD0", 1, 1),
        (ent.CdDw1, "TTB0", 51, 4),
        (ent.CmdOp, "OP", 7, 0),
        (ent.CmdCfgiCd0, "SSID", 31, 12),
        (ent.CmdCfgiCd0, "SID", 63, 32),
        (ent.CmdCfgiLeaf1, "LEAF", 0, 0),
        (ent.CmdCfgiRange1, "RANGE", 4, 0),
        (ent.CmdTlbi0, "NUM", 16, 12),
        (ent.CmdTlbi0, "SCALE", 24, 20),
        (ent.CmdTlbi0, "VMID", 47, 32),
        (ent.CmdTlbi0, "ASID", 63, 48),
        (ent.CmdTlbiVa1, "LEAF", 0, 0),
        (ent.CmdTlbiVa1, "TTL", 9, 8),
        (ent.CmdTlbiVa1, "TG", 11, 10),
        (ent.CmdTlbiVa1, "ADDR", 63, 12),
        (ent.CmdSync0, "CS", 13, 12),
        (ent.CmdSync0, "MSH", 23, 22),
        (ent.CmdSync0, "MSIATTR", 27, 24),
        (ent.CmdSync0, "MSIDATA", 63, 32),
        (ent.CmdSync1, "MSIADDR", 51, 2),
        (ent.EvtDw0, "ID", 7, 0),
        (ent.EvtDw0, "SSV", 11, 11),
        (ent.EvtDw0, "SSID", 31, 12),
        (ent.EvtDw0, "SID", 63, 32),
        (ent.EvtDw1, "STALL", 31, 31),
        (ent.EvtDw1, "PNU", 33, 33),
        (ent.EvtDw1, "IND", 34, 34),
        (ent.EvtDw1, "RNW", 35, 35),
        (ent.EvtDw1, "S2", 39, 39),
        (ent.EvtDw1, "CLASS", 41, 40),
        (ent.EvtDw1, "TT_READ", 44, 44),
        (ent.EvtDw3, "FETCH_ADDR", 51, 3),
        (ent.LpaeLeaf, "ATTRINDX", 4, 2),
        (ent.LpaeLeaf, "AP1", 6, 6),
        (ent.LpaeLeaf, "AP2", 7, 7),
        (ent.LpaeLeaf, "SH", 9, 8),
        (ent.LpaeLeaf, "AF", 10, 10),
        (ent.LpaeLeaf, "NG", 11, 11),
        (ent.LpaeLeaf, "OA", 47, 12),
        (ent.LpaeLeaf, "DBM", 51, 51),
        (ent.LpaeLeaf, "CONT", 52, 52),
        (ent.LpaeLeaf, "PXN", 53, 53),
        (ent.LpaeLeaf, "XN", 54, 54),
        (ent.LpaeTable, "APTABLE", 62, 61),
    ],
)
def test_field_positions_match_facts(cls: type[Register], field: str, msb: int, lsb: int) -> None:
    f = getattr(cls, field)
    assert (f.msb, f.lsb) == (msb, lsb)


@pytest.mark.parametrize(
    ("op", "code"),
    [
        (Op.PREFETCH_CONFIG, 0x01),
        (Op.CFGI_STE, 0x03),
        (Op.CFGI_STE_RANGE, 0x04),
        (Op.CFGI_CD, 0x05),
        (Op.CFGI_CD_ALL, 0x06),
        (Op.TLBI_NH_ALL, 0x10),
        (Op.TLBI_NH_ASID, 0x11),
        (Op.TLBI_NH_VA, 0x12),
        (Op.TLBI_EL2_ALL, 0x20),
        (Op.TLBI_S12_VMALL, 0x28),
        (Op.TLBI_NSNH_ALL, 0x30),
        (Op.ATC_INV, 0x40),
        (Op.CMD_SYNC, 0x46),
    ],
)
def test_command_opcodes_match_facts_a8(op: Op, code: int) -> None:
    assert int(op) == code


@pytest.mark.parametrize(
    ("evt", "code"),
    [
        (Evt.C_BAD_STREAMID, 0x02),
        (Evt.F_STE_FETCH, 0x03),
        (Evt.C_BAD_STE, 0x04),
        (Evt.F_STREAM_DISABLED, 0x06),
        (Evt.C_BAD_SUBSTREAMID, 0x08),
        (Evt.F_CD_FETCH, 0x09),
        (Evt.C_BAD_CD, 0x0A),
        (Evt.F_WALK_EABT, 0x0B),
        (Evt.F_TRANSLATION, 0x10),
        (Evt.F_ADDR_SIZE, 0x11),
        (Evt.F_ACCESS, 0x12),
        (Evt.F_PERMISSION, 0x13),
    ],
)
def test_event_ids_match_facts_a9(evt: Evt, code: int) -> None:
    assert int(evt) == code


def test_structure_sizes_match_facts() -> None:
    sizes = (ent.STE_SIZE, ent.CD_SIZE, ent.L1_DESC_SIZE, ent.CMD_SIZE, ent.EVT_SIZE)
    assert sizes == (64, 64, 8, 16, 32)


def test_unit_is_an_iort_node_with_two_64k_pages() -> None:
    m, unit = make()
    assert unit.table == "IORT"
    assert unit.register_size == 0x20000
    assert m.firmware.iommus[0].table == "IORT"


def test_default_id_registers_describe_the_c3_subset() -> None:
    m, _unit = make()
    idr0 = reg_read(m, sr.IDR0_OFF)
    f = sr.IDR0.decode(idr0)
    assert (f["S1P"], f["S2P"], f["TTF"], f["CD2L"], f["ST_LEVEL"]) == (1, 0, 2, 1, 1)
    assert (f["ATS"], f["PRI"], f["STALL_MODEL"], f["TTENDIAN"], f["HYP"]) == (0, 0, 1, 2, 0)
    idr1 = sr.IDR1.decode(reg_read(m, sr.IDR1_OFF))
    assert (idr1["SIDSIZE"], idr1["SSIDSIZE"], idr1["CMDQS"], idr1["EVTQS"]) == (16, 20, 8, 7)
    assert sr.IDR5.decode(reg_read(m, sr.IDR5_OFF))["OAS"] == 5
    assert reg_read(m, sr.IDR3_OFF) == 0


def test_id_registers_follow_the_config() -> None:
    m, _unit = make({"ssidsize": 10, "cd2l": False, "ril": True, "oas": 2, "iidr": 0x1234})
    idr1 = sr.IDR1.decode(reg_read(m, sr.IDR1_OFF))
    assert idr1["SSIDSIZE"] == 10
    assert sr.IDR0.CD2L.get(reg_read(m, sr.IDR0_OFF)) == 0
    assert sr.IDR3.RIL.get(reg_read(m, sr.IDR3_OFF)) == 1
    assert sr.IDR5.OAS.get(reg_read(m, sr.IDR5_OFF)) == 2
    assert m.mmio_read(BASE + sr.IIDR_OFF, 4) == 0x1234


@pytest.mark.parametrize(
    "config",
    [
        {"bogus": 1},
        {"msi": 1},
        {"sidsize": 33},
        {"ssidsize": -1},
        {"oas": 7},
        {"httu": 3},
        {"s1p": False},
        {"ats": True},
        {"aidr": 0, "oas": 6},
        {"cmdqs": True},
    ],
)
def test_bad_config_is_rejected(config: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="smmuv3 config"):
        Smmuv3Config.from_mapping(config)
