"""The VT-d driver proper (drivers/iommu/intel/iommu.c, ~v6.15): unit bring-up, device
probe and release, domains, attach, upstream PASID attach, map/unmap.

Bring-up of one unit follows ``init_dmars``/``intel_iommu_init``, after interrupt
remapping (:mod:`.irq_remapping`: QIE, SIRTP, global IEC flush, IRE, as the x86 APIC
setup does before any DMA remapping): queued invalidation
(``intel_iommu_init_qi``, falling back to register-based invalidation without QI),
the root table, SRTP through GCMD/GSTS, the global context/PASID-cache/IOTLB
invalidations (skipped with CAP.ESRTPS), the fault interrupt, registration with
the IOMMU core (which probes the devices in scope and attaches their default
domains), and last TE, then the protected memory regions are turned off.

Domains: DMA/UNMANAGED paging domains are first-stage when the unit is in
scalable mode with FLTS (``first_level_by_default``), second-stage otherwise; the
identity and blocked domains are static. Each unit gives a domain a DID (from 2;
1 is ``FLPT_DEFAULT_DID`` for pass-through and SVA), refcounted over its
attachments. In scalable mode a device's RID is its PASID 0 entry.

PASID attach: upstream ``set_dev_pasid(domain, dev, pasid, old)`` (and the blocked
domain's one to detach) with ``dev_pasids`` and cache tags; the series' seed-v3
``attach_dev_pasid``/``detach_dev_pasid`` live in :mod:`drivers.intel_iommu.seed_v3`.

Differences from Linux: ATSR/SATC are parsed but not used (no ATS policy from them),
no DMA aliases; a device released with IOPF still on has it turned off; a failed
``attach_dev`` restores the device's previous domain itself (Linux leaves the
device blocked and relies on the core's revert, which reverts the failing device
too; this core reverts only the devices already moved); unmapping a range with
nothing mapped returns 0 (Linux reports the size); page tables freed by an unmap
whose flush is deferred (flush queue) are kept until the next full flush.
"""

from __future__ import annotations

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.cache import (
    cache_tag_assign,
    cache_tag_assign_domain,
    cache_tag_flush_range_np,
    cache_tag_unassign_domain,
    domain_flush_all,
    domain_flush_range,
)
from drivers.intel_iommu.context import (
    context_clear_entry,
    context_hi,
    context_present,
    context_set,
    iommu_context_addr,
)
from drivers.intel_iommu.dmar import (
    __iommu_flush_context,
    __iommu_flush_iotlb,
    dmar_disable_qi,
    dmar_enable_qi,
    dmar_fault,
    dmar_state,
    iommu_flush_write_buffer,
    pasid_supported,
    qi_flush_context,
    qi_flush_iotlb,
)
from drivers.intel_iommu.dmar_units import intel_rmrr_resv_regions
from drivers.intel_iommu.domain import (
    __domain_setup_first_level,
    dev_info_of,
    domain_add_dev_pasid,
    domain_attach_iommu,
    domain_detach_iommu,
    domain_remove_dev_pasid,
    iommu_domain_did,
    to_dmar_domain,
)
from drivers.intel_iommu.pasid import (
    PASID_FLAG_FL5LP,
    intel_context_flush_no_pasid,
    intel_pasid_alloc_table,
    intel_pasid_free_table,
    intel_pasid_replace_pass_through,
    intel_pasid_replace_second_level,
    intel_pasid_setup_pass_through,
    intel_pasid_setup_second_level,
    intel_pasid_setup_sm_context,
    intel_pasid_tear_down_entry,
    intel_pasid_teardown_sm_context,
)
from drivers.intel_iommu.pgtable import (
    DOMAIN_MAX_PFN,
    __domain_mapping,
    alloc_pgtable_page,
    domain_unmap,
    iova_to_phys,
    pfn_to_dma_pte,
)
from drivers.intel_iommu.prq import (
    intel_iommu_disable_iopf,
)
from drivers.intel_iommu.structs import (
    CACHE_TAG_DEVTLB,
    DeviceDomainInfo,
    DmarDomain,
    IntelIommu,
    domain_id_iommu,
)
from kernel.bug import WARN, WARN_ON
from kernel.context import current
from kernel.device import Device, dev_name
from kernel.errno import (
    EFAULT,
    EINVAL,
    ENODEV,
    ENOENT,
    ENOMEM,
    EOPNOTSUPP,
    EPERM,
    KernelError,
)
from kernel.iommu.iommu import PASID_API_SEED_V3, iommu_state
from kernel.iommu.iommu_h import (
    __IOMMU_DOMAIN_PAGING,
    IOMMU_CAP_CACHE_COHERENCY,
    IOMMU_CAP_DEFERRED_FLUSH,
    IOMMU_CAP_DIRTY_TRACKING,
    IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
    IOMMU_DOMAIN_DMA,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuDomain,
    IommuDomainGeometry,
    IommuIotlbGather,
    iommu_iotlb_gather_add_page,
)
from kernel.iommu.iommu_pages import iommu_put_pages_list
from kernel.iommu.iommu_resv import IOMMU_RESV_MSI, IommuResvRegion, iommu_alloc_resv_region
from kernel.mm import GFP_ATOMIC, GFP_KERNEL, PAGE_OFFSET, kfree, kzalloc, virt_to_phys
from kernel.pci import (
    PCI_ATS_CAP,
    PciDev,
    pci_ats_supported,
    pci_disable_ats,
    pci_disable_pasid,
    pci_enable_ats,
    pci_enable_pasid,
    pci_pasid_features,
    pci_pri_supported,
    pci_read_config_word,
)
from kernel.printk import dev_err, pr_err, pr_info

