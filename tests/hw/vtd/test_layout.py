"""Bit layouts of registers, entries and descriptors against the facts file tables."""

from __future__ import annotations

import pytest

from hw.vtd import VtdConfig
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from tests.hw.vtd.helpers import BASE, make, reg_read


@pytest.mark.parametrize(
    ("cls", "field", "msb", "lsb"),
    [
        (vr.CAP, "ND", 2, 0),
        (vr.CAP, "CM", 7, 7),
        (vr.CAP, "SAGAW", 12, 8),
        (vr.CAP, "MGAW", 21, 16),
        (vr.CAP, "FRO", 33, 24),
        (vr.CAP, "SLLPS", 37, 34),
        (vr.CAP, "PSI", 39, 39),
        (vr.CAP, "NFR", 47, 40),
        (vr.CAP, "MAMV", 53, 48),
        (vr.CAP, "FL1GP", 56, 56),
        (vr.CAP, "FL5LP", 60, 60),
        (vr.ECAP, "QI", 1, 1),
        (vr.ECAP, "DT", 2, 2),
        (vr.ECAP, "PT", 6, 6),
        (vr.ECAP, "IRO", 17, 8),
        (vr.ECAP, "PSS", 39, 35),
        (vr.ECAP, "PASID", 40, 40),
        (vr.ECAP, "SMTS", 43, 43),
        (vr.ECAP, "SLTS", 46, 46),
        (vr.ECAP, "FLTS", 47, 47),
        (vr.GCMD, "TE", 31, 31),
        (vr.GCMD, "SRTP", 30, 30),
        (vr.GCMD, "WBF", 27, 27),
        (vr.GCMD, "QIE", 26, 26),
        (vr.RTADDR, "TTM", 11, 10),
        (vr.CCMD, "SID", 31, 16),
        (vr.CCMD, "FM", 33, 32),
        (vr.CCMD, "CAIG", 60, 59),
        (vr.CCMD, "CIRG", 62, 61),
        (vr.FSTS, "FRI", 15, 8),
        (vr.FSTS, "IQE", 4, 4),
        (vr.IQA, "DW", 11, 11),
        (vr.IQA, "QS", 2, 0),
        (vr.IQH, "QH", 18, 4),
        (vr.IOTLB, "DID", 47, 32),
        (vr.IOTLB, "IIRG", 61, 60),
        (vr.IOTLB, "IAIG", 58, 57),
        (vr.FRCD_HI, "FR", 39, 32),
        (vr.FRCD_HI, "PV", 59, 40),
        (vr.FRCD_HI, "PP", 31, 31),
        (vr.FRCD_HI, "T", 62, 62),
        (vr.FRCD_HI, "F", 63, 63),
        (ent.SmCtxLo, "PDTS", 11, 9),
        (ent.SmCtxLo, "PASIDE", 3, 3),
        (ent.SmCtxLo, "DTE", 2, 2),
        (ent.SmCtxHi, "RID_PASID", 19, 0),
        (ent.LegacyCtxLo, "TT", 3, 2),
        (ent.LegacyCtxHi, "AW", 2, 0),
        (ent.LegacyCtxHi, "DID", 23, 8),
        (ent.PasidQw0, "AW", 4, 2),
        (ent.PasidQw0, "PGTT", 8, 6),
        (ent.PasidQw0, "SSADE", 9, 9),
        (ent.PasidQw1, "DID", 15, 0),
        (ent.PasidQw1, "PGSNP", 24, 24),
        (ent.PasidQw2, "SRE", 0, 0),
        (ent.PasidQw2, "FSPM", 3, 2),
        (ent.PasidQw2, "WPE", 4, 4),
        (ent.FlPte, "PS", 7, 7),
        (ent.FlPte, "XD", 63, 63),
        (ent.SlPte, "D", 9, 9),
        (ent.SlPte, "SNP", 11, 11),
        (ent.QiCcQw0, "SID", 47, 32),
        (ent.QiIotlbQw0, "DID", 31, 16),
        (ent.QiAddrQw1, "IH", 6, 6),
        (ent.QiDevTlbQw0, "MIP", 20, 16),
        (ent.QiIecQw0, "IIDX", 47, 32),
        (ent.QiWaitQw0, "STDATA", 63, 32),
        (ent.QiWaitQw1, "STADDR", 63, 2),
        (ent.QiPiotlbQw0, "PASID", 51, 32),
        (ent.QiPcQw0, "G", 5, 4),
        (ent.QiPdevTlbQw0, "SID", 31, 16),
        (ent.QiPdevTlbQw1, "S", 11, 11),
    ],
)
def test_field_positions_match_facts(cls: type, field: str, msb: int, lsb: int) -> None:
    f = getattr(cls, field)
    assert (f.msb, f.lsb) == (msb, lsb)


