"""``intel_iommu_ops`` and the domain-ops tables (the ``const struct iommu_ops`` and
``iommu_domain_ops`` initialisers at the end of drivers/iommu/intel/iommu.c).

One :class:`IntelIommuOps` per booted kernel holds the static identity and blocking
domains. The paging domains' ops carry both PASID generations: ``set_dev_pasid``
(upstream) and the seed-v3 ``attach_dev_pasid``/``detach_dev_pasid``, which the core
only calls under ``iommu.pasid_api=seed-v3``; the unit ops carry 5.15's ``sva_bind``
family for ``iommu.pasid_api=kernel-sva`` (drivers/intel_iommu/kernel_sva.py).
"""

from __future__ import annotations

from typing import Any

from drivers.intel_iommu import iommu as vtd
from drivers.intel_iommu import iommu_pt, kernel_sva, seed_v3
from drivers.intel_iommu import iommufd as intel_iommufd
from drivers.intel_iommu.domain import dev_info_of
from drivers.intel_iommu.prq import (
    intel_iommu_disable_iopf,
    intel_iommu_enable_iopf,
    intel_iommu_page_response,
)
from drivers.intel_iommu.structs import VTD_FLAG_SVM_CAPABLE
from drivers.intel_iommu.svm import intel_svm_domain_alloc
from kernel.device import Device, dev_name
from kernel.errno import EINVAL, ENODEV
from kernel.iommu.generic_pt import iommu_pt_generic
from kernel.iommu.iommu import IOMMU_DEV_FEAT_IOPF, IOMMU_DEV_FEAT_SVA, pci_device_group
from kernel.iommu.iommu_h import (
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_IDENTITY,
    IommuDevice,
    IommuDomain,
    IommuGroup,
)
from kernel.iommu.iommu_resv import IommuResvRegion
from kernel.iommu.kernel_sva import IommuSva515


class IntelDomainOps:
    """``intel_iommu_ops.default_domain_ops``: DMA, DMA_FQ and UNMANAGED domains."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        vtd.intel_iommu_attach_device(domain, dev, old)

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        vtd.intel_iommu_set_dev_pasid(domain, dev, pasid, old)

    def attach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        seed_v3.intel_iommu_attach_dev_pasid(domain, dev, pasid)

    def detach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        seed_v3.intel_iommu_detach_dev_pasid(domain, dev, pasid)

    # The per-mapping ops are the driver's functions themselves (no forwarding call):
    # they run on every dma_map/dma_unmap.
    map_pages = staticmethod(vtd.intel_iommu_map_pages)
    unmap_pages = staticmethod(vtd.intel_iommu_unmap_pages)
    iotlb_sync_map = staticmethod(vtd.intel_iommu_iotlb_sync_map)
    iotlb_sync = staticmethod(vtd.intel_iommu_tlb_sync)
    iova_to_phys = staticmethod(vtd.intel_iommu_iova_to_phys)

    def flush_iotlb_all(self, domain: IommuDomain) -> None:
        vtd.intel_flush_iotlb_all(domain)

    def free(self, domain: IommuDomain) -> None:
        vtd.intel_iommu_domain_free(domain)


class IntelPtDomainOps(IntelDomainOps):
    """The paging-domain ops under ``iommu.pt=generic`` (upstream's post-conversion
    ``intel_fs_paging_domain_ops``/``intel_ss_paging_domain_ops``): map, unmap,
    iova_to_phys and free are the generic page table's, the rest is 6.12's."""

    map_pages = staticmethod(iommu_pt.intel_pt_map_pages)
    unmap_pages = staticmethod(iommu_pt.intel_pt_unmap_pages)
    iova_to_phys = staticmethod(iommu_pt.intel_pt_iova_to_phys)

    def free(self, domain: IommuDomain) -> None:
        iommu_pt.intel_pt_domain_free(domain)


class IdentityDomainOps:
    """The static identity domain's ops (pass-through entries). No page table, so no
    map ops and no ``free``: the core never maps or frees a static domain."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        vtd.identity_domain_attach_dev(domain, dev, old)

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        vtd.identity_domain_set_dev_pasid(domain, dev, pasid, old)

    def attach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        seed_v3.intel_iommu_attach_dev_pasid(domain, dev, pasid)

    def detach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        seed_v3.intel_iommu_detach_dev_pasid(domain, dev, pasid)


