"""DMA page tables in RAM (the ``dma_pte`` helpers of drivers/iommu/intel/iommu.c):
``pfn_to_dma_pte``, ``__domain_mapping``, ``switch_to_super_page``,
``dma_pte_clear_level``/``domain_unmap`` and ``iova_to_phys``.

One format serves both stages, as in Linux: 512 8-byte entries per 4 KiB table,
``agaw + 2`` levels, R/W in bits 1:0 (first-stage P is bit 0 = R) and the large-page
bit 7. First-stage entries also get U/S and A (and D on writable leaves), so a
first-stage domain's table is a valid x86-64 table. Leaves use 2 MiB / 1 GiB pages
when the domain's ``iommu_superpage`` allows and both addresses are aligned.
Tables that an unmap empties are collected on a free list and freed only after
the IOTLB flush.

Differences from Linux: every leaf written is a fault-injection point
(``iommu_pgtable``), so sweeps can fail a mapping midway and check that the core
unmaps the part already mapped (Linux can only fail where it allocates a table);
``__domain_mapping`` returns how many pages it mapped; ``switch_to_super_page``
frees the replaced tables after its flush (Linux frees them first). Table pages come
from ``iommu_alloc_page_node`` (:mod:`kernel.iommu.iommu_pages`) and every entry store
goes through the page-table ownership sanitizer (:func:`kernel.mm.pgtable_write64`):
the store Linux 6.12 makes into a data page when 4 KiB is mapped inside a live 2 MiB
mapping is refused and reported instead of corrupting the page.
"""

from __future__ import annotations

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.cache import domain_flush_range
from drivers.intel_iommu.structs import DmarDomain
from kernel.bug import WARN_ON
from kernel.context import current
from kernel.errno import EINVAL, ENOMEM
from kernel.fault_inject import should_fail
from kernel.iommu.iommu_pages import iommu_alloc_page_node, iommu_free_page, iommu_put_pages_list
from kernel.mm import PAGE_OFFSET, pgtable_write64, phys_to_virt, read64
from kernel.printk import KERN_CRIT, printk

LEVEL_STRIDE = ir.VTD_STRIDE_SHIFT
PTE_ADDR = ir.DMA_PTE_ADDR_MASK
_LARGE = ir.DMA_PTE_LARGE_PAGE
_RW = ir.DMA_PTE_READ | ir.DMA_PTE_WRITE
_LEAF_PROT = _RW | ir.DMA_PTE_SNP
"""The bits of ``prot`` a leaf keeps."""
_FL_US_A = ir.DMA_FL_PTE_US | ir.DMA_FL_PTE_ACCESS
"""U/S and A: set in every first-stage entry."""


def level_to_offset_bits(level: int) -> int:
    return (level - 1) * LEVEL_STRIDE


def pfn_level_offset(pfn: int, level: int) -> int:
    return (pfn >> level_to_offset_bits(level)) & 0x1FF


def level_size(level: int) -> int:
    """Pages one entry at ``level`` covers (``lvl_to_nr_pages``)."""
    return 1 << level_to_offset_bits(level)


def first_pte_in_page(pte: int) -> bool:
    return not pte & (ir.VTD_PAGE_SIZE - 1)


def nr_pte_to_next_page(pte: int) -> int:
    return (ir.VTD_PAGE_SIZE - (pte & (ir.VTD_PAGE_SIZE - 1))) >> 3


def DOMAIN_MAX_PFN(gaw: int) -> int:
    return (1 << (gaw - ir.VTD_PAGE_SHIFT)) - 1


PFN_BITS = tuple(ir.agaw_to_width(agaw) - ir.VTD_PAGE_SHIFT for agaw in range(8))
"""Page-frame bits of an address space by AGAW (``agaw_to_width() - VTD_PAGE_SHIFT``):
the map and unmap paths test ``pfn >> PFN_BITS[agaw]`` in line."""


def domain_pfn_supported(domain: DmarDomain, pfn: int) -> bool:
    """``domain_pfn_supported``: ``pfn`` is below the domain's address width."""
    return not pfn >> PFN_BITS[domain.agaw]


