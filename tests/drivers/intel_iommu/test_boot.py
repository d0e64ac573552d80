"""Detection and bring-up of a DMAR unit, in Linux's order and with its dmesg lines;
the ``intel_iommu=`` options; shutdown."""

from __future__ import annotations

import pytest

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import dmar_state
from hw.machine import Machine
from kernel.boot import boot
from kernel.iommu.iommu import iommu_get_domain_for_dev, iommu_state
from kernel.iommu.iommu_h import IOMMU_DOMAIN_DMA, IOMMU_DOMAIN_IDENTITY
from kernel.irq import irq_to_desc
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory, vtd_spec

BASE = 0xFED9_0000


def test_dmesg_shows_the_unit_its_mode_and_the_devices_behind_it(vtd: Vtd) -> None:
    log = vtd.kernel.dmesg()
    cap, ecap = vtd.unit.cfg.cap(), vtd.unit.cfg.ecap()
    for line in (
        "DMAR: Host address width 46",
        "DMAR: DRHD base: 0x000000fed90000 flags: 0x1",
        f"DMAR: dmar0: reg_base_addr fed90000 ver 3:0 cap {cap:x} ecap {ecap:x}",
        "DMAR: dmar0: Using Queued invalidation",
        "DMAR: dmar0: scalable mode, first-stage DMA domains",
        "pci 0000:00:02.0: Adding to iommu group 0",
        "pci 0000:00:03.0: Adding to iommu group 1",
        "DMAR: Intel(R) Virtualization Technology for Directed I/O",
        "iommu: DMAR unit dmar0 bound to driver intel_iommu",
    ):
        assert line in log
    assert vtd.unit.te and vtd.unit.ttm == 1


def test_bring_up_follows_init_dmars_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """QI on, interrupt remapping (SIRTP, IRE) before DMA remapping, SRTP, the three
    global invalidations, the fault MSI, then TE last."""
    m = Machine(vtd_spec())
    writes: list[tuple[int, int]] = []
    real = m.mmio_write

    def spy(addr: int, size: int, value: int) -> None:
        if BASE <= addr < BASE + 0x1000:
            writes.append((addr - BASE, value))
        real(addr, size, value)

    monkeypatch.setattr(m, "mmio_write", spy)
    k = boot(m, "", builtins=("drivers.intel_iommu",), entry_points=False)
    try:
        gcmd = [v for off, v in writes if off == ir.DMAR_GCMD_REG]
        qie, ire = ir.DMA_GCMD_QIE, ir.DMA_GCMD_IRE
        assert gcmd == [
            qie,
            qie | ir.DMA_GCMD_SIRTP,
            qie | ire,
            qie | ire | ir.DMA_GCMD_SRTP,
            qie | ire | ir.DMA_GCMD_TE,
        ]
        srtp = writes.index((ir.DMAR_GCMD_REG, qie | ire | ir.DMA_GCMD_SRTP))
        offs = [off for off, _ in writes]
        te = len(offs) - 1 - offs[::-1].index(ir.DMAR_GCMD_REG)
        # context-cache, PASID-cache and IOTLB global invalidations, one IQT write each
        assert offs[srtp + 1 : srtp + 4] == [ir.DMAR_IQT_REG] * 3
        assert offs.index(ir.DMAR_FEDATA_REG) < offs.index(ir.DMAR_FECTL_REG) < te
        assert offs.index(ir.DMAR_IQA_REG) < offs.index(ir.DMAR_GCMD_REG)
        assert offs.index(ir.DMAR_IRTA_REG) < offs.index(ir.DMAR_GCMD_REG, offs.index(0xB8))
    finally:
        k.shutdown()


def test_fault_event_msi_carries_the_allocated_vector(vtd: Vtd) -> None:
    iommu = dmar_state().units[0]
    desc = irq_to_desc(iommu.irq)
    assert desc is not None and desc.actions[0].name == "dmar0"
    regs = vtd.unit.regs
    assert (regs["FEADDR"], regs["FEDATA"]) == desc.msi_msg()
    assert regs["FECTL"] >> 31 == 0