SZ_4K = 1 << 12
SZ_2M = 1 << 21
SZ_1G = 1 << 30
IOMMU_NO_PASID = 0


# --------------------------------------------------------------------------- unit control


def intel_iommu_init_qi(iommu: IntelIommu) -> None:
    """``intel_iommu_init_qi``: clear old faults, disable a QI left on by firmware,
    enable QI; without it, register-based invalidation. A queue interrupt remapping
    already enabled is kept (``dmar_enable_qi`` returns at once)."""
    if iommu.qi is None:
        dmar_fault(-1, iommu)
        dmar_disable_qi(iommu)
    try:
        dmar_enable_qi(iommu)
    except ENOENT:
        iommu.flush_context = __iommu_flush_context
        iommu.flush_iotlb = __iommu_flush_iotlb
        pr_info(f"DMAR: {iommu.name}: Using Register based invalidation")
        return
    iommu.flush_context = qi_flush_context
    iommu.flush_iotlb = qi_flush_iotlb
    pr_info(f"DMAR: {iommu.name}: Using Queued invalidation")


def first_level_by_default(iommu: IntelIommu) -> bool:
    """``first_level_by_default``: legacy mode has only second-stage; with one stage,
    that one; with both, first-stage."""
    if not iommu.sm:
        return False
    flts, slts = ir.ecap_flts(iommu.ecap), ir.ecap_slts(iommu.ecap)
    if flts ^ slts:
        return bool(flts)
    return True


# --------------------------------------------------------------------------- ATS


def pci_ats_queue_depth(pdev: PciDev) -> int:
    """``pci_ats_queue_depth``: the ATS capability's invalidate queue depth (0 = 32)."""
    qdep = pci_read_config_word(pdev, pdev.ats_cap + PCI_ATS_CAP) & 0x1F
    return qdep or 32


def iommu_enable_pci_ats(info: DeviceDomainInfo) -> None:
    """``iommu_enable_pci_ats``."""
    if not info.ats_supported or info.ats_enabled:
        return
    pci_enable_ats(info.dev, ir.VTD_PAGE_SHIFT)
    info.ats_enabled = True


def iommu_disable_pci_ats(info: DeviceDomainInfo) -> None:
    if not info.ats_enabled:
        return
    pci_disable_ats(info.dev)
    info.ats_enabled = False


# --------------------------------------------------------------------------- legacy context


