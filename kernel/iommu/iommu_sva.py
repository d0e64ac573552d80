"""Shared Virtual Addressing (drivers/iommu/iommu-sva.c) and a minimal process ``mm``.

:class:`Mm` is a process address space whose page tables are real x86-64
4-level tables in RAM (PML4 → PDPT → PD → PT, 8-byte entries, P/RW/US bits,
address in bits 51:12), so an IOMMU model can walk them exactly as first-stage
translation does. ``iommu_sva_bind_device(dev, mm)`` gives the mm a global PASID
(shared with ``iommu_alloc_global_pasid``), finds or allocates an SVA domain for
the mm (``domain_alloc_sva``) and attaches it at that PASID; unbind undoes it on
the last reference. The PASID stays with the mm until :func:`mmput`
(``mm_pasid_drop``).

Differences from Linux: no mmu notifier (mappings are added with
:func:`mm_map` before the device uses them; a vendor that caches must be told
with ``iommu_sva_invalidate_range``); no IOPF.
"""

from __future__ import annotations

from typing import cast

from attrs import define, field

from kernel.bug import WARN_ON
from kernel.device import Device, dev_name
from kernel.errno import EINVAL, ENODEV, ENOMEM, ENOSPC, EOPNOTSUPP, EOVERFLOW, KernelError
from kernel.iommu.generic_pt.fmt.x86_64 import (
    X86_64_FMT_OA,
    X86_64_FMT_P,
    X86_64_FMT_RW,
    X86_64_FMT_U,
)
from kernel.iommu.iommu import dev_iommu_ops, iommu_domain_free
from kernel.iommu.iommu_h import (
    IOMMU_DOMAIN_SVA,
    IOMMU_PASID_INVALID,
    IommuDomain,
    SupportsDomainAllocSva,
    flush_all_ops,
    has_optional_op,
)
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import (
    __GFP_ZERO,
    GFP_KERNEL,
    PAGE_SIZE,
    Page,
    __free_pages,
    alloc_pages,
    current_mm,
    kfree,
    kzalloc,
)

# A process's page tables are x86-64 paging structures: the bits are the x86_64
# format's (kernel/iommu/generic_pt/fmt/x86_64.py, their one home).
PTE_PRESENT = X86_64_FMT_P
PTE_RW = X86_64_FMT_RW
PTE_USER = X86_64_FMT_U
PTE_ADDR_MASK = X86_64_FMT_OA
TASK_SIZE = 1 << 47


@define(eq=False)
class IommuSva:
    """``struct iommu_sva``: one device's bond to an mm."""

    dev: Device
    domain: IommuDomain
    users: int = 1
    kmem: int = 0


@define(eq=False)
class Mm:
    """``struct mm_struct`` reduced to the page tables, the PASID and the SVA state."""

    pgd: Page
    tables: list[Page] = field(factory=list)
    pasid: int = IOMMU_PASID_INVALID
    sva_domains: list[IommuDomain] = field(factory=list)
    sva_handles: list[IommuSva] = field(factory=list)
    put: bool = False
    """``mmput`` ran while SVA bonds were held: the PASID goes with the last unbind."""

    @property
    def pgd_phys(self) -> int:
        return self.pgd.phys


def mm_alloc() -> Mm | None:
    """``mm_alloc``: a new address space with an empty PML4."""
    pgd = alloc_pages(GFP_KERNEL | __GFP_ZERO, 0)
    if pgd is None:
        return None
    return Mm(pgd, [pgd])


def mm_map(mm: Mm, va: int, phys: int, size: int, write: bool = True) -> None:
    """Install 4 KiB user PTEs for ``[va, va+size)`` → ``phys`` (what a page fault or
    ``remap_pfn_range`` does). ENOMEM if a table page cannot be allocated."""
    if va & 0xFFF or phys & 0xFFF or size <= 0 or va + size > TASK_SIZE:
        raise EINVAL(f"mm_map({va:#x}, {phys:#x}, {size:#x})")
    mem = current_mm().mem
    for off in range(0, size, PAGE_SIZE):
        table = mm.pgd.phys
        addr = va + off
        for shift in (39, 30, 21):
            slot = table + ((addr >> shift) & 0x1FF) * 8
            ent = mem.read_u64(slot)
            if not ent & PTE_PRESENT:
                page = alloc_pages(GFP_KERNEL | __GFP_ZERO, 0)
                if page is None:
                    raise ENOMEM("page table")
                mm.tables.append(page)
                ent = page.phys | PTE_PRESENT | PTE_RW | PTE_USER
                mem.write_u64(slot, ent)
            table = ent & PTE_ADDR_MASK
        pte = (phys + off) | PTE_PRESENT | PTE_USER | (PTE_RW if write else 0)
        mem.write_u64(table + ((addr >> 12) & 0x1FF) * 8, pte)


