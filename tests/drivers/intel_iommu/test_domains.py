"""Paging domains: page tables in RAM in each stage's format, large pages, unmap and
table freeing, domain IDs, the identity and blocking domains, and bad input."""

from __future__ import annotations

import pytest

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import dmar_state
from drivers.intel_iommu.pgtable import pfn_to_dma_pte
from drivers.intel_iommu.structs import DmarDomain
from kernel.delay import msleep
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.errno import EFAULT, EINVAL, ENOMEM
from kernel.fault_inject import injector
from kernel.iommu.iommu import (
    iommu_attach_device,
    iommu_detach_device,
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_group_claim_dma_owner,
    iommu_group_release_dma_owner,
    iommu_paging_domain_alloc,
)
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE, has_optional_op
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_unmap
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.mm import GFP_KERNEL, alloc_pages_exact, free_pages_exact, kfree, kmalloc, read64
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory
from tests.kernel.iommu.helpers import device_read

RW = IOMMU_READ | IOMMU_WRITE
SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30


def _domain(v: Vtd) -> DmarDomain:
    dom = iommu_paging_domain_alloc(v.edu)
    assert isinstance(dom, DmarDomain)
    return dom


def _leaf(dom: DmarDomain, iova: int) -> tuple[int, int]:
    pte, level = pfn_to_dma_pte(dom, iova >> 12, 0, 0)
    return read64(pte), level


def _live_pages(v: Vtd) -> int:
    return sum(1 for a in v.kernel.mm.live() if a.kind == "pages")


