"""Bring-up (``arm_smmu_device_hw_probe``/``arm_smmu_device_reset``), stream tables,
``probe_device`` with PASID enable, interrupts, and shutdown."""

from __future__ import annotations

import argparse

import pytest

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.arm_smmu_v3 import arm_smmu_device_probe
from hw.bus import IommuUnitInfo
from hw.smmuv3 import registers as sr
from kernel.bitfield import FIELD_GET
from kernel.boot import Kernel
from kernel.errno import EINVAL
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.irq import irq_to_desc
from tests.drivers.arm_smmu_v3.conftest import (
    Boot,
    cd,
    cd_asid,
    cd_ttb0,
    commands,
    device_dma,
    dsa,
    edu,
    machine,
    master,
    smmu,
    ste,
    ste_field,
    unit,
)
from tests.drivers.arm_smmu_v3.machines import EDU_BDF, smmuv3_machine
from tests.kernel.iommu.helpers import device_read

SMMU_ON = r.CR0_SMMUEN | r.CR0_EVTQEN | r.CR0_CMDQEN


def reg(k: Kernel, off: int, size: int = 4) -> int:
    return unit(k).mmio_read(off, size)


def test_reset_enables_queues_then_translation(k: Kernel) -> None:
    assert reg(k, r.ARM_SMMU_CR0) == SMMU_ON
    assert reg(k, r.ARM_SMMU_CR0ACK) == SMMU_ON
    assert reg(k, r.ARM_SMMU_CR2) == r.CR2_PTM | r.CR2_RECINVSID
    assert reg(k, r.ARM_SMMU_IRQ_CTRLACK) == r.IRQ_CTRL_EVTQ_IRQEN | r.IRQ_CTRL_GERROR_IRQEN
    assert "iommu: IORT unit smmu0 bound to driver arm_smmu_v3" in k.dmesg()
    assert "arm-smmu-v3 smmu0: ias 48-bit, oas 48-bit" in k.dmesg()


def test_reset_invalidates_cached_configuration_and_tlbs_first(k: Kernel) -> None:
    ops = [op for op, _, _ in commands(k)]
    assert ops[:4] == ["CFGI_STE_RANGE", "CMD_SYNC", "TLBI_NSNH_ALL", "CMD_SYNC"]


def test_interrupts_are_msis_programmed_into_the_irq_cfg_registers(k: Kernel) -> None:
    s = smmu()
    for irq, cfg0 in (
        (s.evtq_irq, r.ARM_SMMU_EVTQ_IRQ_CFG0),
        (s.gerr_irq, r.ARM_SMMU_GERROR_IRQ_CFG0),
    ):
        desc = irq_to_desc(irq)
        assert desc is not None
        addr, data = desc.msi_msg()
        assert reg(k, cfg0, 8) == addr
        assert reg(k, cfg0 + 8) == data
        assert reg(k, cfg0 + 0xC) == r.ARM_SMMU_MEMATTR_DEVICE_nGnRE


def test_two_level_stream_table_with_lazy_leaves(k: Kernel) -> None:
    cfg = reg(k, r.ARM_SMMU_STRTAB_BASE_CFG)
    assert FIELD_GET(r.STRTAB_BASE_CFG_FMT, cfg) == r.STRTAB_BASE_CFG_FMT_2LVL
    assert FIELD_GET(r.STRTAB_BASE_CFG_SPLIT, cfg) == 8
    assert FIELD_GET(r.STRTAB_BASE_CFG_LOG2SIZE, cfg) == 16
    assert list(smmu().strtab_cfg.l2) == [0]  # both devices are on bus 0: one leaf


def test_linear_stream_table_when_sids_fit_one_leaf(smmu_boot: Boot) -> None:
    k = smmu_boot(smmu_config={"sidsize": 8})
    cfg = reg(k, r.ARM_SMMU_STRTAB_BASE_CFG)
    assert FIELD_GET(r.STRTAB_BASE_CFG_FMT, cfg) == r.STRTAB_BASE_CFG_FMT_LINEAR
    assert FIELD_GET(r.STRTAB_BASE_CFG_LOG2SIZE, cfg) == 8
    assert device_read(edu(), 0x1000, 8) != 0  # translated (and faulting), not bypassed


def test_default_domain_is_cd0_behind_an_s1_ste(k: Kernel) -> None:
    dev = dsa()
    words = ste(dev)
    assert ste_field(words, 0, r.STRTAB_STE_0_CFG) == r.STRTAB_STE_0_CFG_S1_TRANS
    assert ste_field(words, 0, r.STRTAB_STE_0_S1CDMAX) == 20
    assert ste_field(words, 0, r.STRTAB_STE_0_S1FMT) == r.STRTAB_STE_0_S1FMT_64K_L2
    assert ste_field(words, 1, r.STRTAB_STE_1_S1DSS) == r.STRTAB_STE_1_S1DSS_SSID0
    dom = iommu_get_domain_for_dev(dev)
    assert cd_asid(cd(dev, 0)) == dom.asid  # type: ignore[union-attr]
    assert cd_ttb0(cd(dev, 0)) == dom.pgtbl_ops.cfg.ttbr  # type: ignore[union-attr]


