"""Shared virtual addressing (drivers/iommu/intel/svm.c, ~v6.11 onwards): an SVA domain
is a first-stage PASID entry whose table root is the process's page table
(``mm.pgd``), tagged with ``FLPT_DEFAULT_DID``.

The domain subscribes an mmu notifier to the mm (``intel_mmuops``): when the
process's page tables change (munmap, mprotect) ``intel_arch_invalidate_secondary_tlbs``
flushes the domain's cache tags — PASID-tagged IOTLB (P_IOTLB) and, for ATS
devices, the device TLB — over the changed range, or everything for
``[0, ULONG_MAX)``; when the address space goes away (``exit_mmap``)
``intel_mm_release`` tears the PASID entries down with fault reporting
suppressed (FPD), so the device faults silently instead of walking freed tables.

Differences from Linux: the CPU is taken to have 1 GiB pages and 4-level paging
(``intel_svm_check``).
"""

from __future__ import annotations

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.cache import cache_tag_flush_all, cache_tag_flush_range
from drivers.intel_iommu.dmar import pasid_supported
from drivers.intel_iommu.domain import (
    __domain_setup_first_level,
    dev_info_of,
    domain_add_dev_pasid,
    domain_remove_dev_pasid,
    to_dmar_domain,
)
from drivers.intel_iommu.pasid import intel_pasid_tear_down_entry
from drivers.intel_iommu.structs import VTD_FLAG_SVM_CAPABLE, DmarDomain, IntelIommu
from kernel.device import Device, dev_name
from kernel.errno import ENOMEM, EOPNOTSUPP, KernelError
from kernel.iommu.iommu_h import IommuDomain
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.mm_types import MmStruct
from kernel.mmu_notifier import (
    ULONG_MAX,
    MmuNotifier,
    mmu_notifier_put,
    mmu_notifier_register,
)
from kernel.printk import pr_err


def intel_svm_check(iommu: IntelIommu) -> None:
    """``intel_svm_check``: SVA needs PASIDs and the CPU's page sizes (1 GiB pages on
    x86-64) in first-stage tables."""
    if not pasid_supported(iommu):
        return
    if not ir.cap_fl1gp_support(iommu.cap):
        pr_err(f"DMAR: {iommu.name} SVM disabled, incompatible 1GB page capability")
        return
    iommu.flags |= VTD_FLAG_SVM_CAPABLE


def intel_svm_domain_alloc(dev: Device, mm: MmStruct) -> IommuDomain:
    """``intel_svm_domain_alloc``: EOPNOTSUPP unless the unit is SVM capable and the
    device has PASID enabled."""
    info = dev_info_of(dev)
    if not info.iommu.flags & VTD_FLAG_SVM_CAPABLE or not info.pasid_enabled:
        raise EOPNOTSUPP(f"{dev_name(dev)}: no SVA on {info.iommu.name}")
    kmem = kzalloc(512, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("sva domain")
    domain = DmarDomain(ops=SVA_DOMAIN_OPS, use_first_level=True, name="sva", kmem=kmem)
    domain.notifier = MmuNotifier(INTEL_MMUOPS, domain)
    mmu_notifier_register(domain.notifier, mm)
    return domain


class IntelMmuOps:
    """``intel_mmuops``."""

    def arch_invalidate_secondary_tlbs(
        self, mn: MmuNotifier, mm: MmStruct, start: int, end: int
    ) -> None:
        """``intel_arch_invalidate_secondary_tlbs``: the pages are already unmapped;
        flush ``[start, end)`` (everything for ``[0, ULONG_MAX)``) from the IOTLB and
        device TLBs through the domain's cache tags."""
        domain: DmarDomain = mn.container
        if start == 0 and end == ULONG_MAX:
            cache_tag_flush_all(domain)
        else:
            cache_tag_flush_range(domain, start, end - 1, 0)

    def release(self, mn: MmuNotifier, mm: MmStruct) -> None:
        """``intel_mm_release``: the address space is going away; clear every PASID
        entry of the domain with faults suppressed (the flushes follow from
        ``intel_pasid_tear_down_entry``)."""
        domain: DmarDomain = mn.container
        for dev_pasid in list(domain.dev_pasids):
            info = dev_info_of(dev_pasid.dev)
            intel_pasid_tear_down_entry(info.iommu, dev_pasid.dev, dev_pasid.pasid, True)

    def free_notifier(self, mn: MmuNotifier) -> None:
        """``intel_mm_free_notifier``: the domain's memory goes with its notifier."""
        domain: DmarDomain = mn.container
        kfree(domain.kmem)
        domain.kmem = 0


INTEL_MMUOPS = IntelMmuOps()


def intel_svm_set_dev_pasid(
    domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
) -> None:
    """``intel_svm_set_dev_pasid``: the mm's page table as a first-stage entry,
    tagged FLPT_DEFAULT_DID."""
    info = dev_info_of(dev)
    dmar_domain = to_dmar_domain(domain)
    domain_add_dev_pasid(dmar_domain, dev, pasid)
    try:
        __domain_setup_first_level(
            info.iommu, dev, pasid, ir.FLPT_DEFAULT_DID, domain.mm.pgd_phys, 0, old
        )
    except KernelError:
        domain_remove_dev_pasid(domain, dev, pasid)
        raise
    domain_remove_dev_pasid(old, dev, pasid)


class IntelSvaDomainOps:
    """``intel_svm_domain_ops``: PASID attach, the mm notifier's flush and free; no
    map ops (the process page table is the mapping)."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        raise EOPNOTSUPP("an SVA domain attaches at a PASID only")

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        intel_svm_set_dev_pasid(domain, dev, pasid, old)

    def free(self, domain: IommuDomain) -> None:
        """``intel_svm_domain_free``: ``mmu_notifier_put``; the notifier's last put
        frees the domain (``intel_mm_free_notifier``)."""
        dmar_domain = to_dmar_domain(domain)
        if dmar_domain.notifier is not None:
            mmu_notifier_put(dmar_domain.notifier)


SVA_DOMAIN_OPS = IntelSvaDomainOps()