def context_present_cache_flush(iommu: IntelIommu, did: int, bus: int, devfn: int) -> None:
    """``context_present_cache_flush``: a new context entry; caching mode flushes the
    device's context cache and the DID, else only the write buffer."""
    if ir.cap_caching_mode(iommu.cap):
        sid = (bus << 8) | devfn
        iommu.flush_context(iommu, 0, sid, ir.DMA_CCMD_MASK_NOBIT, ir.DMA_CCMD_DEVICE_INVL)
        iommu.flush_iotlb(iommu, did, 0, 0, ir.DMA_TLB_DSI_FLUSH)
    else:
        iommu_flush_write_buffer(iommu)


def domain_context_mapping_one(
    domain: DmarDomain, iommu: IntelIommu, info: DeviceDomainInfo
) -> None:
    """``domain_context_mapping_one``: a legacy context entry for the device: DID,
    table root, AW, TT (device-TLB allowed with ATS), fault processing on, P."""
    did = domain_id_iommu(domain, iommu)
    context = iommu_context_addr(iommu, info.bus, info.devfn, True)
    if context is None:
        raise ENOMEM("context table")
    if context_present(context):
        return
    tt = ir.CONTEXT_TT_DEV_IOTLB if info.ats_supported else ir.CONTEXT_TT_MULTI_LEVEL
    lo = virt_to_phys(domain.pgd) | ir.context_tt(tt) | ir.CONTEXT_PRESENT
    context_set(context, lo, ir.context_aw(domain.agaw) | ir.context_did(did))
    context_present_cache_flush(iommu, did, info.bus, info.devfn)


def context_setup_pass_through(info: DeviceDomainInfo) -> None:
    """``context_setup_pass_through``: a legacy pass-through context entry
    (FLPT_DEFAULT_DID, AW = the largest supported AGAW)."""
    iommu = info.iommu
    context = iommu_context_addr(iommu, info.bus, info.devfn, True)
    if context is None:
        raise ENOMEM("context table")
    if context_present(context):
        return
    lo = ir.context_tt(ir.CONTEXT_TT_PASS_THROUGH) | ir.CONTEXT_PRESENT
    context_set(context, lo, ir.context_aw(iommu.msagaw) | ir.context_did(ir.FLPT_DEFAULT_DID))
    context_present_cache_flush(iommu, ir.FLPT_DEFAULT_DID, info.bus, info.devfn)


def domain_context_clear(info: DeviceDomainInfo) -> None:
    """``domain_context_clear``/``domain_context_clear_one``, then ATS off."""
    context = iommu_context_addr(info.iommu, info.bus, info.devfn, False)
    if context is not None:
        did = ir.context_domain_id(context_hi(context))
        context_clear_entry(context)
        intel_context_flush_no_pasid(info, did)
    iommu_disable_pci_ats(info)


# --------------------------------------------------------------------------- PASID-entry setup


def domain_setup_first_level(
    iommu: IntelIommu, domain: DmarDomain, dev: Device, pasid: int, old: IommuDomain | None
) -> None:
    """``domain_setup_first_level``: 4- or 5-level from the domain's AGAW."""
    level = ir.agaw_to_level(domain.agaw)
    if level not in (4, 5):
        raise EINVAL(f"first-stage tables need 4 or 5 levels, not {level}")
    flags = PASID_FLAG_FL5LP if level == 5 else 0
    did = domain_id_iommu(domain, iommu)
    __domain_setup_first_level(iommu, dev, pasid, did, virt_to_phys(domain.pgd), flags, old)


def domain_setup_second_level(
    iommu: IntelIommu, domain: DmarDomain, dev: Device, pasid: int, old: IommuDomain | None
) -> None:
    if old is None:
        intel_pasid_setup_second_level(iommu, domain, dev, pasid)
    else:
        intel_pasid_replace_second_level(iommu, domain, dev, iommu_domain_did(old, iommu), pasid)


def domain_setup_passthrough(
    iommu: IntelIommu, dev: Device, pasid: int, old: IommuDomain | None
) -> None:
    if old is None:
        intel_pasid_setup_pass_through(iommu, dev, pasid)
    else:
        intel_pasid_replace_pass_through(iommu, dev, iommu_domain_did(old, iommu), pasid)


# --------------------------------------------------------------------------- attach


