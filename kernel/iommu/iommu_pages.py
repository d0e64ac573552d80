"""IOMMU page-table page allocation (drivers/iommu/iommu-pages.h, Linux 6.12).

6.12 gives IOMMU drivers one allocation path for the memory their hardware walks:
``iommu_alloc_pages_node(nid, gfp, order)`` returns zeroed pages and accounts them
(``NR_IOMMU`` / ``NR_SECONDARY_PAGETABLE``), ``iommu_free_pages`` and
``iommu_put_pages_list`` give them back. The model keeps the same functions and adds
what the accounting stands for: the pages are remembered as IOMMU page-table pages
(:attr:`kernel.mm.MemoryManager.pgtable`), which is what the page-table ownership
sanitizer (:func:`kernel.mm.pgtable_write64`) checks a page-table store against. A
page leaves the set when freed, so a store into a freed table page is caught too.

Differences from Linux: NUMA nodes are ignored (one node); a free list is a Python
list of virtual addresses rather than a ``list_head`` of ``struct page``. Each
allocation is the page allocator's fault-injection point (``alloc_pages``).
"""

from __future__ import annotations

import sys

from kernel.context import current
from kernel.mm import __GFP_ZERO, MAX_PAGE_ORDER, PAGE_OFFSET, PAGE_SHIFT, free_pages, virt_to_page

NUMA_NO_NODE = -1


def iommu_alloc_pages_node(nid: int, gfp: int, order: int) -> int | None:
    """``iommu_alloc_pages_node``: ``1 << order`` zeroed pages for IOMMU tables (their
    kernel virtual address), remembered as page-table pages; None when out of memory."""
    if not 0 <= order <= MAX_PAGE_ORDER:
        return None
    mm = current.kernel.mm
    n = 1 << order
    page = mm.alloc_pages_n(n, n, gfp | __GFP_ZERO, _site())
    if page is None:
        return None
    mm.pgtable.update(range(page.pfn, page.pfn + n))
    return PAGE_OFFSET + (page.pfn << PAGE_SHIFT)


def iommu_alloc_pages(gfp: int, order: int) -> int | None:
    """``iommu_alloc_pages``: :func:`iommu_alloc_pages_node` on the local node."""
    return iommu_alloc_pages_node(NUMA_NO_NODE, gfp, order)


def iommu_alloc_page_node(nid: int, gfp: int) -> int | None:
    """``iommu_alloc_page_node``: one zeroed page-table page."""
    return iommu_alloc_pages_node(nid, gfp, 0)


def iommu_alloc_page(gfp: int) -> int | None:
    """``iommu_alloc_page``: one zeroed page-table page on the local node."""
    return iommu_alloc_pages_node(NUMA_NO_NODE, gfp, 0)


def iommu_free_pages(virt: int | None, order: int) -> None:
    """``iommu_free_pages``: give back pages from :func:`iommu_alloc_pages_node`
    (NULL is ignored); they stop being page-table pages."""
    if virt:
        free_pages(virt, order)


def iommu_free_page(virt: int | None) -> None:
    """``iommu_free_page``."""
    iommu_free_pages(virt, 0)


def iommu_put_pages_list(pages: list[int]) -> None:
    """``iommu_put_pages_list``: free every page-table page gathered on ``pages``
    (after the IOTLB flush that stopped the hardware walking them), and empty it."""
    for virt in pages:
        iommu_free_pages(virt, 0)
    pages.clear()


def is_iommu_pgtable_page(virt: int) -> bool:
    """Whether the page at kernel address ``virt`` is an IOMMU page-table page."""
    return virt_to_page(virt).pfn in current.kernel.mm.pgtable


def _site() -> str:
    """The driver's call site (the first frame outside this file), for leak reports."""
    f = sys._getframe(1)
    while f.f_back is not None and f.f_code.co_filename == __file__:
        f = f.f_back
    return f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}"