def follow_pte(mm: Mm, va: int) -> int | None:
    """The PTE mapping ``va``, or None (a software walk, as ``follow_pte``)."""
    mem = current_mm().mem
    table = mm.pgd.phys
    for shift in (39, 30, 21, 12):
        ent = mem.read_u64(table + ((va >> shift) & 0x1FF) * 8)
        if not ent & PTE_PRESENT:
            return None
        if shift == 12:
            return ent
        table = ent & PTE_ADDR_MASK
    return None  # pragma: no cover - the loop always returns


def _mm_pasid_drop(mm: Mm) -> None:
    """``mm_pasid_drop`` (run from ``__mmdrop`` once no ``mmgrab`` is left)."""
    if mm.pasid != IOMMU_PASID_INVALID:
        iommu_free_global_pasid(mm.pasid)
        mm.pasid = IOMMU_PASID_INVALID


def mmput(mm: Mm) -> None:
    """``mmput`` of the last reference: drop the PASID and free the page tables."""
    if WARN_ON(bool(mm.sva_handles), "mmput with SVA bonds still held"):
        mm.put = True  # each bond holds mmgrab: the PASID outlives them (mm_pasid_drop)
    else:
        _mm_pasid_drop(mm)
    for page in mm.tables:
        __free_pages(page, 0)
    mm.tables.clear()


def iommu_sva_alloc_pasid(mm: Mm, dev: Device) -> int:
    """``iommu_alloc_mm_data`` + ``mm_pasid``: one global PASID per mm."""
    assert dev.iommu is not None
    if mm.pasid != IOMMU_PASID_INVALID:
        if mm.pasid >= dev.iommu.max_pasids:
            raise EOVERFLOW(f"mm PASID {mm.pasid} beyond {dev_name(dev)}'s max_pasids")
        return mm.pasid
    pasid = iommu_alloc_global_pasid(dev)
    if pasid == IOMMU_PASID_INVALID:
        raise ENOSPC(f"{dev_name(dev)}: no PASID for the mm")
    mm.pasid = pasid
    return pasid


def iommu_sva_domain_alloc(dev: Device, mm: Mm) -> IommuDomain:
    """``iommu_sva_domain_alloc``: the driver's ``domain_alloc_sva``."""
    ops = dev_iommu_ops(dev)
    if not has_optional_op(ops, "domain_alloc_sva"):
        raise EOPNOTSUPP(f"{dev_name(dev)}: driver has no SVA domains")
    dom = cast(SupportsDomainAllocSva, ops).domain_alloc_sva(dev, mm)
    dom.type = IOMMU_DOMAIN_SVA
    dom.owner = ops
    dom.mm = mm
    return dom


def iommu_sva_bind_device(dev: Device, mm: Mm) -> IommuSva:
    """``iommu_sva_bind_device``: reuse this device's bond, else reuse one of the mm's
    SVA domains, else allocate one; attach it at the mm's PASID."""
    if dev.iommu is None:
        raise ENODEV(f"{dev_name(dev)}: not behind an IOMMU")
    pasid = iommu_sva_alloc_pasid(mm, dev)
    for h in mm.sva_handles:
        if h.dev is dev:
            h.users += 1
            return h
    kmem = kzalloc(64, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("iommu_sva")
    try:
        for dom in mm.sva_domains:
            try:
                iommu_attach_device_pasid(dom, dev, pasid)
            except KernelError:
                continue
            dom.users += 1
            handle = IommuSva(dev, dom, kmem=kmem)
            mm.sva_handles.append(handle)
            return handle
        dom = iommu_sva_domain_alloc(dev, mm)
        try:
            iommu_attach_device_pasid(dom, dev, pasid)
        except KernelError:
            iommu_domain_free(dom)
            raise
    except KernelError:
        kfree(kmem)
        raise
    dom.users = 1
    mm.sva_domains.append(dom)
    handle = IommuSva(dev, dom, kmem=kmem)
    mm.sva_handles.append(handle)
    return handle


def iommu_sva_unbind_device(handle: IommuSva) -> None:
    """``iommu_sva_unbind_device``: on the last reference detach the PASID; free the
    domain when no device uses it."""
    dom = handle.domain
    mm: Mm = dom.mm
    handle.users -= 1
    if handle.users:
        return
    iommu_detach_device_pasid(dom, handle.dev, mm.pasid)
    mm.sva_handles.remove(handle)
    kfree(handle.kmem)
    dom.users -= 1
    if dom.users == 0:
        mm.sva_domains.remove(dom)
        iommu_domain_free(dom)
    if mm.put and not mm.sva_handles:
        _mm_pasid_drop(mm)


def iommu_sva_get_pasid(handle: IommuSva) -> int:
    """``iommu_sva_get_pasid``."""
    mm: Mm = handle.domain.mm
    return mm.pasid


def iommu_sva_invalidate_range(mm: Mm) -> None:
    """What the mmu notifier's ``arch_invalidate_secondary_tlbs`` does for every SVA
    domain of the mm: flush the domain's IOTLB."""
    for dom in mm.sva_domains:
        ops = flush_all_ops(dom)
        if ops is not None:
            ops.flush_iotlb_all(dom)
