"""The page-table ownership sanitizer on VT-d's default page tables.

Linux 6.12's ``pfn_to_dma_pte`` asked for a level-1 entry under a live 2 MiB
superpage does not stop at the superpage: it takes the superpage's output address
for a table and returns an entry inside the *data* page, and ``__domain_mapping``
stores the new PTE there when that qword is zero. The model walks the same way; the
kernel's memory layer knows the data page was not allocated as an IOMMU page-table
page (``iommu_alloc_pages``) and refuses the store, reporting a ``pt-owner`` finding
with the page and the ``iommu_map`` call chain. The data and the 2 MiB translation
stay as they were.
"""

from __future__ import annotations

import re

import pytest

from drivers.intel_iommu.pgtable import pfn_to_dma_pte
from drivers.intel_iommu.structs import DmarDomain
from iommulab.pytest_plugin import Expectations
from kernel.errno import ENOMEM
from kernel.findings import findings
from kernel.iommu.iommu import iommu_domain_free, iommu_paging_domain_alloc
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_unmap
from kernel.iommu.iommu_pages import is_iommu_pgtable_page
from kernel.mm import (
    __GFP_ZERO,
    GFP_KERNEL,
    __free_pages,
    alloc_pages,
    memory_read,
    page_address,
    phys_to_virt,
)
from kernel.trace import capture
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory

RW = IOMMU_READ | IOMMU_WRITE
SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30
IOVA = 0x4000_0000


def test_4k_map_inside_a_live_2m_mapping_is_a_page_table_ownership_finding(
    make_vtd: VtdFactory, iommulab_expect: Expectations
) -> None:
    v: Vtd = make_vtd()
    v.kernel.activate()
    dom = iommu_paging_domain_alloc(v.edu)
    assert isinstance(dom, DmarDomain)
    page = alloc_pages(GFP_KERNEL | __GFP_ZERO, 9)  # 2 MiB, 2 MiB aligned, zeroed
    assert page is not None
    data = page.phys
    iommulab_expect.pt_owner(f"into data page {data:#x} ")
    iommu_map(dom, IOVA, data, SZ_2M, RW, GFP_KERNEL)
    pte, level = pfn_to_dma_pte(dom, IOVA >> 12, 0, 0)
    assert level == 2 and is_iommu_pgtable_page(pte)  # a superpage leaf in a table page
    before = memory_read(page_address(page), SZ_2M)

    # The walk 6.12 does for a 4 KiB map lands inside the data page.
    target, _ = pfn_to_dma_pte(dom, (IOVA + 0x5000) >> 12, 1, 0)
    assert target == phys_to_virt(data) + 5 * 8 and not is_iommu_pgtable_page(target)
    with capture("iommulab:finding") as events:
        iommu_map(dom, IOVA + 0x5000, 0x30_0000, SZ_4K, RW, GFP_KERNEL)

    assert memory_read(page_address(page), SZ_2M) == before  # nothing silently changed
    assert iommu_iova_to_phys(dom, IOVA + 0x5123) == data + 0x5123  # 2 MiB intact
    [found] = [f for f in findings() if f.check == "pt-owner"]
    assert found.message.startswith(f"IOMMU page-table entry written into data page {data:#x} (")
    assert "512 page(s)" in found.message and "test_pgtable_owner.py" in found.message
    funcs = [re.sub(r" \(.*", "", line) for line in found.chain]
    assert funcs[0] == "__domain_mapping"
    assert funcs.index("intel_iommu_map") < funcs.index("iommu_map")
    assert "store of 0x0000000000300" in found.detail and f"to {data + 0x28:#x}" in found.detail
    [event] = events
    assert event.fields["check"] == "pt-owner" and event.fields["message"] == found.message
    assert event.text.startswith("pt-owner unit= dev= pasid=")
    dmesg = v.kernel.dmesg()
    assert f"iommulab: pt-owner: IOMMU page-table entry written into data page {data:#x}" in dmesg

    iommu_unmap(dom, IOVA, SZ_2M)
    iommu_domain_free(dom)
    __free_pages(page, 9)


def test_page_table_pages_stop_being_page_table_pages_when_freed(vtd: Vtd) -> None:
    """A table page an unmap frees goes back as an ordinary page: a later store
    through a stale pointer to it would be caught."""
    vtd.kernel.activate()
    dom = iommu_paging_domain_alloc(vtd.edu)
    assert isinstance(dom, DmarDomain)
    iommu_map(dom, IOVA, 0x30_0000, SZ_4K, RW, GFP_KERNEL)
    pte, level = pfn_to_dma_pte(dom, IOVA >> 12, 0, 0)
    assert level == 1 and is_iommu_pgtable_page(pte)
    iommu_unmap(dom, IOVA, SZ_2M)  # empties and frees the level-1 table
    assert not is_iommu_pgtable_page(pte)
    iommu_domain_free(dom)


def test_a_table_link_into_a_1g_mapping_is_refused_and_the_map_fails(
    make_vtd: VtdFactory, iommulab_expect: Expectations
) -> None:
    """Under a 1 GiB superpage the walk would link a new level-1 table into the data
    the superpage maps; the sanitizer refuses that store, the new table page is given
    back (the teardown leak check would see it otherwise) and the map fails."""
    v: Vtd = make_vtd()
    v.kernel.activate()
    iommulab_expect.pt_owner("into data page 0x0 ")
    dom = iommu_paging_domain_alloc(v.edu)
    assert isinstance(dom, DmarDomain)
    iommu_map(dom, SZ_1G, 0, SZ_1G, RW, GFP_KERNEL)
    assert pfn_to_dma_pte(dom, SZ_1G >> 12, 0, 0)[1] == 3
    with pytest.raises(ENOMEM):
        iommu_map(dom, SZ_1G + 0x5000, 0x30_0000, SZ_4K, RW, GFP_KERNEL)
    [found] = [f for f in findings() if f.check == "pt-owner"]
    assert "memory the kernel does not allocate" in found.message
    assert iommu_iova_to_phys(dom, SZ_1G + 0x5123) == 0x5123
    iommu_unmap(dom, SZ_1G, SZ_1G)
    iommu_domain_free(dom)