def test_first_stage_leaves_are_x86_entries(vtd: Vtd) -> None:
    dom = _domain(vtd)
    iommu_map(dom, 0x10000, 0x300000, SZ_4K, RW, GFP_KERNEL)
    iommu_map(dom, 0x11000, 0x301000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    rw, level = _leaf(dom, 0x10000)
    assert level == 1 and rw == 0x300000 | 0x1 | 0x2 | 0x4 | 0x20 | 0x40
    ro, _ = _leaf(dom, 0x11000)
    assert ro == 0x301000 | 0x1 | 0x4 | 0x20
    top = read64(dom.pgd)
    assert top & 0x27 == 0x27
    iommu_unmap(dom, 0x10000, 2 * SZ_4K)
    iommu_domain_free(dom)


def test_second_stage_leaves_carry_read_and_write_only(make_vtd: VtdFactory) -> None:
    v = make_vtd(config={"flts": False})
    dom = _domain(v)
    iommu_map(dom, 0x10000, 0x300000, SZ_4K, RW, GFP_KERNEL)
    assert _leaf(dom, 0x10000) == (0x300003, 1)
    iommu_unmap(dom, 0x10000, SZ_4K)
    iommu_domain_free(dom)


def test_aligned_ranges_use_1g_and_2m_leaves(vtd: Vtd) -> None:
    dom = _domain(vtd)
    assert dom.pgsize_bitmap == SZ_4K | SZ_2M | SZ_1G
    iommu_map(dom, SZ_1G, 2 * SZ_1G, SZ_1G + SZ_2M, RW, GFP_KERNEL)
    one_g, level = _leaf(dom, SZ_1G)
    assert level == 3 and one_g & ir.DMA_PTE_LARGE_PAGE and one_g & ~0xFFF == 2 * SZ_1G
    assert _leaf(dom, 2 * SZ_1G)[1] == 2
    assert iommu_iova_to_phys(dom, SZ_1G + 0x12345) == 2 * SZ_1G + 0x12345
    assert iommu_iova_to_phys(dom, 2 * SZ_1G + 0x345) == 3 * SZ_1G + 0x345
    assert iommu_unmap(dom, SZ_1G, SZ_1G + SZ_2M) == SZ_1G + SZ_2M
    iommu_domain_free(dom)


def test_device_dma_through_a_2m_page_uses_one_iotlb_entry(vtd: Vtd) -> None:
    dom = _domain(vtd)
    iommu_map(dom, 0x4000_0000, 0x0200_0000, SZ_2M, RW, GFP_KERNEL)
    iommu_attach_device(dom, vtd.edu)
    misses = vtd.unit.stats.iotlb_misses
    assert device_read(vtd.edu, 0x4000_0000 + 0x1000, 64) == 0
    assert device_read(vtd.edu, 0x4000_0000 + 0x100000, 64) == 0
    assert vtd.unit.stats.iotlb_misses == misses + 1
    iommu_detach_device(dom, vtd.edu)
    iommu_unmap(dom, 0x4000_0000, SZ_2M)
    iommu_domain_free(dom)


def test_a_superpage_replaces_an_emptied_page_table(vtd: Vtd) -> None:
    dom = _domain(vtd)
    iommu_map(dom, SZ_2M, 0x600000, SZ_4K, RW, GFP_KERNEL)
    iommu_unmap(dom, SZ_2M, SZ_4K)
    table_val, level = _leaf(dom, SZ_2M)
    assert level == 1 and table_val == 0
    pages = _live_pages(vtd)
    iommu_map(dom, SZ_2M, 0x800000, SZ_2M, RW, GFP_KERNEL)
    val, level = _leaf(dom, SZ_2M)
    assert level == 2 and val & ir.DMA_PTE_LARGE_PAGE
    assert _live_pages(vtd) == pages - 1
    iommu_unmap(dom, SZ_2M, SZ_2M)
    iommu_domain_free(dom)


def test_unmap_of_nothing_returns_zero(vtd: Vtd) -> None:
    dom = _domain(vtd)
    assert iommu_unmap(dom, 0x10000, SZ_4K) == 0
    iommu_map(dom, 0, 0x100000, SZ_4K, RW, GFP_KERNEL)
    assert iommu_unmap(dom, 0x5000, SZ_4K) == 0
    iommu_unmap(dom, 0, SZ_4K)
    iommu_domain_free(dom)


def test_unmap_inside_a_large_page_removes_all_of_it(vtd: Vtd) -> None:
    dom = _domain(vtd)
    iommu_map(dom, SZ_2M, 0x400000, SZ_2M, RW, GFP_KERNEL)
    assert iommu_unmap(dom, SZ_2M, SZ_4K) == SZ_2M
    assert iommu_iova_to_phys(dom, SZ_2M + SZ_4K) == 0
    iommu_domain_free(dom)


def test_a_table_the_unmap_empties_is_freed_after_the_flush(vtd: Vtd) -> None:
    dom = _domain(vtd)
    iommu_map(dom, 0, 0x100000, SZ_4K, RW, GFP_KERNEL)
    base = _live_pages(vtd)
    iommu_map(dom, SZ_2M, 0x301000, SZ_2M, RW, GFP_KERNEL)
    assert _live_pages(vtd) == base + 1
    assert iommu_unmap(dom, SZ_2M, SZ_2M) == SZ_2M
    assert _live_pages(vtd) == base
    iommu_unmap(dom, 0, SZ_4K)
    iommu_domain_free(dom)


def test_map_beyond_the_domain_width_is_efault(vtd: Vtd) -> None:
    dom = _domain(vtd)
    with pytest.raises(EFAULT):
        iommu_map(dom, 1 << 48, 0, SZ_4K, RW, GFP_KERNEL)
    assert (
        "DMAR: intel_iommu_map: iommu width (48) is not sufficient for the mapped "
        "address (1000000001000)"
    ) in vtd.kernel.dmesg()
    iommu_domain_free(dom)


def test_map_pages_refuses_bad_sizes_and_permissions(vtd: Vtd) -> None:
    dom = _domain(vtd)
    assert dom.ops is not None
    with pytest.raises(EINVAL):
        dom.ops.map_pages(dom, 0, 0, 0x2000, 1, RW, GFP_KERNEL)
    with pytest.raises(EINVAL):
        dom.ops.map_pages(dom, SZ_4K, 0, SZ_2M, 1, RW, GFP_KERNEL)
    with pytest.raises(EINVAL):
        iommu_map(dom, 0, 0x100000, SZ_4K, 0, GFP_KERNEL)
    iommu_domain_free(dom)


def test_mapping_an_already_mapped_iova_keeps_the_old_pte_and_warns(vtd: Vtd) -> None:
    dom = _domain(vtd)
    iommu_map(dom, 0x10000, 0x300000, SZ_4K, RW, GFP_KERNEL)
    before = _leaf(dom, 0x10000)
    iommu_map(dom, 0x10000, 0x500000, SZ_4K, RW, GFP_KERNEL)
    assert _leaf(dom, 0x10000) == before
    assert vtd.take_warnings() == ["DMA PTE for vPFN 0x10 already set"]
    assert "DMAR: ERROR: DMA PTE for vPFN 0x10 already set" in vtd.kernel.dmesg()
    iommu_unmap(dom, 0x10000, SZ_4K)
    iommu_domain_free(dom)


def test_domain_ids_come_from_the_unit_and_go_back(vtd: Vtd) -> None:
    iommu = dmar_state().units[0]
    assert set(iommu.domain_ida.ids) == {ir.IDA_START_DID, ir.IDA_START_DID + 1}
    dom = _domain(vtd)
    iommu_attach_device_pasid(dom, vtd.dsa, 7)
    assert dom.iommu_array[iommu.seq_id].did == ir.IDA_START_DID + 2
    iommu_attach_device_pasid(dom, vtd.dsa, 8)
    assert dom.iommu_array[iommu.seq_id].refcnt == 2
    iommu_detach_device_pasid(dom, vtd.dsa, 7)
    iommu_detach_device_pasid(dom, vtd.dsa, 8)
    assert set(iommu.domain_ida.ids) == {ir.IDA_START_DID, ir.IDA_START_DID + 1}
    assert dom.iommu_array == {}
    iommu_domain_free(dom)


def test_lazy_unmap_defers_the_flush_and_the_freed_table(make_vtd: VtdFactory) -> None:
    v = make_vtd("iommu.strict=0")
    edu = v.edu
    raw = alloc_pages_exact(2 * SZ_2M, GFP_KERNEL)
    assert raw is not None
    buf = raw + (SZ_4K if not (raw - 0xFFFF_8880_0000_0000) % SZ_2M else 0)
    handle = dma_map_single(edu, buf, SZ_2M, DMA_TO_DEVICE)
    assert not dma_mapping_error(edu, handle)
    dom = iommu_get_domain_for_dev(edu)
    assert isinstance(dom, DmarDomain)
    descriptors = v.unit.stats.qi_descriptors
    dma_unmap_single(edu, handle, SZ_2M, DMA_TO_DEVICE)
    assert v.unit.stats.qi_descriptors == descriptors
    assert len(dom.deferred_free) == 1
    msleep(11)
    assert v.unit.stats.qi_descriptors > descriptors
    assert dom.deferred_free == []
    free_pages_exact(raw, 2 * SZ_2M)


def test_blocked_rid_faults_until_the_owner_releases_it(vtd: Vtd) -> None:
    edu = vtd.edu
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(edu, handle)
    group = edu.iommu_group
    iommu_group_claim_dma_owner(group, "test")
    _, fault = vtd.dma_read(edu, handle, 8)
    assert fault is not None and fault.reason == 0x59
    iommu_group_release_dma_owner(group)
    assert vtd.dma_read(edu, handle, 8)[1] is None
    dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)