def test_reserved_masks_of_entries_match_facts() -> None:
    assert ent.RootLo.RSVDZ_MASK == 0xFFE
    assert ent.SmCtxLo.RSVDZ_MASK == 0x1E0
    assert ent.SmCtxHi.RSVDZ_MASK == 0xFFFF_FFFF_FFE0_0000
    assert ent.PasidQw0.RSVDZ_MASK == 0xC00
    assert ent.PasidQw1.RSVDZ_MASK == 0x7F_0000
    assert ent.PasidQw2.RSVDZ_MASK == 0xF00
    assert ent.LegacyCtxLo.RSVDZ_MASK == 0xFF0
    assert ent.LegacyCtxHi.RSVDZ_MASK == 0xFFFF_FFFF_FF00_0080


def test_cap_and_ecap_registers_read_back_config() -> None:
    m, _unit = make()
    cap = reg_read(m, vr.CAP_OFF, 8)
    ecap = reg_read(m, vr.ECAP_OFF, 8)
    c = vr.CAP.decode(cap)
    e = vr.ECAP.decode(ecap)
    assert (c["ND"], c["SAGAW"], c["MGAW"], c["NFR"]) == (6, 0b0110, 47, 7)
    assert c["PSI"] == 1 and c["FL1GP"] == 1 and c["SLLPS"] == 0b11
    assert (e["SMTS"], e["QI"], e["PASID"], e["PSS"], e["FLTS"], e["SLTS"]) == (1, 1, 1, 19, 1, 1)


def test_fault_and_iotlb_registers_sit_where_cap_and_ecap_say() -> None:
    m, unit = make({"nfr": 4})
    fro = vr.CAP.FRO.get(reg_read(m, vr.CAP_OFF, 8)) * 16
    iro = vr.ECAP.IRO.get(reg_read(m, vr.ECAP_OFF, 8)) * 16
    assert unit.regs.slot("FRCD0_LO").offset == fro
    assert unit.regs.slot("FRCD3_HI").offset == fro + 3 * 16 + 8
    assert unit.regs.slot("IVA").offset == iro
    assert unit.regs.slot("IOTLB").offset == iro + 8
    assert unit.register_size >= fro + 4 * 16


def test_machine_places_unit_at_window_base() -> None:
    m, unit = make()
    assert unit.base == BASE and unit.table == "DMAR"
    assert m.firmware.tables == ("DMAR",)


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ValueError, match="'frobnicate'"):
        make({"frobnicate": 1})


@pytest.mark.parametrize(
    ("cfg", "text"),
    [
        ({"sagaw": 1}, "reserved"),
        ({"mgaw": 30}, "mgaw"),
        ({"qi": False}, "needs qi"),
        ({"smts": False}, "pasid"),
        ({"sagaw": 0}, "sagaw"),
        ({"sagaw": 0b1110}, "5-level"),
        ({"cm": 1}, "true/false"),
    ],
)
def test_bad_config_values_raise(cfg: dict[str, object], text: str) -> None:
    with pytest.raises(ValueError, match=text):
        VtdConfig.from_mapping(cfg)


def test_legacy_config_reports_version_1() -> None:
    m, _unit = make({"smts": False, "pasid": False})
    assert reg_read(m, vr.VER_OFF) == 0x10
