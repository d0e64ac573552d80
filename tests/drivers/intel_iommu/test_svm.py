"""SVA: a process address space shared with the DSA through a first-stage PASID entry
pointing at the mm's page table; mm changes reach the IOTLB and device TLB through
the domain's mmu notifier, and the process's exit tears the PASID entry down."""

from __future__ import annotations

import pytest

from drivers.intel_iommu.dmar import dmar_state
from drivers.intel_iommu.pasid import intel_pasid_get_entry, pasid_entry_read
from kernel.errno import EINVAL, EOPNOTSUPP
from kernel.fork import mm_alloc, mmput
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE, has_optional_op
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_unmap
from kernel.iommu.iommu_sva import (
    iommu_sva_bind_device,
    iommu_sva_get_pasid,
    iommu_sva_unbind_device,
)
from kernel.memory import access_remote_vm
from kernel.mm import GFP_KERNEL
from kernel.mm_types import MmStruct
from kernel.mmap import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    do_mprotect,
    do_munmap,
    vm_mmap,
)
from tests.drivers.intel_iommu.conftest import Vtd

VA = 0x7F00_0000_0000
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED


def _mm_with(data: bytes) -> MmStruct:
    mm = mm_alloc()
    assert mm is not None
    assert vm_mmap(mm, VA, 2 * 4096, RW, ANON) == VA
    assert access_remote_vm(mm, VA, bytearray(data), True) == len(data)
    return mm


def test_device_reads_process_memory_through_the_sva_pasid(vtd: Vtd) -> None:
    mm = _mm_with(b"user data")
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
    mmput(mm)


def test_munmap_reaches_the_iotlb_through_the_notifier(vtd: Vtd) -> None:
    """After munmap the cached translation is gone (a later DMA faults, no stale
    use); a new mapping at the same address is what the device then reads."""
    mm = _mm_with(b"user data")
    handle = iommu_sva_bind_device(vtd.dsa, mm)
    pasid = iommu_sva_get_pasid(handle)
    assert vtd.dma_read(vtd.dsa, VA, 9, pasid)[0] == b"user data"
    do_munmap(mm, VA, 4096)
    _, fault = vtd.dma_read(vtd.dsa, VA, 9, pasid)
    assert fault is not None
    vm_mmap(mm, VA, 4096, RW, ANON)
    access_remote_vm(mm, VA, bytearray(b"new user data"), True)
    assert vtd.dma_read(vtd.dsa, VA, 13, pasid) == (b"new user data", None)
    iommu_sva_unbind_device(handle)
    mmput(mm)


def test_mprotect_read_only_reaches_the_iotlb(vtd: Vtd) -> None:
    mm = _mm_with(b"abc")
    handle = iommu_sva_bind_device(vtd.dsa, mm)
    pasid = iommu_sva_get_pasid(handle)
    assert vtd.dma_write(vtd.dsa, VA, b"xyz", pasid) is None
    do_mprotect(mm, VA, 4096, PROT_READ)
    assert vtd.dma_write(vtd.dsa, VA, b"123", pasid) is not None
    assert vtd.dma_read(vtd.dsa, VA, 3, pasid) == (b"xyz", None)
    iommu_sva_unbind_device(handle)
    mmput(mm)


def test_exit_with_the_bond_held_tears_the_pasid_entry_down(vtd: Vtd) -> None:
    """``intel_mm_release``: the PASID entry is cleared with FPD before the tables
    go; the later unbind clears it fully."""
    mm = _mm_with(b"abc")
    handle = iommu_sva_bind_device(vtd.dsa, mm)
    pasid = iommu_sva_get_pasid(handle)
    assert vtd.dma_read(vtd.dsa, VA, 3, pasid)[1] is None
    mmput(mm)
    pte = intel_pasid_get_entry(vtd.dsa, pasid)
    assert pte is not None
    val = pasid_entry_read(pte)
    assert not val[0] & 1 and val[0] & 2  # not present, FPD
    data, fault = vtd.dma_read(vtd.dsa, VA, 3, pasid)
    assert data is None or fault is not None
    iommu_sva_unbind_device(handle)
    assert pasid_entry_read(pte)[0] == 0


def test_sva_needs_a_pasid_enabled_device(vtd: Vtd) -> None:
    with pytest.raises(EOPNOTSUPP):
        dmar_state().ops.domain_alloc_sva(vtd.edu, None)


def test_sva_domains_have_no_iova_space(vtd: Vtd) -> None:
    mm = _mm_with(b"x")
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
    mmput(mm)