def alloc_pgtable_page(gfp: int) -> int | None:
    """``iommu_alloc_page_node(domain->nid, gfp)``: a zeroed page-table page."""
    return iommu_alloc_page_node(0, gfp)


def pfn_to_dma_pte(domain: DmarDomain, pfn: int, target_level: int, gfp: int) -> tuple[int, int]:
    """``pfn_to_dma_pte``: the address of the entry for ``pfn`` at ``target_level``
    (allocating missing tables), or with ``target_level == 0`` the first leaf,
    superpage or non-present entry on the way down. Returns ``(pte, level)``;
    ``pte`` is 0 beyond the domain's width or when a table cannot be allocated.
    As in 6.12, a walk for a 4 KiB entry under a live superpage takes the
    superpage's output address for a table and returns an entry inside the data
    page; a new table is linked only over a zero entry (``try_cmpxchg64``).
    Differences: the entry stores go through the page-table ownership sanitizer
    (:func:`kernel.mm.pgtable_write64`), and a link it refuses ends the walk with
    0 instead of walking on. (Runs on every map and unmap: ``domain_pfn_supported``,
    ``agaw_to_level`` and ``pfn_level_offset`` are written out, the walk goes by
    quadword index into RAM and loads entries through :func:`kernel.mm.pgtable_words`,
    and a lookup (``target_level == 0``) has a loop of its own.)"""
    agaw = domain.agaw
    if pfn >> PFN_BITS[agaw]:  # !domain_pfn_supported()
        return 0, target_level
    level = agaw + 2  # agaw_to_level()
    shift = (level - 1) * LEVEL_STRIDE
    # Tables are direct-mapped pages: the walk goes by quadword index into RAM (an
    # entry's physical address >> 3), loading entries as q[i].
    i = (domain.pgd - PAGE_OFFSET) >> 3
    q = current.kernel.mm.words
    if not target_level:  # the first leaf, superpage or non-present entry
        while level > 1:
            i += (pfn >> shift) & 0x1FF
            val = q[i]
            if val & _LARGE or not val & 3:
                return (i << 3) + PAGE_OFFSET, level
            i = (val & PTE_ADDR) >> 3
            shift -= LEVEL_STRIDE
            level -= 1
        return ((i + (pfn & 0x1FF)) << 3) + PAGE_OFFSET, 1  # a leaf, present or not
    while True:
        i += (pfn >> shift) & 0x1FF
        if level == target_level:  # C reads the entry here only for target_level 0
            return (i << 3) + PAGE_OFFSET, target_level
        val = q[i]
        if not val & 3:
            tmp = alloc_pgtable_page(gfp)
            if tmp is None:
                return 0, target_level
            new = (tmp - PAGE_OFFSET) | _RW
            if domain.use_first_level:
                new |= _FL_US_A
            if val:  # try_cmpxchg64(&pte->val, 0, new) fails: "use theirs"
                iommu_free_page(tmp)
            elif pgtable_write64((i << 3) + PAGE_OFFSET, new):
                val = new
            else:  # the sanitizer refused the link: nothing to walk into
                iommu_free_page(tmp)
                return 0, target_level
        if level == 1:
            return (i << 3) + PAGE_OFFSET, target_level
        i = (val & PTE_ADDR) >> 3
        shift -= LEVEL_STRIDE
        level -= 1


def hardware_largepage_caps(domain: DmarDomain, iov_pfn: int, phy_pfn: int, pages: int) -> int:
    """``hardware_largepage_caps``: the largest level both addresses are aligned to."""
    support = domain.iommu_superpage
    level = 1
    pfnmerge = iov_pfn | phy_pfn
    while support and not pfnmerge & ir.VTD_STRIDE_LOW:
        pages >>= LEVEL_STRIDE
        if not pages:
            break
        pfnmerge >>= LEVEL_STRIDE
        level += 1
        support -= 1
    return level


