"""Queued invalidation: the wait-descriptor protocol, batching, and what happens when the
queue rejects a descriptor (IQE) or stops (timeout)."""

from __future__ import annotations

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import (
    __iommu_flush_context,
    __iommu_flush_iotlb,
    dmar_state,
    qi_desc_iotlb,
    qi_desc_piotlb,
    qi_submit_sync,
)
from drivers.intel_iommu.structs import IntelIommu
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import GFP_KERNEL, kfree, kmalloc, read32
from kernel.trace import TraceEvent, capture
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory
from tests.kernel.iommu.helpers import device_read

BASE = 0xFED9_0000


def _iommu() -> IntelIommu:
    return dmar_state().units[0]


def _types(events: list[TraceEvent]) -> list[int]:
    return [int(e.fields["type"]) for e in events]  # type: ignore[call-overload]


def _map_unmap(v: Vtd, dev: object) -> None:
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    handle = dma_map_single(dev, buf, 4096, DMA_TO_DEVICE)  # type: ignore[arg-type]
    assert not dma_mapping_error(dev, handle)  # type: ignore[arg-type]
    dma_unmap_single(dev, handle, 4096, DMA_TO_DEVICE)  # type: ignore[arg-type]
    kfree(buf)


def test_submission_ends_with_a_status_write_and_frees_its_slots(vtd: Vtd) -> None:
    iommu = _iommu()
    qi = iommu.qi
    assert qi is not None
    with capture("hw_vtd:qi_descriptor") as events:
        _map_unmap(vtd, vtd.edu)
    assert _types(events) == [ir.QI_EIOTLB_TYPE, ir.QI_IWD_TYPE]
    qw0, qw1 = events[-1].fields["qw"][:2]  # type: ignore[index]
    assert qw0 >> 32 == ir.QI_DONE and qw0 & ir.QI_IWD_STATUS_WRITE
    assert qw1 == qi.desc_status - 0xFFFF_8880_0000_0000 + 4 * ((qi.free_head - 1) % 256)
    assert qi.free_cnt == ir.QI_LENGTH
    assert all(read32(qi.desc_status + 4 * i) == ir.QI_FREE for i in range(ir.QI_LENGTH))
    regs = vtd.unit.regs
    assert regs["IQH"] == regs["IQT"] == qi.free_head << 5


def _attach(v: Vtd, n: int) -> list[int]:
    dom = iommu_get_domain_for_dev(v.dsa)
    assert dom is not None
    pasids = [iommu_alloc_global_pasid(v.dsa) for _ in range(n)]
    for p in pasids:
        iommu_attach_device_pasid(dom, v.dsa, p)
    return pasids


def _detach(v: Vtd, pasids: list[int]) -> None:
    dom = iommu_get_domain_for_dev(v.dsa)
    assert dom is not None
    for p in pasids:
        iommu_detach_device_pasid(dom, v.dsa, p)
        iommu_free_global_pasid(p)


def test_one_unmap_flushes_every_cache_tag_in_one_batch(vtd: Vtd) -> None:
    """RID + 3 PASIDs, each with an IOTLB and a device-TLB tag (the DSA has ATS)."""
    pasids = _attach(vtd, 3)
    with capture("hw_vtd:qi_descriptor") as events:
        _map_unmap(vtd, vtd.dsa)
    types = _types(events)
    assert types.count(ir.QI_IWD_TYPE) == 1 and types[-1] == ir.QI_IWD_TYPE
    assert types.count(ir.QI_EIOTLB_TYPE) == 4
    assert types.count(ir.QI_DIOTLB_TYPE) == 1 and types.count(ir.QI_DEIOTLB_TYPE) == 3
    _detach(vtd, pasids)


def test_batches_longer_than_sixteen_descriptors_are_split(vtd: Vtd) -> None:
    pasids = _attach(vtd, 9)
    with capture("hw_vtd:qi_descriptor") as events:
        _map_unmap(vtd, vtd.dsa)
    types = _types(events)
    assert types.count(ir.QI_IWD_TYPE) == 2
    assert types.index(ir.QI_IWD_TYPE) == ir.QI_MAX_BATCHED_DESC_COUNT
    _detach(vtd, pasids)


def test_invalid_descriptor_is_logged_returns_einval_and_the_queue_recovers(vtd: Vtd) -> None:
    iommu = _iommu()
    assert qi_submit_sync(iommu, [(0xF, 0x1234, 0, 0)]) == -22
    log = vtd.kernel.dmesg()
    assert "DMAR: VT-d detected Invalidation Queue Error: Reason 3" in log
    assert "DMAR: VT-d detected invalid descriptor: qw0 = f, qw1 = 1234" in log
    assert "DMAR: Invalidation Queue Error (IQE) cleared" in log
    assert "DMAR: DRHD: handling fault status reg 10" in log
    assert qi_submit_sync(iommu, [qi_desc_piotlb(2, 0, 0, -1, 0)]) == 0
    edu = vtd.edu
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(edu, handle)
    assert device_read(edu, handle, 64) == 0
    dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
    assert device_read(edu, handle, 64) == 1
    kfree(buf)


