"""A device DMA tagged with a PASID wider than any table can index (2^20 and up, which
no PASID TLP prefix can carry but a model's caller can pass) faults with the spec's
reason on both IOMMU vendors: recorded, nothing moved, no Python exception."""

from __future__ import annotations

from typing import Any

import pytest

from hw.bus import PciAddr
from hw.dsa.device import DsaDevice
from hw.machine import Machine, build_machine
from hw.pci import PCI_EXT_CAP_ID_ATS
from hw.smmuv3 import Evt, Smmuv3Unit
from hw.smmuv3 import entries as sent
from hw.vtd import VtdUnit
from hw.vtd import entries as vent
from hw.vtd import registers as vr
from hw.vtd.faults import FR
from tests.hw.smmuv3.helpers import CdTable, Smmu, cd_words
from tests.hw.smmuv3.helpers import Pages as SmmuPages
from tests.hw.smmuv3.helpers import PageTable as LpaeTable
from tests.hw.vtd.helpers import Pages, PageTable, Tables, enable_te, set_root

BDF = PciAddr.parse("00:02.0")
RAM = 32 << 20
WIDE = [1 << 20, (1 << 20) + 5, (1 << 32) + 1, 1 << 70]
IOVA, PHYS = 0x1000, 0x30_0000


def _machine(kind: str, config: dict[str, Any] | None = None) -> tuple[Machine, DsaDevice]:
    m = build_machine(
        {
            "ram": RAM,
            "devices": [{"kind": "dsa", "bdf": "00:02.0"}],
            "iommus": [{"kind": kind, "name": "iommu0", "config": config or {}}],
        }
    )
    fn = m.functions[BDF]
    assert isinstance(fn, DsaDevice)
    m.pci_config_write(BDF, 0x04, 2, 0x6)
    return m, fn


def _vtd(scalable: bool, ats: bool = False) -> tuple[Machine, DsaDevice, VtdUnit]:
    cfg = {} if scalable else {"smts": False, "pasid": False}
    m, fn = _machine("vtd", cfg)
    unit = m.iommus["iommu0"]
    assert isinstance(unit, VtdUnit)
    pages = Pages(m)
    t = Tables(m, pages, scalable)
    pt = PageTable(m, pages, 4)
    pt.map(IOVA, PHYS)
    if scalable:
        ctx = t.sm_ctx(BDF.rid, pdts=7)  # the largest directory: 2^20 PASIDs
        m.memory.write_u64(ctx, m.memory.read_u64(ctx) | vent.SmCtxLo.DTE.mask)
        t.pasid_entry(BDF.rid, 0, vent.PGTT_SL, 1, pt)
        t.pasid_entry(BDF.rid, 1, vent.PGTT_SL, 1, pt)
    else:
        t.legacy_ctx(BDF.rid, pt.root, did=1, tt=vent.TT_SL_ATS if ats else 0)
    set_root(m, unit, t.root, scalable=scalable)
    enable_te(m, unit)
    if ats:
        m.pci_config_write(BDF, fn.find_ext_cap(PCI_EXT_CAP_ID_ATS) + 6, 2, 0x8000)
    return m, fn, unit


def _fault_record(unit: VtdUnit) -> tuple[int, int, int]:
    """(FR, PP, PV) of the first fault record, which must be pending."""
    hi = unit.regs["FRCD0_HI"]
    assert vr.FRCD_HI.F.get(hi)
    return vr.FRCD_HI.FR.get(hi), vr.FRCD_HI.PP.get(hi), vr.FRCD_HI.PV.get(hi)


@pytest.mark.parametrize("pasid", WIDE)
@pytest.mark.parametrize("ats", [False, True])
def test_vtd_scalable_pasid_beyond_the_directory_faults_0x46(pasid: int, ats: bool) -> None:
    m, fn, unit = _vtd(scalable=True, ats=ats)
    m.memory.write(PHYS, b"\xaa" * 64)
    done, fault = fn.dma_write(pasid, False, IOVA, b"\x55" * 64)
    assert done == 0 and fault is not None and fault.reason == 0x46 == int(FR.SM_PASID_TOO_LARGE)
    assert m.memory.read(PHYS, 64) == b"\xaa" * 64
    assert _fault_record(unit) == (0x46, 1, pasid & 0xFFFFF)
    assert unit.stats.faults_recorded == 1
    # The unit still translates a PASID it can index.
    assert fn.dma_write(1, False, IOVA, b"\x55" * 64) == (64, None)


@pytest.mark.parametrize("pasid", WIDE)
def test_vtd_legacy_mode_request_with_any_pasid_faults_0x31(pasid: int) -> None:
    _m, fn, unit = _vtd(scalable=False)
    data, fault = fn.dma_read(pasid, False, IOVA, 64)
    assert data == b"" and fault is not None and fault.reason == FR.SM_TTM_LEGACY_PASID
    assert _fault_record(unit) == (0x31, 1, pasid & 0xFFFFF)


def _smmu(cdmax: int = 16) -> tuple[Machine, DsaDevice, Smmuv3Unit, Smmu]:
    """IDR1.SSIDSIZE 20 (the widest); the STE's CD table has 2^cdmax entries."""
    m, fn = _machine("smmuv3", {"ssidsize": 20})
    unit = m.iommus["iommu0"]
    assert isinstance(unit, Smmuv3Unit)
    pages = SmmuPages(m)
    smmu = Smmu(m, unit, pages)
    cds = CdTable(m, pages, cdmax=cdmax, fmt=sent.S1FMT_64K_L2 if cdmax > 10 else 0)
    pt = LpaeTable(m, pages)
    pt.map(IOVA, PHYS)
    cds.write(0, cd_words(pt.root, 1))
    cds.write(1, cd_words(pt.root, 1))
    smmu.write_ste(BDF.rid, cds.ste(dss=sent.S1DSS_SSID0))
    return m, fn, unit, smmu


@pytest.mark.parametrize("pasid", WIDE)
def test_smmuv3_ssid_beyond_s1cdmax_is_c_bad_substreamid(pasid: int) -> None:
    m, fn, _unit, smmu = _smmu()
    m.memory.write(PHYS, b"\xaa" * 64)
    done, fault = fn.dma_write(pasid, False, IOVA, b"\x55" * 64)
    assert done == 0 and fault is not None and fault.reason == Evt.C_BAD_SUBSTREAMID
    assert m.memory.read(PHYS, 64) == b"\xaa" * 64
    (evt,) = smmu.events()
    assert sent.EvtDw0.ID.get(evt[0]) == Evt.C_BAD_SUBSTREAMID
    assert sent.EvtDw0.SSV.get(evt[0]) == 1
    assert sent.EvtDw0.SSID.get(evt[0]) == pasid & 0xFFFFF
    assert fn.dma_write(1, False, IOVA, b"\x55" * 64) == (64, None)


def test_smmuv3_ssid_within_20_bits_but_beyond_a_smaller_s1cdmax() -> None:
    _m, fn, _unit, smmu = _smmu(cdmax=8)
    data, fault = fn.dma_read(1 << 8, False, IOVA, 64)
    assert data == b"" and fault is not None and fault.reason == Evt.C_BAD_SUBSTREAMID
    assert [sent.EvtDw0.SSID.get(e[0]) for e in smmu.events()] == [1 << 8]
