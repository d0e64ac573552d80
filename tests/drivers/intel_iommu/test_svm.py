"""SVA: a process address space shared with the DSA through a first-stage PASID entry
pointing at the mm's page table; mm changes reach the IOTLB through the notifier."""

from __future__ import annotations

import pytest

from drivers.intel_iommu.dmar import dmar_state
from drivers.intel_iommu.pasid import intel_pasid_get_entry, pasid_entry_read
from kernel.errno import EINVAL, EOPNOTSUPP
from kernel.iommu.iommu import iommu_iova_to_phys, iommu_map, iommu_unmap
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE, has_optional_op
from kernel.iommu.iommu_sva import (
    Mm,
    iommu_sva_bind_device,
    iommu_sva_get_pasid,
    iommu_sva_invalidate_range,
    iommu_sva_unbind_device,
    mm_alloc,
    mm_map,
    mmput,
)
from kernel.mm import GFP_KERNEL, __free_pages, alloc_pages, memory_write, phys_to_virt
from tests.drivers.intel_iommu.conftest import Vtd

VA = 0x7F00_0000_0000


def _mm_with(data: bytes) -> tuple[Mm, list[int]]:
    mm = mm_alloc()
    assert mm is not None
    pages = []
    for _ in range(2):
        page = alloc_pages(GFP_KERNEL, 0)
        assert page is not None
        pages.append(page.phys)
    memory_write(phys_to_virt(pages[0]), data)
    memory_write(phys_to_virt(pages[1]), b"new " + data)
    mm_map(mm, VA, pages[0], 4096)
    return mm, pages


def _free(mm: Mm, pages: list[int]) -> None:
    from kernel.mm import Page

    mmput(mm)
    for p in pages:
        __free_pages(Page(p >> 12), 0)


def test_device_reads_process_memory_through_the_sva_pasid(vtd: Vtd) -> None:
    mm, pages = _mm_with(b"user data")
    handle = iommu_sva_bind_device(vtd.dsa, mm)
    pasid = iommu_sva_get_pasid(handle)
    pte = intel_pasid_get_entry(vtd.dsa, pasid)
    assert pte is not None
    val = pasid_entry_read(pte)
    assert val[2] == mm.pgd_phys and val[1] & 0xFFFF == 1 and val[0] >> 6 & 7 == 1
    assert vtd.dma_read(vtd.dsa, VA, 9, pasid) == (b"user data", None)
    iommu_sva_unbind_device(handle)
    _, fault = vtd.dma_read(vtd.dsa, VA, 9, pasid)
    assert fault is not None and fault.reason == 0x59
    _free(mm, pages)


def test_an_mm_change_reaches_the_iotlb_through_the_notifier(vtd: Vtd) -> None:
    mm, pages = _mm_with(b"user data")
    handle = iommu_sva_bind_device(vtd.dsa, mm)
    pasid = iommu_sva_get_pasid(handle)
    assert vtd.dma_read(vtd.dsa, VA, 9, pasid)[0] == b"user data"
    mm_map(mm, VA, pages[1], 4096)
    iommu_sva_invalidate_range(mm)
    assert vtd.dma_read(vtd.dsa, VA, 13, pasid) == (b"new user data", None)
    iommu_sva_unbind_device(handle)
    _free(mm, pages)


def test_sva_needs_a_pasid_enabled_device(vtd: Vtd) -> None:
    with pytest.raises(EOPNOTSUPP):
        dmar_state().ops.domain_alloc_sva(vtd.edu, None)


def test_sva_domains_have_no_iova_space(vtd: Vtd) -> None:
    mm, pages = _mm_with(b"x")
    handle = iommu_sva_bind_device(vtd.dsa, mm)
    dom = handle.domain
    assert dom.ops is not None
    with pytest.raises(EOPNOTSUPP):
        dom.ops.attach_dev(dom, vtd.dsa, None)
    for op in ("map_pages", "unmap_pages", "iova_to_phys"):
        assert not has_optional_op(dom.ops, op)
    with pytest.raises(EINVAL):
        iommu_map(dom, 0, 0, 4096, IOMMU_READ | IOMMU_WRITE, GFP_KERNEL)
    assert iommu_unmap(dom, 0, 4096) == 0
    assert iommu_iova_to_phys(dom, VA) == 0
    iommu_sva_unbind_device(handle)
    _free(mm, pages)