def switch_to_super_page(domain: DmarDomain, start_pfn: int, end_pfn: int, level: int) -> None:
    """``switch_to_super_page``: tables under a range that becomes superpages are
    unlinked and, after the flush, freed."""
    lvl_pages = level_size(level)
    pte = 0
    freelist: list[int] = []
    pfn = start_pfn
    while pfn <= end_pfn:
        if not pte:
            pte, _ = pfn_to_dma_pte(domain, pfn, level, 0)
            if not pte:
                break
        if read64(pte) & 3:
            domain_unmap(domain, pfn, pfn + lvl_pages - 1, freelist)
            domain_flush_range(
                domain, start_pfn << ir.VTD_PAGE_SHIFT, end_pfn << ir.VTD_PAGE_SHIFT, 0
            )
        pte += 8
        pfn += lvl_pages
        if first_pte_in_page(pte):
            pte = 0
    iommu_put_pages_list(freelist)


def __domain_mapping(
    domain: DmarDomain, iov_pfn: int, phys_pfn: int, nr_pages: int, prot: int, gfp: int
) -> int:
    """``__domain_mapping``: write leaves for ``nr_pages`` pages, superpages where
    possible. Returns the pages mapped; raises when it could map none (EINVAL out
    of range or without R/W, ENOMEM without a table page). (Runs on every map:
    ``lvl_to_nr_pages`` and ``first_pte_in_page`` are written out, and
    ``hardware_largepage_caps`` is not called when the domain has no superpages or
    fewer pages are left than one superpage holds: it would answer level 1.)"""
    if (iov_pfn + nr_pages - 1) >> PFN_BITS[domain.agaw]:  # !domain_pfn_supported()
        raise EINVAL(f"pfn {iov_pfn + nr_pages - 1:#x} beyond the domain's address width")
    if not prot & _RW:
        raise EINVAL("mapping with neither read nor write permission")
    attr = prot & _LEAF_PROT
    # Linux 6.12 (since eea53c581688, v6.7) sets bit 0 in every leaf: Present for a
    # first-stage entry, Read for a second-stage one, so a write-only second-stage
    # mapping is readable too. A 2025 patch restored write-only second-stage entries;
    # the model mirrors 6.12 here.
    attr |= ir.DMA_FL_PTE_PRESENT
    if domain.use_first_level:
        attr |= _FL_US_A
        if prot & ir.DMA_PTE_WRITE:
            attr |= ir.DMA_FL_PTE_DIRTY
    domain.has_mappings = True
    q = current.kernel.mm.words
    pteval = (phys_pfn << ir.VTD_PAGE_SHIFT) | attr
    done = 0
    pte = 0
    largepage_lvl = 1
    lvl_pages = 1
    while nr_pages > 0:
        if not pte:
            largepage_lvl = (
                hardware_largepage_caps(domain, iov_pfn, phys_pfn, nr_pages)
                if domain.iommu_superpage and nr_pages >> LEVEL_STRIDE
                else 1
            )
            pte, largepage_lvl = pfn_to_dma_pte(domain, iov_pfn, largepage_lvl, gfp)
            if not pte:
                if done:
                    return done
                raise ENOMEM("no memory for a page-table page")
            lvl_pages = 1 << ((largepage_lvl - 1) * LEVEL_STRIDE)  # lvl_to_nr_pages()
            if largepage_lvl > 1:
                pteval |= ir.DMA_PTE_LARGE_PAGE
                to_remove = min(nr_pages, nr_pte_to_next_page(pte) * lvl_pages)
                switch_to_super_page(domain, iov_pfn, iov_pfn + to_remove - 1, largepage_lvl)
            else:
                pteval &= ~ir.DMA_PTE_LARGE_PAGE
        if should_fail("iommu_pgtable"):
            if done:
                return done
            raise ENOMEM("iommu_pgtable")
        old = q[(pte - PAGE_OFFSET) >> 3]
        if old:
            printk(
                KERN_CRIT,
                f"DMAR: ERROR: DMA PTE for vPFN {iov_pfn:#x} already set "
                f"(to {old:x} not {pteval:x})",
            )
            WARN_ON(True, f"DMA PTE for vPFN {iov_pfn:#x} already set")
        else:
            pgtable_write64(pte, pteval)
        done += lvl_pages
        nr_pages -= lvl_pages
        if not nr_pages:  # (never below 0: a superpage level fits the pages left)
            return done
        iov_pfn += lvl_pages
        phys_pfn += lvl_pages
        pteval += lvl_pages << ir.VTD_PAGE_SHIFT
        pte += 8
        if not pte & (ir.VTD_PAGE_SIZE - 1) or (largepage_lvl > 1 and nr_pages < lvl_pages):
            pte = 0
    return done


