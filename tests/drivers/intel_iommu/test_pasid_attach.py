"""The default DMA domain attached at a PASID (both API generations): a DMA tagged with
that PASID translates exactly like the device's RID, and stops when detached."""

from __future__ import annotations

from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import GFP_KERNEL, kfree, kmalloc, memory_write
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory

DATA = b"kernel DMA with PASID " * 8


def _mapped(v: Vtd) -> tuple[int, int]:
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    memory_write(buf, DATA)
    handle = dma_map_single(v.dsa, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(v.dsa, handle)
    return buf, handle


def test_upstream_default_domain_at_global_pasid_translates_like_rid(vtd: Vtd) -> None:
    dsa = vtd.dsa
    dom = iommu_get_domain_for_dev(dsa)
    assert dom is not None
    pasid = iommu_alloc_global_pasid(dsa)
    iommu_attach_device_pasid(dom, dsa, pasid)
    buf, handle = _mapped(vtd)
    assert vtd.dma_read(dsa, handle, len(DATA), pasid) == vtd.dma_read(dsa, handle, len(DATA))
    assert vtd.dma_read(dsa, handle, len(DATA), pasid)[0] == DATA
    dma_unmap_single(dsa, handle, 4096, DMA_TO_DEVICE)
    iommu_detach_device_pasid(dom, dsa, pasid)
    iommu_free_global_pasid(pasid)
    kfree(buf)


def test_seed_v3_dma_pasid_translates_like_rid(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.pasid_api=seed-v3")
    dsa = v.dsa
    pasid = iommu_attach_dma_pasid(dsa)
    buf, handle = _mapped(v)
    assert v.dma_read(dsa, handle, len(DATA), pasid) == (DATA, None)
    assert v.dma_read(dsa, handle, len(DATA)) == (DATA, None)
    dma_unmap_single(dsa, handle, 4096, DMA_TO_DEVICE)
    iommu_detach_dma_pasid(dsa)
    kfree(buf)


def test_detached_pasid_faults_pasid_entry_not_present(vtd: Vtd) -> None:
    dsa = vtd.dsa
    dom = iommu_get_domain_for_dev(dsa)
    assert dom is not None
    pasid = iommu_alloc_global_pasid(dsa)
    iommu_attach_device_pasid(dom, dsa, pasid)
    buf, handle = _mapped(vtd)
    iommu_detach_device_pasid(dom, dsa, pasid)
    _, fault = vtd.dma_read(dsa, handle, 64, pasid)
    assert fault is not None and fault.reason == 0x59
    assert "[fault reason 0x59] SM: Present bit in PASID Table Entry is clear" in vtd.kernel.dmesg()
    dma_unmap_single(dsa, handle, 4096, DMA_TO_DEVICE)
    iommu_free_global_pasid(pasid)
    kfree(buf)