def device_block_translation(dev: Device) -> None:
    """``device_block_translation``: tear the RID's translation down (PASID-0 entry or
    legacy context entry) and leave the domain."""
    info = dev_info_of(dev)
    iommu = info.iommu
    if not info.domain_attached:
        return
    if info.domain is not None:
        cache_tag_unassign_domain(info.domain, dev, IOMMU_NO_PASID)
    if iommu.sm:
        intel_pasid_tear_down_entry(iommu, dev, IOMMU_NO_PASID, False)
    else:
        domain_context_clear(info)
    info.domain_attached = False
    domain = info.domain
    if domain is None:
        return
    domain.devices.remove(info)
    domain_detach_iommu(domain, iommu)
    info.domain = None


def domain_need_iotlb_sync_map(domain: DmarDomain, iommu: IntelIommu) -> bool:
    """``domain_need_iotlb_sync_map``: new mappings need a flush in caching mode
    (second-stage) or with RWBF."""
    if ir.cap_caching_mode(iommu.cap) and not domain.use_first_level:
        return True
    return bool(ir.cap_rwbf(iommu.cap))


def dmar_domain_attach_device(domain: DmarDomain, dev: Device) -> None:
    """``dmar_domain_attach_device``: DID, domain device list, the RID's entry, tags."""
    info = dev_info_of(dev)
    iommu = info.iommu
    domain_attach_iommu(domain, iommu)
    info.domain = domain
    info.domain_attached = True
    domain.devices.append(info)
    try:
        if not iommu.sm:
            domain_context_mapping_one(domain, iommu, info)
            iommu_enable_pci_ats(info)
        elif domain.use_first_level:
            domain_setup_first_level(iommu, domain, dev, IOMMU_NO_PASID, None)
        else:
            domain_setup_second_level(iommu, domain, dev, IOMMU_NO_PASID, None)
        cache_tag_assign_domain(domain, dev, IOMMU_NO_PASID)
    except KernelError:
        device_block_translation(dev)
        raise
    domain.iotlb_sync_map |= domain_need_iotlb_sync_map(domain, iommu)


def iommu_paging_structure_coherency(iommu: IntelIommu) -> bool:
    if iommu.sm:
        return bool(ir.ecap_smpwc(iommu.ecap))
    return bool(ir.ecap_coherent(iommu.ecap))


def iommu_superpage_capability(iommu: IntelIommu, first_stage: bool) -> int:
    """``iommu_superpage_capability``: 1 = 2 MiB, 2 = 2 MiB and 1 GiB."""
    if not dmar_state().superpage:
        return 0
    if first_stage:
        return 2 if ir.cap_fl1gp_support(iommu.cap) else 1
    return ir.cap_super_page_val(iommu.cap).bit_length()


def paging_domain_compatible(domain: IommuDomain, dev: Device) -> None:
    """``paging_domain_compatible``: the domain's tables suit the device's unit."""
    info = dev_info_of(dev)
    iommu = info.iommu
    if WARN_ON(not domain.type & __IOMMU_DOMAIN_PAGING, "attaching a non-paging domain"):
        raise EPERM("not a paging domain")
    dmar_domain = to_dmar_domain(domain)
    if dmar_domain.iommu_coherency != iommu_paging_structure_coherency(iommu):
        raise EINVAL(f"{iommu.name}: page-walk coherency differs from the domain's")
    superpage = iommu_superpage_capability(iommu, dmar_domain.use_first_level)
    if dmar_domain.iommu_superpage != superpage:
        raise EINVAL(f"{iommu.name}: superpage support differs from the domain's")
    if dmar_domain.use_first_level and (not iommu.sm or not ir.ecap_flts(iommu.ecap)):
        raise EINVAL(f"{iommu.name}: no first-stage translation for a first-stage domain")
    addr_width = min(ir.agaw_to_width(iommu.agaw), ir.cap_mgaw(iommu.cap))
    if dmar_domain.gaw > addr_width or dmar_domain.agaw > iommu.agaw:
        raise EINVAL(f"{iommu.name}: address width {addr_width} below the domain's")


