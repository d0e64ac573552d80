"""A unit given CAP/ECAP/VER verbatim: exact read-back, derived layout, refused bits."""

from __future__ import annotations

import re
from typing import Any

import pytest

from hw.vtd import VtdConfig
from hw.vtd import registers as vr
from tests.hw.vtd.helpers import make, reg_read

CAP = 0xD2008C222F0606  # QEMU 7.2 x-scalable-mode=on,aw-bits=48
ECAP = 0x480080000F42  # QEMU 7.2 less IR (bit 3) and MHMV (23:20)
RAW = {"cap": hex(CAP), "ecap": hex(ECAP), "ver": "0x10"}


def test_registers_read_back_exactly_the_given_values() -> None:
    m, _ = make(RAW)
    assert reg_read(m, vr.CAP_OFF, 8) == CAP
    assert reg_read(m, vr.ECAP_OFF, 8) == ECAP
    assert reg_read(m, vr.VER_OFF) == 0x10


def test_fault_records_and_iotlb_registers_sit_where_fro_and_iro_say() -> None:
    """CAP.FRO=0x22, NFR=0 (one record); ECAP.IRO=0xF: FRCD0 at 0x220, IVA/IOTLB at 0xF0/0xF8."""
    m, unit = make(RAW)
    slots = {s.name: s.offset for s in unit.regs.slots()}
    assert slots["FRCD0_LO"] == 0x22 * 16 == 0x220 and slots["FRCD0_HI"] == 0x228
    assert "FRCD1_LO" not in slots
    assert slots["IVA"] == 0xF * 16 == 0xF0 and slots["IOTLB"] == 0xF8
    assert unit.register_size == 0x1000
    assert reg_read(m, 0x228, 8) == 0  # no fault recorded yet


def test_knobs_follow_the_registers() -> None:
    cfg = VtdConfig.from_mapping(RAW)
    assert (cfg.nd, cfg.sagaw, cfg.mgaw, cfg.sllps, cfg.mamv, cfg.nfr) == (6, 6, 48, 3, 18, 1)
    assert cfg.psi and cfg.smts and cfg.slts and cfg.qi and cfg.pt and cfg.srs
    assert not (cfg.flts or cfg.pasid or cfg.dt or cfg.fl1gp or cfg.coherent or cfg.prs)
    assert cfg.pss == 0


def test_ver_defaults_by_mode_when_not_given() -> None:
    assert VtdConfig.from_mapping({"cap": hex(CAP), "ecap": hex(ECAP)}).ver == 0x30


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {**RAW, "ecap": hex(ECAP | 1 << 26)},
            "vtd config nest: nested translation needs smts, flts and slts",
        ),
        ({**RAW, "ecap": hex(ECAP | 1 << 25)}, "vtd.ecap bit 25 (MTS, memory type support) is not"),
        ({**RAW, "ecap": hex(ECAP & ~(1 << 3) | 1 << 4)}, "extended interrupt mode needs ir"),
        (
            {**RAW, "cap": hex(CAP | 1 << 61)},
            "vtd.cap bit 61 (ECMDS, enhanced command interface) is not modelled",
        ),
        (
            {**RAW, "cap": hex(CAP | 1 << 59), "ecap": hex(ECAP & ~(1 << 3))},
            "posted interrupts need ir",
        ),
        ({**RAW, "cap": hex(CAP | 1 << 63)}, "vtd.cap bit 63 (ESRTPS"),
        ({**RAW, "cap": hex(CAP | 1 << 38)}, "vtd.cap bit 38 is reserved"),
        ({**RAW, "ecap": hex(ECAP | 1 << 63)}, "vtd.ecap bit 63 is reserved"),
        ({**RAW, "nd": 3, "qi": True}, "vtd: nd, qi cannot be given with cap/ecap"),
        ({"cap": hex(CAP), "ver": "0x10"}, "vtd: ecap must be given with cap, ver"),
        ({**RAW, "cap": 12}, "vtd.cap: expected a hex string"),
        ({**RAW, "ecap": "0xzz"}, "vtd.ecap: '0xzz' is not a hex number"),
        ({**RAW, "ver": "0x100"}, "vtd.ver: '0x100' does not fit in 8 bits"),
        ({**RAW, "ecap": hex(ECAP & ~(0x3FF << 8) | 0x5 << 8)}, "vtd.ecap IRO 0x50 overlaps"),
        (
            {**RAW, "cap": hex(CAP & ~(0x3FF << 24) | 0xF << 24)},
            "vtd: the IOTLB registers (IRO) overlap",
        ),
        ({**RAW, "ecap": hex(ECAP & ~(1 << 1))}, "scalable mode needs qi"),
        ({**RAW, "raw": (1, 2, 3)}, "vtd config: unknown key 'raw'"),
    ],
)
def test_bad_registers_fail_the_build_naming_the_problem(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make(config)


def test_nest_reads_back_and_needs_both_stages() -> None:
    """ECAP.NEST (bit 26) with first- and second-stage support sets the ``nest``
    knob; the knob puts bit 26 back into ECAP, and without first-stage support it
    is refused naming the dependency."""
    cfg = VtdConfig.from_mapping({**RAW, "ecap": hex(ECAP | 1 << 26 | 1 << 47)})
    assert cfg.nest and cfg.flts
    assert VtdConfig.from_mapping({"nest": True}).ecap() >> 26 & 1
    assert not VtdConfig.from_mapping({}).ecap() >> 26 & 1
    with pytest.raises(ValueError, match="nested translation needs smts, flts and slts"):
        VtdConfig.from_mapping({"nest": True, "flts": False})