def test_legacy_blocked_rid_faults_context_not_present(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=sm_off")
    group = v.edu.iommu_group
    iommu_group_claim_dma_owner(group, "test")
    _, fault = v.dma_read(v.edu, 0x1000, 8)
    assert fault is not None and fault.reason == 0x02
    iommu_group_release_dma_owner(group)


def test_legacy_identity_domain_is_a_pass_through_context(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=sm_off iommu.passthrough=1")
    ctx = v.unit.walker.context(v.unit.root, False, v.edu.rid)
    assert ctx.stage is not None and ctx.stage.kind == 2
    assert v.dma_read(v.edu, 0x300000, 8)[1] is None


def test_failed_attach_leaves_the_device_on_its_previous_domain(vtd: Vtd) -> None:
    edu = vtd.edu
    default = iommu_get_domain_for_dev(edu)
    dom = _domain(vtd)
    inj = injector()
    inj.arm(1)
    with pytest.raises(ENOMEM):
        iommu_attach_device(dom, edu)
    inj.disarm()
    assert iommu_get_domain_for_dev(edu) is default
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(edu, handle)
    assert device_read(edu, handle, 64) == 0
    dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)
    iommu_domain_free(dom)


def test_identity_domain_has_no_page_table(vtd: Vtd) -> None:
    identity = dmar_state().ops.identity_domain
    for op in ("map_pages", "unmap_pages", "iova_to_phys"):
        assert not has_optional_op(identity.ops, op)
    with pytest.raises(EINVAL):
        iommu_map(identity, 0, 0, SZ_4K, RW, GFP_KERNEL)
    assert iommu_unmap(identity, 0, SZ_4K) == 0
    assert iommu_iova_to_phys(identity, 0x1000) == 0x1000


def test_second_stage_write_only_leaves_are_readable_as_in_6_12(make_vtd: VtdFactory) -> None:
    """6.12's ``__domain_mapping`` sets bit 0 (R) in every second-stage leaf
    (eea53c581688): a write-only mapping is readable by the device too."""
    v = make_vtd(config={"flts": False})
    dom = _domain(v)
    iommu_map(dom, 0x10000, 0x300000, SZ_4K, IOMMU_WRITE, GFP_KERNEL)
    assert _leaf(dom, 0x10000) == (0x300003, 1)
    iommu_unmap(dom, 0x10000, SZ_4K)
    iommu_domain_free(dom)