class BlockingDomainOps:
    """The static blocking domain's ops (also the upstream PASID detach); like the
    identity domain's, no map ops and no ``free``."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        vtd.blocking_domain_attach_dev(domain, dev, old)

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        vtd.blocking_domain_set_dev_pasid(domain, dev, pasid, old)


def intel_iommu_enable_sva(dev: Device) -> None:
    """``intel_iommu_enable_sva``: the unit must be SVM capable and the device have
    PASID and ATS on; a device with PRI must have it enabled (IOPF first)."""
    info = dev_info_of(dev)
    if not info.iommu.flags & VTD_FLAG_SVM_CAPABLE:
        raise ENODEV(f"{info.iommu.name}: not SVM capable")
    if not info.pasid_enabled or not info.ats_enabled:
        raise EINVAL(f"{dev_name(dev)}: SVA needs PASID and ATS")
    if info.pri_supported and not info.pri_enabled:
        raise EINVAL(f"{dev_name(dev)}: PRI supported but not enabled")


class IntelIommuOps:
    """``intel_iommu_ops``."""

    pgsize_bitmap = vtd.SZ_4K

    def __init__(self) -> None:
        self.identity_domain: IommuDomain | None = IommuDomain(
            type=IOMMU_DOMAIN_IDENTITY, ops=IdentityDomainOps(), owner=self, name="identity"
        )
        self.blocked_domain: IommuDomain | None = IommuDomain(
            type=IOMMU_DOMAIN_BLOCKED, ops=BlockingDomainOps(), owner=self, name="blocked"
        )
        self.default_domain_ops = IntelDomainOps()
        self.pt_domain_ops = IntelPtDomainOps()

    def probe_device(self, dev: Device) -> IommuDevice:
        return vtd.intel_iommu_probe_device(dev)

    def probe_finalize(self, dev: Device) -> None:
        vtd.intel_iommu_probe_finalize(dev)

    def release_device(self, dev: Device) -> None:
        vtd.intel_iommu_release_device(dev)

    def device_group(self, dev: Device) -> IommuGroup:
        return pci_device_group(dev)

    def domain_alloc_paging(self, dev: Device) -> IommuDomain:
        """``intel_iommu_domain_alloc_paging_flags`` with no flags."""
        return self.paging_domain_alloc(dev, vtd.first_level_by_default(dev_info_of(dev).iommu))

    def hw_info(self, dev: Device) -> tuple[bytes, int]:
        """``intel_iommu_hw_info`` (iommufd's IOMMU_GET_HW_INFO)."""
        return intel_iommufd.intel_iommu_hw_info(dev)

    def domain_alloc_user(
        self, dev: Device, flags: int, parent: IommuDomain | None, user_data: Any
    ) -> IommuDomain:
        """``intel_iommu_domain_alloc_user`` (iommufd's IOMMU_HWPT_ALLOC)."""
        return intel_iommufd.intel_iommu_domain_alloc_user(self, dev, flags, parent, user_data)

    def paging_domain_alloc(self, dev: Device, first_stage: bool) -> IommuDomain:
        """A paging domain of the stage asked for, with this driver's ops."""
        if iommu_pt_generic():  # iommu.pt=generic: the table is generic_pt's
            domain = iommu_pt.intel_pt_domain_alloc(dev, first_stage)
            domain.ops = self.pt_domain_ops
            return domain
        domain = vtd.paging_domain_alloc(dev, first_stage)
        domain.ops = self.default_domain_ops
        return domain

    def domain_alloc_sva(self, dev: Device, mm: Any) -> IommuDomain:
        return intel_svm_domain_alloc(dev, mm)

    # The 5.15 SVA bind ops: only the kernel-sva generation's core calls them.
    def sva_bind(self, dev: Device, mm: Any, drvdata: int) -> IommuSva515:
        return kernel_sva.intel_svm_bind(dev, mm, drvdata)

    def sva_unbind(self, handle: IommuSva515) -> None:
        kernel_sva.intel_svm_unbind(handle)

    def sva_get_pasid(self, handle: IommuSva515) -> int:
        return kernel_sva.intel_svm_get_pasid(handle)

    def def_domain_type(self, dev: Device) -> int:
        return vtd.device_def_domain_type(dev)

    def capable(self, dev: Device, cap: int) -> bool:
        return vtd.intel_iommu_capable(dev, cap)

    def get_resv_regions(self, dev: Device, head: list[IommuResvRegion]) -> None:
        vtd.intel_iommu_get_resv_regions(dev, head)

    def page_response(self, dev: Device, evt: Any, msg: Any) -> None:
        intel_iommu_page_response(dev, evt, msg)

    def dev_enable_feat(self, dev: Device, feat: int) -> None:
        """``intel_iommu_dev_enable_feature``: IOPF enables PRI, SVA checks."""
        if feat == IOMMU_DEV_FEAT_IOPF:
            intel_iommu_enable_iopf(dev)
        elif feat == IOMMU_DEV_FEAT_SVA:
            intel_iommu_enable_sva(dev)
        else:
            raise ENODEV(f"feature {feat}")

    def dev_disable_feat(self, dev: Device, feat: int) -> None:
        """``intel_iommu_dev_disable_feature``."""
        if feat == IOMMU_DEV_FEAT_IOPF:
            intel_iommu_disable_iopf(dev)
        elif feat != IOMMU_DEV_FEAT_SVA:
            raise ENODEV(f"feature {feat}")
