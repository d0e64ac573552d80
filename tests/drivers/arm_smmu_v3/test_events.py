"""Negative paths (facts C4): events the SMMU records, decoded and logged by the
driver's event-queue thread, and command-queue errors recovered by the GERROR
handler."""

from __future__ import annotations

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.cmdq import arm_smmu_cmdq_issue_cmdlist
from hw.smmuv3 import entries as ent
from kernel.boot import Kernel
from kernel.dma.direction import DMA_TO_DEVICE
from kernel.dma.mapping import dma_unmap_single
from kernel.iommu.iommu import iommu_get_domain_for_dev, iommu_state
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE
from kernel.iommu.iommu_map import iommu_map, iommu_unmap
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.mm import kfree
from tests.drivers.arm_smmu_v3.conftest import (
    DSA_BDF,
    EDU_BDF,
    Boot,
    device_dma,
    dsa,
    edu,
    map_buffer,
    smmu,
    unit,
)


def test_ssid_beyond_s1cdmax_is_c_bad_substreamid(smmu_boot: Boot) -> None:
    k = smmu_boot(smmu_config={"ssidsize": 8})
    dsa()
    fault = device_dma(k, DSA_BDF, 0x1000, 64, pasid=0x100)
    assert fault is not None and fault.reason == ent.Evt.C_BAD_SUBSTREAMID
    assert "event: C_BAD_SUBSTREAMID client: 0000:00:02.0 sid: 0x10 ssid: 0x100" in k.dmesg()
    assert smmu().events[-1].id == r.EVT_ID_BAD_SUBSTREAMID_CONFIG


def test_unmapped_iova_with_a_pasid_is_f_translation_with_the_ssid(k: Kernel) -> None:
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    iommu_attach_device_pasid(dom, dev, 9)
    fault = device_dma(k, DSA_BDF, 0x7777_0000, 64, pasid=9)
    assert fault is not None and fault.reason == ent.Evt.F_TRANSLATION
    dmesg = k.dmesg()
    assert "event: F_TRANSLATION client: 0000:00:02.0 sid: 0x10 ssid: 0x9 iova: 0x77770000" in dmesg
    assert 'unpriv data read s1 "Input address" stag: 0x0' in dmesg
    assert iommu_state().faults[-1] == ("0000:00:02.0", 0x7777_0000, 0)
    iommu_detach_device_pasid(dom, dev, 9)


def test_device_write_to_a_dma_to_device_buffer_is_f_permission(k: Kernel) -> None:
    dev = edu()
    buf, iova = map_buffer(dev, 256, DMA_TO_DEVICE)
    assert device_dma(k, EDU_BDF, iova, 64) is None
    fault = device_dma(k, EDU_BDF, iova, 64, write=True)
    assert fault is not None and fault.reason == ent.Evt.F_PERMISSION
    assert f"event: F_PERMISSION client: 0000:00:03.0 sid: 0x18 ssid: 0x0 iova: {iova:#x}" in (
        k.dmesg()
    )
    assert "unpriv data write s1" in k.dmesg()
    dma_unmap_single(dev, iova, 256, DMA_TO_DEVICE)
    kfree(buf)


def test_corrupt_command_raises_cmdq_err_and_the_gerror_handler_recovers(k: Kernel) -> None:
    s = smmu()
    u = unit(k)
    bad = (0x7F, 0)  # no such opcode
    assert arm_smmu_cmdq_issue_cmdlist(s, [bad], True) == 0
    dmesg = k.dmesg()
    assert "unexpected global error reported (0x00000001), this could be serious" in dmesg
    assert "Illegal command" in dmesg and "skipping command in error state:" in dmesg
    assert "\t0x000000000000007f" in dmesg
    assert u.stats.cmd_errors == 1 and s.cmdq_errors_skipped == 1
    assert u.mmio_read(r.ARM_SMMU_GERROR, 4) == u.mmio_read(r.ARM_SMMU_GERRORN, 4)
    # The queue runs again: a map/unmap completes its CMD_SYNC.
    dom = iommu_get_domain_for_dev(edu())
    assert dom is not None
    iommu_map(dom, 0x9000_0000, 0x300000, 0x1000, IOMMU_READ | IOMMU_WRITE, 0)
    syncs = u.stats.syncs
    assert iommu_unmap(dom, 0x9000_0000, 0x1000) == 0x1000
    assert u.stats.syncs == syncs + 1
    assert "CMD_SYNC timeout" not in k.dmesg()


def test_event_queue_overflow_is_reported(smmu_boot: Boot) -> None:
    k = smmu_boot(smmu_config={"evtqs": 1})
    fn_dev = dsa()
    from hw.bus import PciAddr
    from tests.drivers.arm_smmu_v3.conftest import machine

    fn = machine(k).functions[PciAddr.parse(DSA_BDF)]
    for i in range(4):  # four faults before the queue (2 entries) is drained
        fn.dma_read(None, False, 0x1000 * (i + 1), 8)
    from kernel.delay import udelay

    udelay(1)
    assert "EVTQ overflow detected -- events lost" in k.dmesg()
    assert unit(k).stats.events_lost == 2
    assert len(smmu().events) == 2
    assert device_dma(k, DSA_BDF, 0x9000, 8) is not None  # and events flow again
    assert len(smmu().events) == 3
    assert fn_dev.pasid_enabled