def test_default_domains_are_first_stage_dma_domains(vtd: Vtd) -> None:
    for dev in (vtd.dsa, vtd.edu):
        dom = iommu_get_domain_for_dev(dev)
        assert dom is not None and dom.type == IOMMU_DOMAIN_DMA
        assert dev.dma_iommu
    ctx = vtd.unit.walker.context(vtd.unit.root, True, vtd.edu.rid)
    assert ctx.paside is False and ctx.dte is False
    pe = vtd.unit.walker.pasid_entry(ctx, 0)
    assert pe.pgtt == 1 and pe.did >= 2


def test_dsa_context_entry_allows_pasid_and_ats(vtd: Vtd) -> None:
    ctx = vtd.unit.walker.context(vtd.unit.root, True, vtd.dsa.rid)
    assert ctx.paside and ctx.dte
    assert vtd.dsa.pasid_enabled and vtd.dsa.ats_enabled


def test_intel_iommu_off_leaves_devices_untranslated(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=off")
    log = v.kernel.dmesg()
    assert "DMAR: IOMMU disabled" in log
    assert "iommu: intel_iommu failed to bring up dmar0: -ENODEV: intel_iommu=off" in log
    assert not v.unit.te
    assert iommu_get_domain_for_dev(v.edu) is None and not v.edu.dma_iommu


def test_sm_off_brings_the_unit_up_in_legacy_mode(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=sm_off")
    log = v.kernel.dmesg()
    assert "DMAR: Scalable mode is disallowed" in log
    assert "DMAR: dmar0: legacy mode, second-stage DMA domains" in log
    assert v.unit.ttm == 0 and v.unit.te
    assert v.dsa.iommu.max_pasids == 0


@pytest.mark.parametrize(
    ("option", "line"),
    [
        ("on", "DMAR: IOMMU enabled"),
        ("sm_on", "DMAR: Enable scalable mode if hardware supports"),
        ("igfx_off", "DMAR: Disable GFX device mapping"),
        ("sp_off", "DMAR: Disable supported super page"),
        ("strict", "DMAR: intel_iommu=strict deprecated; use iommu.strict=1 instead"),
        ("bogus", "DMAR: Unknown option - 'bogus'"),
    ],
)
def test_intel_iommu_option_is_logged(make_vtd: VtdFactory, option: str, line: str) -> None:
    assert line in make_vtd(f"intel_iommu={option}").kernel.dmesg()


def test_sp_off_domains_use_4k_pages_only(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=sp_off")
    dom = iommu_get_domain_for_dev(v.edu)
    assert dom is not None and dom.pgsize_bitmap == 0x1000


def test_passthrough_gives_identity_default_domains(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.passthrough=1")
    dom = iommu_get_domain_for_dev(v.edu)
    assert dom is not None and dom.type == IOMMU_DOMAIN_IDENTITY
    ctx = v.unit.walker.context(v.unit.root, True, v.edu.rid)
    assert v.unit.walker.pasid_entry(ctx, 0).pgtt == 4
    assert v.dma_read(v.edu, 0x200000, 8)[1] is None


def test_driver_binds_with_defaults_when_its_module_is_not_loaded() -> None:
    k = boot(Machine(vtd_spec()), "", [], builtins=("drivers.intel_iommu",), entry_points=False)
    try:
        assert "DMAR: Host address width" not in k.dmesg()
        assert "DMAR: dmar0: scalable mode" in k.dmesg()
    finally:
        k.shutdown()


def test_shutdown_turns_translation_and_queue_off(make_vtd: VtdFactory) -> None:
    v = make_vtd()
    v.kernel.shutdown()
    gsts = v.unit.regs["GSTS"]
    assert not gsts & (ir.DMA_GSTS_TES | ir.DMA_GSTS_QIES)
    assert not v.unit.te


def test_translation_left_on_by_firmware_is_turned_off_first() -> None:
    m = Machine(vtd_spec())
    m.mmio_write(BASE + ir.DMAR_GCMD_REG, 4, ir.DMA_GCMD_TE)
    m.clock.advance(1000)
    k = boot(m, "", builtins=("drivers.intel_iommu",), entry_points=False)
    try:
        assert "DMAR: Translation was enabled for dmar0 but we are not in kdump mode" in k.dmesg()
        assert m.iommus["dmar0"].te
    finally:
        k.shutdown()


def test_strict_is_the_default_and_lazy_gives_flush_queue_domains(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.strict=0")
    assert not iommu_state().strict
    dom = iommu_get_domain_for_dev(v.edu)
    assert dom is not None and dom.type & 0x8