def test_a_queue_that_stops_times_out_and_is_restarted(vtd: Vtd) -> None:
    iommu = _iommu()
    vtd.machine.mmio_write(BASE + ir.DMAR_GCMD_REG, 4, ir.DMA_GCMD_TE)
    vtd.machine.clock.advance(1000)
    assert not vtd.unit.regs["GSTS"] & ir.DMA_GSTS_QIES
    assert qi_submit_sync(iommu, [qi_desc_piotlb(2, 0, 0, -1, 0)]) == -110
    assert "DMAR: dmar0: invalidation queue timed out at index" in vtd.kernel.dmesg()
    assert vtd.unit.regs["GSTS"] & ir.DMA_GSTS_QIES
    assert qi_submit_sync(iommu, [qi_desc_piotlb(2, 0, 0, -1, 0)]) == 0
    assert iommu.qi is not None and iommu.qi.free_cnt == ir.QI_LENGTH


def test_a_batch_bigger_than_the_queue_is_refused(vtd: Vtd) -> None:
    assert qi_submit_sync(_iommu(), [qi_desc_piotlb(2, 0, 0, -1, 0)] * 255) == -22
    assert "255 descriptors do not fit the invalidation queue" in vtd.kernel.dmesg()


def test_register_invalidation_is_refused_by_a_unit_using_qi(vtd: Vtd) -> None:
    __iommu_flush_iotlb(_iommu(), 0, 0, 0, ir.DMA_TLB_GLOBAL_FLUSH)
    assert "DMAR: Flush IOTLB failed" in vtd.kernel.dmesg()
    assert vtd.unit.errors[-1].startswith("IOTLB: register-based invalidation while QI")


def test_register_invalidation_types(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"smts": False, "pasid": False, "qi": False})
    iommu = _iommu()
    before = v.unit.stats.invalidations
    __iommu_flush_context(iommu, 2, 0, 0, ir.DMA_CCMD_DOMAIN_INVL)
    __iommu_flush_iotlb(iommu, 2, 0x1000, 0, ir.DMA_TLB_PSI_FLUSH)
    assert v.unit.stats.invalidations == before + 2
    __iommu_flush_context(iommu, 0, 0, 0, 0)
    __iommu_flush_iotlb(iommu, 0, 0, 0, 0)
    log = v.kernel.dmesg()
    assert "DMAR: dmar0: Unexpected context-cache invalidation type 0x0" in log
    assert "DMAR: dmar0: Unexpected iotlb invalidation type 0x0" in log


QEMU_72_CAP = 0xD2008C222F0606  # QEMU 7.2 x-scalable-mode=on,aw-bits=48: DRD and DWD set


def test_iotlb_descriptors_carry_dr_dw_as_the_real_6_12_trace_shows() -> None:
    """Words from ``linux-6.12-trace/trace.txt`` on QEMU 7.2 (CAP 0xd2008c222f0606):
    ``iotlb_inv dmar0: 0xd2 0x0`` (global) and ``0x400f2 0xfffff040`` (DID 4, page
    0xfffff000 with the invalidation hint), DR (bit 7) and DW (bit 6) set; with a
    CAP without DRD/DWD both stay clear (``0x...32``)."""
    qemu = IntelIommu(cap=QEMU_72_CAP)
    assert qi_desc_iotlb(qemu, 0, 0, 0, ir.DMA_TLB_GLOBAL_FLUSH) == (0xD2, 0, 0, 0)
    psi = qi_desc_iotlb(qemu, 4, 0xFFFFF000, 0, ir.DMA_TLB_PSI_FLUSH, ih=1)
    assert psi == (0x400F2, 0xFFFFF040, 0, 0)
    plain = IntelIommu(cap=QEMU_72_CAP & ~(3 << 54))
    assert qi_desc_iotlb(plain, 4, 0xFFFFF000, 0, ir.DMA_TLB_PSI_FLUSH)[0] == 0x40032


def test_a_submission_made_while_another_waits_leaves_every_slot_free(vtd: Vtd) -> None:
    """A clock event that submits while an earlier submission polls its wait
    descriptor (as a timer can): both complete, and once both returned every slot is
    free again with QI_FREE in its status word, whichever returned first."""
    iommu = _iommu()
    qi = iommu.qi
    assert qi is not None
    inner: list[int] = []
    desc = qi_desc_piotlb(2, 0, 0, -1, 0)
    vtd.machine.clock.schedule(50, lambda: inner.append(qi_submit_sync(iommu, [desc, desc])))
    with capture("hw_vtd:qi_descriptor") as events:
        assert qi_submit_sync(iommu, [desc]) == 0
    assert inner == [0]
    assert _types(events).count(ir.QI_IWD_TYPE) == 2
    assert qi.free_cnt == ir.QI_LENGTH and qi.free_tail == qi.free_head
    assert all(read32(qi.desc_status + 4 * i) == ir.QI_FREE for i in range(ir.QI_LENGTH))
