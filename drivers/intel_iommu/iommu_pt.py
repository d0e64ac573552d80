"""VT-d paging domains on the generic page table (``iommu.pt=generic``): what
"iommu/vt-d: Use the generic iommu page table" (merged after 6.12) made of the driver's
domain code - first-stage domains get an x86_64 table, second-stage domains a
vtdss table, and the domain ops' map/unmap/iova_to_phys are the library's.

The domain is shaped as 6.12 shapes it (:func:`paging_domain_alloc`: widths,
superpage support, coherency), then its table comes from the library; ``pgd`` and
``agaw`` are set from the table, so context and PASID entries are written by the
unchanged 6.12 code. Flushing is the 6.12 driver's: ``iotlb_sync`` flushes the
gathered range and then frees the gather's table pages; a deferred (flush-queue)
unmap parks them on ``deferred_free`` until the queue's full flush.

Behaviour that differs from the default (6.12) generation, as upstream after the conversion:
mapping over a live entry fails with EADDRINUSE and changes nothing (6.12 prints
"DMAR: ERROR: DMA PTE for vPFN ... already set" and WARNs, keeping the old entry);
a range beyond the domain's width is ERANGE (6.12: EFAULT from ``intel_iommu_map``);
an unmap stops at the first hole instead of clearing the whole range; a 2 MiB leaf
replaces an empty lower table through the gather (6.12: ``switch_to_super_page``).
First-stage tables use the canonical lower half (``PT_FEAT_SIGN_EXTEND``) with the
VA width capped at the unit's MGAW - the fix for the first-stage regression Intel's
graphics CI bisected to the conversion. 6.12's per-leaf ``iommu_pgtable`` fault
point is not here: the library fails only where it allocates a table.
"""

from __future__ import annotations

from drivers.intel_iommu import iommu as vtd
from drivers.intel_iommu.domain import to_dmar_domain
from drivers.intel_iommu.structs import DmarDomain
from kernel.bitfield import BIT
from kernel.bug import WARN_ON
from kernel.device import Device
from kernel.errno import KernelError
from kernel.iommu.generic_pt.fmt.vtdss import PtIommuVtdssCfg, pt_iommu_vtdss_init
from kernel.iommu.generic_pt.fmt.x86_64 import PtIommuX86_64Cfg, pt_iommu_x86_64_init
from kernel.iommu.generic_pt.iommu_pt import PtIommu
from kernel.iommu.generic_pt.pt_common import PT_FEAT_FLUSH_RANGE, PT_FEAT_SIGN_EXTEND, PtIommuCfg
from kernel.iommu.iommu_h import IommuDomain, IommuIotlbGather
from kernel.iommu.iommu_pages import iommu_free_page
from kernel.mm import GFP_KERNEL, PAGE_OFFSET, free_page, kfree


def intel_pt(domain: IommuDomain) -> PtIommu:
    """The domain's generic table (``dmar_domain->fspt`` / ``->sspt``)."""
    table = to_dmar_domain(domain).pt
    assert table is not None, f"{domain!r} is not a generic-pt domain"
    return table


def intel_pt_domain_alloc(dev: Device, first_stage: bool) -> DmarDomain:
    """``intel_iommu_domain_alloc_first_stage`` / ``_second_stage``: a domain shaped
    for ``dev``'s unit whose table is the library's."""
    domain = vtd.paging_domain_alloc(dev, first_stage)
    iommu_free_page(domain.pgd)  # the 6.12 top table; the library allocates its own
    domain.pgd = 0
    bitmap = domain.pgsize_bitmap
    common = PtIommuCfg(BIT(PT_FEAT_FLUSH_RANGE), domain.gaw, 52)
    try:
        if first_stage:
            common.features |= BIT(PT_FEAT_SIGN_EXTEND)
            table = pt_iommu_x86_64_init(domain, PtIommuX86_64Cfg(common), GFP_KERNEL)
        else:
            table = pt_iommu_vtdss_init(domain, PtIommuVtdssCfg(common), GFP_KERNEL)
    except KernelError:
        kfree(domain.kmem)
        raise
    domain.pt = table
    domain.pgd = table.top_table + PAGE_OFFSET
    domain.agaw = table.top_level - 1
    domain.pgsize_bitmap &= bitmap
    return domain


def intel_pt_map_pages(
    domain: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, gfp: int
) -> int:
    """``pt_iommu_{x86_64,vtdss}_map_pages``."""
    return intel_pt(domain).map_pages(iova, paddr, pgsize, pgcount, prot, gfp)


def intel_pt_unmap_pages(
    domain: IommuDomain, iova: int, pgsize: int, pgcount: int, gather: IommuIotlbGather
) -> int:
    """``pt_iommu_*_unmap_pages``; a queued gather's pages wait for the flush queue."""
    got = intel_pt(domain).unmap_pages(iova, pgsize, pgcount, gather)
    if gather.queued and gather.freelist:
        to_dmar_domain(domain).deferred_free.extend(gather.freelist)
        gather.freelist = []
    return got


def intel_pt_iova_to_phys(domain: IommuDomain, iova: int) -> int:
    """``pt_iommu_*_iova_to_phys``."""
    return intel_pt(domain).iova_to_phys(iova)


def intel_pt_domain_free(domain: IommuDomain) -> None:
    """``intel_iommu_domain_free`` of a generic-pt domain: tables a deferred unmap
    left, then ``pt_iommu_deinit``, then the domain."""
    dmar_domain = to_dmar_domain(domain)
    if WARN_ON(bool(dmar_domain.devices), "freeing a domain with devices attached"):
        return
    pages, dmar_domain.deferred_free = dmar_domain.deferred_free, []
    for page in pages:
        free_page(page)
    intel_pt(domain).deinit()
    dmar_domain.pgd = 0
    kfree(dmar_domain.kmem)
    dmar_domain.kmem = 0
