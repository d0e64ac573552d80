"""Shared virtual addressing (drivers/iommu/intel/svm.c, ~v6.11 onwards): an SVA domain
is a first-stage PASID entry whose table root is the process's page table
(``mm.pgd``), tagged with ``FLPT_DEFAULT_DID``.

When the mm's page tables change, Linux's mmu notifier
(``intel_arch_invalidate_secondary_tlbs``) flushes the domain's cache tags; the
kernel here delivers that as ``flush_iotlb_all`` on the SVA domain
(``iommu_sva_invalidate_range``).

Differences from Linux: no IOPF (page requests are not modelled), so an SVA
device only touches pages already present; the CPU is taken to have 1 GiB pages
and 4-level paging (``intel_svm_check``).
"""

from __future__ import annotations

from typing import Any

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.cache import cache_tag_flush_all
from drivers.intel_iommu.dmar import pasid_supported
from drivers.intel_iommu.domain import (
    __domain_setup_first_level,
    dev_info_of,
    domain_add_dev_pasid,
    domain_remove_dev_pasid,
    to_dmar_domain,
)
from drivers.intel_iommu.structs import VTD_FLAG_SVM_CAPABLE, DmarDomain, IntelIommu
from kernel.device import Device, dev_name
from kernel.errno import ENOMEM, EOPNOTSUPP, KernelError
from kernel.iommu.iommu_h import IommuDomain
from kernel.mm import GFP_KERNEL, kfree, kzalloc
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


def intel_svm_domain_alloc(dev: Device, mm: Any) -> IommuDomain:
    """``intel_svm_domain_alloc``: EOPNOTSUPP unless the unit is SVM capable and the
    device has PASID enabled."""
    info = dev_info_of(dev)
    if not info.iommu.flags & VTD_FLAG_SVM_CAPABLE or not info.pasid_enabled:
        raise EOPNOTSUPP(f"{dev_name(dev)}: no SVA on {info.iommu.name}")
    kmem = kzalloc(512, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("sva domain")
    return DmarDomain(ops=SVA_DOMAIN_OPS, use_first_level=True, name="sva", kmem=kmem)


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

    def flush_iotlb_all(self, domain: IommuDomain) -> None:
        """The mmu notifier's invalidation of the whole address space."""
        cache_tag_flush_all(to_dmar_domain(domain))

    def free(self, domain: IommuDomain) -> None:
        """``intel_svm_domain_free``."""
        dmar_domain = to_dmar_domain(domain)
        kfree(dmar_domain.kmem)
        dmar_domain.kmem = 0


SVA_DOMAIN_OPS = IntelSvaDomainOps()