def test_probe_device_enables_pasid_and_sizes_the_cd_table(k: Kernel) -> None:
    assert dsa().pasid_enabled and master(dsa()).ssid_bits == 20
    assert not edu().pasid_enabled and master(edu()).ssid_bits == 0
    words = ste(edu())
    assert ste_field(words, 0, r.STRTAB_STE_0_S1CDMAX) == 0
    assert ste_field(words, 0, r.STRTAB_STE_0_S1FMT) == r.STRTAB_STE_0_S1FMT_LINEAR


def test_without_cd2l_the_cd_table_is_linear_and_capped_at_1024(smmu_boot: Boot) -> None:
    smmu_boot(smmu_config={"cd2l": False})
    assert master(dsa()).ssid_bits == 10
    words = ste(dsa())
    assert ste_field(words, 0, r.STRTAB_STE_0_S1FMT) == r.STRTAB_STE_0_S1FMT_LINEAR
    assert ste_field(words, 0, r.STRTAB_STE_0_S1CDMAX) == 10


def test_without_msis_sync_completes_by_polling_cons(smmu_boot: Boot) -> None:
    k = smmu_boot(smmu_config={"msi": False})
    assert "no evtq irq - events will not be reported!" in k.dmesg()
    assert not smmu().msipoll and smmu().evtq_irq == 0
    syncs = unit(k).stats.syncs
    assert device_read(edu(), 0x1000, 8) != 0
    from kernel.iommu.iommu_h import iommu_flush_iotlb_all

    iommu_flush_iotlb_all(iommu_get_domain_for_dev(edu()))  # type: ignore[arg-type]
    assert unit(k).stats.syncs == syncs + 1
    assert "CMD_SYNC timeout" not in k.dmesg()


def test_a_command_queue_of_64_entries_is_refused(smmu_boot: Boot) -> None:
    k = smmu_boot(smmu_config={"cmdqs": 6})
    assert "command queue size <= 64 entries not supported" in k.dmesg()
    assert "arm_smmu_v3 failed to bring up smmu0" in k.dmesg()
    assert edu().iommu is None
    assert machine(k).iommus["smmu0"].mmio_read(r.ARM_SMMU_CR0, 4) == 0


def test_an_smmu_left_enabled_is_aborted_then_reset(smmu_boot: Boot) -> None:
    m = smmuv3_machine()
    m.mmio_write(m.firmware.iommus[0].register_base + r.ARM_SMMU_CR0, 4, r.CR0_SMMUEN)
    m.clock.advance(1000)
    from kernel.boot import boot

    k = boot(m, "", builtins=("drivers.arm_smmu_v3",), entry_points=False)
    try:
        assert "SMMU currently enabled! Resetting..." in k.dmesg()
        assert m.mmio_read(m.firmware.iommus[0].register_base + r.ARM_SMMU_GBPA, 4) & r.GBPA_ABORT
        assert m.mmio_read(m.firmware.iommus[0].register_base + r.ARM_SMMU_CR0, 4) == SMMU_ON
    finally:
        k.shutdown()


def test_a_register_window_smaller_than_two_pages_is_refused(k: Kernel) -> None:
    small = IommuUnitInfo("IORT", "smmu9", 0xFED0_0000, 0x10000, include_pci_all=True)
    with pytest.raises(EINVAL):
        arm_smmu_device_probe(small)


def test_shutdown_disables_the_smmu_and_frees_its_memory(smmu_boot: Boot) -> None:
    k = smmu_boot()
    s = smmu()
    irqs = (s.evtq_irq, s.gerr_irq)
    k.shutdown()
    assert unit(k).mmio_read(r.ARM_SMMU_CR0, 4) == 0
    assert all(irq_to_desc(i) is None for i in irqs)
    assert not s.coherent_allocs
    assert unit(k).errors == []


def test_dump_shows_stes_and_context_descriptors(k: Kernel) -> None:
    target = next(t for t in k.plugins.hooks.dump_targets() if t.name == "smmuv3")
    text = target.render(argparse.Namespace(kernel=k, format="text"))
    assert "strtab: 2-level" in text
    assert "STE[0x10]:" in text and "config=s1-trans s1cdmax=20 s1dss=ssid0" in text
    assert f"CD[0]: asid={cd_asid(cd(dsa(), 0))}" in text
    assert sr.CR0_OFF == r.ARM_SMMU_CR0  # the driver's header agrees with the model's


def test_edu_dma_is_translated_through_its_default_domain(k: Kernel) -> None:
    assert device_dma(k, EDU_BDF, 0x5000, 8) is not None
    assert "event: F_TRANSLATION client: 0000:00:03.0 sid: 0x18 ssid: 0x0 iova: 0x5000" in k.dmesg()