def _restore(old: IommuDomain | None, new: IommuDomain, dev: Device) -> None:
    """Put ``dev`` back on ``old`` after a failed attach (see the module docstring)."""
    if old is None or old is new or old.ops is None:
        return
    try:
        old.ops.attach_dev(old, dev, None)
    except KernelError as err:
        WARN(True, f"DMAR: {dev_name(dev)}: could not restore its domain: {err}")


def intel_iommu_attach_device(domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
    """``intel_iommu_attach_device``: block, check compatibility, attach."""
    device_block_translation(dev)
    try:
        paging_domain_compatible(domain, dev)
        dmar_domain_attach_device(to_dmar_domain(domain), dev)
    except KernelError:
        _restore(old, domain, dev)
        raise


def identity_domain_attach_dev(domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
    """``identity_domain_attach_dev``: pass-through PASID-0 entry (scalable) or a
    pass-through context entry (legacy)."""
    info = dev_info_of(dev)
    device_block_translation(dev)
    try:
        if info.iommu.sm:
            intel_pasid_setup_pass_through(info.iommu, dev, IOMMU_NO_PASID)
        else:
            context_setup_pass_through(info)
    except KernelError:
        _restore(old, domain, dev)
        raise
    info.domain_attached = True


def blocking_domain_attach_dev(domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
    """``blocking_domain_attach_dev``."""
    device_block_translation(dev)


# --------------------------------------------------------------------------- paging domains


def paging_domain_alloc(dev: Device, first_stage: bool) -> DmarDomain:
    """``paging_domain_alloc``: a domain shaped for ``dev``'s unit, top table allocated.
    First-stage domains stop one bit short of the width (canonical addresses)."""
    info = dev_info_of(dev)
    iommu = info.iommu
    kmem = kzalloc(512, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("dmar_domain")
    addr_width = min(ir.agaw_to_width(iommu.agaw), ir.cap_mgaw(iommu.cap))
    superpage = iommu_superpage_capability(iommu, first_stage)
    bitmap = SZ_4K | (SZ_2M if superpage >= 1 else 0) | (SZ_1G if superpage >= 2 else 0)
    end = (1 << (addr_width - 1 if first_stage else addr_width)) - 1
    domain = DmarDomain(
        pgsize_bitmap=bitmap,
        geometry=IommuDomainGeometry(0, end, True),
        name="dmar_domain",
        use_first_level=first_stage,
        gaw=addr_width,
        agaw=iommu.agaw,
        max_addr=(1 << addr_width) - 1,
        iommu_superpage=superpage,
        iommu_coherency=iommu_paging_structure_coherency(iommu),
        seed_v3=iommu_state().pasid_api == PASID_API_SEED_V3,
        kmem=kmem,
    )
    pgd = alloc_pgtable_page(GFP_KERNEL)
    if pgd is None:
        kfree(kmem)
        raise ENOMEM("domain page directory")
    domain.pgd = pgd
    return domain


def intel_iommu_domain_free(domain: IommuDomain) -> None:
    """``intel_iommu_domain_free``: every page table page, then the domain."""
    dmar_domain = to_dmar_domain(domain)
    if WARN_ON(bool(dmar_domain.devices), "freeing a domain with devices attached"):
        return
    freelist: list[int] = dmar_domain.deferred_free
    dmar_domain.deferred_free = []
    if dmar_domain.pgd:
        domain_unmap(dmar_domain, 0, DOMAIN_MAX_PFN(dmar_domain.gaw), freelist)
    iommu_put_pages_list(freelist)
    kfree(dmar_domain.kmem)
    dmar_domain.kmem = 0


def intel_iommu_map(
    domain: DmarDomain, iova: int, hpa: int, size: int, iommu_prot: int, gfp: int
) -> int:
    """``intel_iommu_map``: returns the bytes mapped (at most ``size``; the builtin
    ``min`` is not used on this path: in CPython 3.11 every call of it parses keyword
    arguments through the interpreter's cold getargs code, ~1% of a map+unmap pair)."""
    prot = 0
    if iommu_prot & IOMMU_READ:
        prot |= ir.DMA_PTE_READ
    if iommu_prot & IOMMU_WRITE:
        prot |= ir.DMA_PTE_WRITE
    max_addr = iova + size
    if domain.max_addr < max_addr:
        end = (1 << domain.gaw) - 1 + 1
        if end < max_addr:
            pr_err(
                f"DMAR: intel_iommu_map: iommu width ({domain.gaw}) is not sufficient "
                f"for the mapped address ({max_addr:x})"
            )
            raise EFAULT(f"iova {iova:#x} + {size:#x} beyond the domain's {domain.gaw} bits")
        domain.max_addr = max_addr
    pages = ((hpa & (SZ_4K - 1)) + size + SZ_4K - 1) >> ir.VTD_PAGE_SHIFT
    done = __domain_mapping(
        domain, iova >> ir.VTD_PAGE_SHIFT, hpa >> ir.VTD_PAGE_SHIFT, pages, prot, gfp
    )
    mapped = done << ir.VTD_PAGE_SHIFT
    return mapped if mapped < size else size


def intel_iommu_map_pages(
    domain: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, gfp: int
) -> int:
    """``intel_iommu_map_pages``."""
    if pgsize not in (SZ_4K, SZ_2M, SZ_1G):
        raise EINVAL(f"page size {pgsize:#x} not supported")
    if (iova | paddr) & (pgsize - 1):
        raise EINVAL(f"iova {iova:#x} / paddr {paddr:#x} not aligned to {pgsize:#x}")
    assert isinstance(domain, DmarDomain), f"{domain!r} is not a VT-d paging domain"
    return intel_iommu_map(domain, iova, paddr, pgsize * pgcount, prot, gfp)


def intel_iommu_unmap(domain: DmarDomain, iova: int, size: int, gather: IommuIotlbGather) -> int:
    """``intel_iommu_unmap``: a large page goes as a whole (the size grows to it);
    tables the range empties are freed after the flush. (Runs on every unmap:
    ``read64``, ``dma_pte_present`` and ``level_to_offset_bits`` are written out.)"""
    pte, level = pfn_to_dma_pte(domain, iova >> ir.VTD_PAGE_SHIFT, 0, GFP_ATOMIC)
    if not pte or not current.kernel.mm.words[(pte - PAGE_OFFSET) >> 3] & 3:
        return 0
    large = SZ_4K << ((level - 1) * ir.VTD_STRIDE_SHIFT)
    if size < large:
        size = large
    start_pfn = iova >> ir.VTD_PAGE_SHIFT
    last_pfn = (iova + size - 1) >> ir.VTD_PAGE_SHIFT
    freelist: list[int] = []
    domain_unmap(domain, start_pfn, last_pfn, freelist)
    if domain.max_addr == iova + size:
        domain.max_addr = iova
    if gather.queued:
        domain.deferred_free.extend(freelist)
    else:
        iommu_iotlb_gather_add_page(domain, gather, iova, size)
        gather.freelist.extend(freelist)
    return size


def intel_iommu_unmap_pages(
    domain: IommuDomain, iova: int, pgsize: int, pgcount: int, gather: IommuIotlbGather
) -> int:
    assert isinstance(domain, DmarDomain), f"{domain!r} is not a VT-d paging domain"
    return intel_iommu_unmap(domain, iova, pgsize * pgcount, gather)


def intel_iommu_tlb_sync(domain: IommuDomain, gather: IommuIotlbGather) -> None:
    """``intel_iommu_tlb_sync``: flush the gathered range (IH when no table was
    freed), then free the tables."""
    assert isinstance(domain, DmarDomain), f"{domain!r} is not a VT-d paging domain"
    if gather.end >= gather.start:
        # ih = list_empty(&gather->freelist) (no int() call: a type call on every unmap)
        domain_flush_range(domain, gather.start, gather.end, 0 if gather.freelist else 1)
    iommu_put_pages_list(gather.freelist)


def intel_flush_iotlb_all(domain: IommuDomain) -> None:
    """``intel_flush_iotlb_all``, then free tables a deferred unmap left behind."""
    dmar_domain = to_dmar_domain(domain)
    domain_flush_all(dmar_domain)
    pages, dmar_domain.deferred_free = dmar_domain.deferred_free, []
    iommu_put_pages_list(pages)


def intel_iommu_iotlb_sync_map(domain: IommuDomain, iova: int, size: int) -> None:
    """``intel_iommu_iotlb_sync_map``."""
    assert isinstance(domain, DmarDomain), f"{domain!r} is not a VT-d paging domain"
    if domain.iotlb_sync_map:
        cache_tag_flush_range_np(domain, iova, iova + size - 1)


def intel_iommu_iova_to_phys(domain: IommuDomain, iova: int) -> int:
    return iova_to_phys(to_dmar_domain(domain), iova)


# --------------------------------------------------------------------------- PASID attach


def intel_iommu_set_dev_pasid(
    domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
) -> None:
    """``intel_iommu_set_dev_pasid``: point ``pasid`` of ``dev`` at a paging domain
    (setup, or replace when ``old`` is given), then drop ``old``'s bookkeeping."""
    if WARN_ON(not domain.type & __IOMMU_DOMAIN_PAGING, "set_dev_pasid of a non-paging domain"):
        raise EINVAL("not a paging domain")
    info = dev_info_of(dev)
    iommu = info.iommu
    if not pasid_supported(iommu):
        raise EOPNOTSUPP(f"{iommu.name}: no PASID support")
    paging_domain_compatible(domain, dev)
    dmar_domain = to_dmar_domain(domain)
    domain_add_dev_pasid(dmar_domain, dev, pasid)
    try:
        if dmar_domain.use_first_level:
            domain_setup_first_level(iommu, dmar_domain, dev, pasid, old)
        else:
            domain_setup_second_level(iommu, dmar_domain, dev, pasid, old)
    except KernelError:
        domain_remove_dev_pasid(domain, dev, pasid)
        raise
    domain_remove_dev_pasid(old, dev, pasid)


def identity_domain_set_dev_pasid(
    domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
) -> None:
    """``identity_domain_set_dev_pasid``."""
    info = dev_info_of(dev)
    if not pasid_supported(info.iommu):
        raise EOPNOTSUPP(f"{info.iommu.name}: no PASID support")
    domain_setup_passthrough(info.iommu, dev, pasid, old)
    domain_remove_dev_pasid(old, dev, pasid)


def blocking_domain_set_dev_pasid(
    domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
) -> None:
    """``blocking_domain_set_dev_pasid``: tear the entry down, drop ``old``'s state."""
    info = dev_info_of(dev)
    intel_pasid_tear_down_entry(info.iommu, dev, pasid, False)
    domain_remove_dev_pasid(old, dev, pasid)


# --------------------------------------------------------------------------- probe / release


def device_lookup_iommu(dev: Device) -> IntelIommu | None:
    """``device_lookup_iommu``: the unit whose DRHD scope lists the device, else the
    INCLUDE_PCI_ALL unit of its segment."""
    if not isinstance(dev, PciDev):
        return None
    units = sorted(dmar_state().units, key=lambda u: u.drhd is None or u.drhd.include_pci_all)
    for iommu in units:
        drhd = iommu.drhd
        if drhd is not None and drhd.covers(dev.addr) and iommu.registered:
            return iommu
    return None


def intel_iommu_probe_device(dev: Device) -> IntelIommu:
    """``intel_iommu_probe_device``: ENODEV outside every unit's scope. Records ATS and
    PASID support; in scalable mode allocates the PASID table and points the
    context entry at it."""
    iommu = device_lookup_iommu(dev)
    if iommu is None:
        raise ENODEV(f"{dev_name(dev)}: not in the scope of any DMAR unit")
    assert isinstance(dev, PciDev)
    kmem = kzalloc(256, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("device_domain_info")
    info = DeviceDomainInfo(dev, iommu, dev.addr.bus, dev.addr.devfn, iommu.segment, kmem=kmem)
    if ir.ecap_dev_iotlb_support(iommu.ecap) and pci_ats_supported(dev):
        info.ats_supported = True
        if ir.ecap_dit(iommu.ecap):
            info.pfsid = dev.rid
        info.ats_qdep = pci_ats_queue_depth(dev)
    if pasid_supported(iommu):
        features = pci_pasid_features(dev)
        if features >= 0:
            info.pasid_supported = features | 1
    if iommu.sm and info.ats_supported and ir.ecap_prs(iommu.ecap) and pci_pri_supported(dev):
        info.pri_supported = True
    assert dev.iommu is not None
    dev.iommu.priv = info
    if iommu.sm:
        try:
            intel_pasid_alloc_table(dev, dmar_state().pasid_max_id)
        except KernelError:
            dev_err(dev, "DMAR: PASID table allocation failed")
            _free_info(dev, info)
            raise
        try:
            intel_pasid_setup_sm_context(dev)
        except KernelError:
            intel_pasid_free_table(dev)
            _free_info(dev, info)
            raise
    return iommu


def _free_info(dev: Device, info: DeviceDomainInfo) -> None:
    kfree(info.kmem)
    info.kmem = 0
    dev.iommu.priv = None


def intel_iommu_probe_finalize(dev: Device) -> None:
    """``intel_iommu_probe_finalize``: PASID before ATS (the PCIe rule), then ATS in
    scalable mode with a device-TLB tag for the default domain's RID."""
    info = dev_info_of(dev)
    if info.pasid_supported:
        try:
            pci_enable_pasid(info.dev, info.pasid_supported & ~1)
            info.pasid_enabled = True
        except KernelError:
            pass
    if not info.iommu.sm:
        return
    iommu_enable_pci_ats(info)
    domain = info.domain
    if info.ats_enabled and domain is not None:
        did = domain_id_iommu(domain, info.iommu)
        try:
            cache_tag_assign(domain, did, dev, IOMMU_NO_PASID, CACHE_TAG_DEVTLB)
        except KernelError:
            iommu_disable_pci_ats(info)


def intel_iommu_release_device(dev: Device) -> None:
    """``intel_iommu_release_device``: ATS and PASID off, context entry torn down,
    PASID table and device info freed."""
    info = dev_info_of(dev)
    if info.pri_enabled:  # the driver left IOPF on: answer and leave its queue
        intel_iommu_disable_iopf(dev)
    iommu_disable_pci_ats(info)
    if info.pasid_enabled:
        pci_disable_pasid(info.dev)
        info.pasid_enabled = False
    if info.iommu.sm:
        intel_pasid_teardown_sm_context(dev)
    intel_pasid_free_table(dev)
    _free_info(dev, info)


def device_def_domain_type(dev: Device) -> int:
    """``device_def_domain_type``: a unit without pass-through gives DMA domains."""
    info = dev_info_of(dev)
    if not ir.ecap_pass_through(info.iommu.ecap):
        return IOMMU_DOMAIN_DMA
    return 0


def intel_iommu_capable(dev: Device, cap: int) -> bool:
    """``intel_iommu_capable``."""
    if cap in (IOMMU_CAP_CACHE_COHERENCY, IOMMU_CAP_DEFERRED_FLUSH):
        return True
    if cap == IOMMU_CAP_ENFORCE_CACHE_COHERENCY:
        return bool(ir.ecap_sc_support(dev_info_of(dev).iommu.ecap))
    if cap == IOMMU_CAP_DIRTY_TRACKING:
        return ssads_supported(dev_info_of(dev).iommu)
    return False


def ssads_supported(iommu: IntelIommu) -> bool:
    """``ssads_supported``: scalable mode with second-stage A/D bits (ECAP.SLADS)."""
    return bool(iommu.sm and ir.ecap_slads(iommu.ecap))


# --------------------------------------------------------------------------- reserved regions

IOAPIC_RANGE_START = 0xFEE0_0000
IOAPIC_RANGE_END = 0xFEEF_FFFF


def intel_iommu_get_resv_regions(dev: Device, head: list[IommuResvRegion]) -> None:
    """``intel_iommu_get_resv_regions``: the device's RMRRs, then the interrupt
    window, which the unit never translates (an untranslated write there is an
    interrupt request), as ``IOMMU_RESV_MSI`` with no access rights. (Linux's
    floppy/ISA-bridge workaround region is not modelled: no ISA bridges.)"""
    intel_rmrr_resv_regions(dev, head)
    head.append(
        iommu_alloc_resv_region(
            IOAPIC_RANGE_START, IOAPIC_RANGE_END - IOAPIC_RANGE_START + 1, 0, IOMMU_RESV_MSI
        )
    )