def dma_pte_list_pagetables(
    domain: DmarDomain, level: int, parent_val: int, freelist: list[int]
) -> None:
    """``dma_pte_list_pagetables``: the table ``parent_val`` points at and every table
    below it go on ``freelist``."""
    table = phys_to_virt(parent_val & PTE_ADDR)
    freelist.append(table)
    if level == 1:
        return
    for i in range(512):
        val = read64(table + 8 * i)
        if val & 3 and not val & ir.DMA_PTE_LARGE_PAGE:
            dma_pte_list_pagetables(domain, level - 1, val, freelist)


def dma_pte_clear_level(
    domain: DmarDomain,
    level: int,
    table: int,
    pfn: int,
    start_pfn: int,
    last_pfn: int,
    freelist: list[int],
) -> None:
    """``dma_pte_clear_level``: clear entries covering ``[start_pfn, last_pfn]``; tables
    entirely inside the range go on ``freelist``. (Runs per level on every unmap:
    ``pfn_level_offset``, ``level_size`` and ``first_pte_in_page`` are written out; the
    entries are walked by quadword index into RAM, loaded through
    :func:`kernel.mm.pgtable_words`.)"""
    if start_pfn > pfn:
        pfn = start_pfn
    shift = (level - 1) * LEVEL_STRIDE
    size = 1 << shift
    i = ((table - PAGE_OFFSET) >> 3) + ((pfn >> shift) & 0x1FF)  # the entry's quadword index
    q = current.kernel.mm.words
    while True:
        level_pfn = pfn >> shift << shift
        val = q[i]
        if val & 3:
            if start_pfn <= level_pfn and last_pfn >= level_pfn + size - 1:
                if level > 1 and not val & _LARGE:
                    dma_pte_list_pagetables(domain, level - 1, val, freelist)
                pgtable_write64((i << 3) + PAGE_OFFSET, 0)
            elif level > 1:
                dma_pte_clear_level(
                    domain,
                    level - 1,
                    (val & PTE_ADDR) + PAGE_OFFSET,
                    level_pfn,
                    start_pfn,
                    last_pfn,
                    freelist,
                )
        pfn = level_pfn + size
        i += 1
        if not i & 0x1FF or pfn > last_pfn:  # first_pte_in_page()
            break


def domain_unmap(domain: DmarDomain, start_pfn: int, last_pfn: int, freelist: list[int]) -> None:
    """``domain_unmap``: clear the range; the top table itself goes too when the
    whole address space is unmapped. (Runs on every unmap: the checks are written
    out, WARN_ON called only to warn.)"""
    agaw = domain.agaw
    if last_pfn >> PFN_BITS[agaw]:  # !domain_pfn_supported()
        WARN_ON(True)
        return
    if start_pfn > last_pfn:
        WARN_ON(True)
        return
    dma_pte_clear_level(domain, agaw + 2, domain.pgd, 0, start_pfn, last_pfn, freelist)
    if not start_pfn and last_pfn == (1 << (domain.gaw - ir.VTD_PAGE_SHIFT)) - 1:
        freelist.append(domain.pgd)
        domain.pgd = 0


def iova_to_phys(domain: DmarDomain, iova: int) -> int:
    """``intel_iommu_iova_to_phys``: the leaf's address plus the offset in its page."""
    pte, level = pfn_to_dma_pte(domain, iova >> ir.VTD_PAGE_SHIFT, 0, 0)
    if not pte:
        return 0
    val = read64(pte)
    if not val & 3:
        return 0
    return (val & PTE_ADDR) + (iova & ((1 << (level_to_offset_bits(level) + 12)) - 1))
