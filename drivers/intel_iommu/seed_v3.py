"""The series' own PASID attach (seed-v3, "Enable PASID for DMA API users" v3 patch 1/4):
``intel_iommu_attach_dev_pasid``/``intel_iommu_detach_dev_pasid``, the domain ops that
``iommu.pasid_api=seed-v3`` uses in place of upstream's ``set_dev_pasid``.

Never merged upstream; kept beside 6.12's driver (drivers/iommu/intel/iommu.c) as the
generation the founding scenario compares against. It knows one DMA PASID per device
(``info.pasid``), which is why its flushes cover only that PASID.
"""

from __future__ import annotations

from drivers.intel_iommu.domain import dev_info_of, to_dmar_domain
from drivers.intel_iommu.iommu import domain_setup_first_level
from drivers.intel_iommu.pasid import (
    intel_pasid_setup_pass_through,
    intel_pasid_setup_second_level,
    intel_pasid_tear_down_entry,
)
from kernel.bug import WARN, WARN_ON
from kernel.device import Device, dev_name
from kernel.errno import EBUSY, ENODEV
from kernel.iommu.iommu_h import IOMMU_DOMAIN_IDENTITY, IOMMU_NO_PASID, IommuDomain


def intel_iommu_attach_dev_pasid(domain: IommuDomain, dev: Device, pasid: int) -> None:
    """Seed-v3 ``intel_iommu_attach_dev_pasid`` (patch 1/4): ENODEV outside scalable
    mode; one DMA PASID per device (the same one again is a no-op, another one
    WARNs and is EBUSY); the entry points at the same tables as RID2PASID."""
    info = dev_info_of(dev)
    iommu = info.iommu
    if not iommu.sm:
        raise ENODEV(f"{iommu.name}: not in scalable mode")
    if pasid != IOMMU_NO_PASID and info.pasid:
        if info.pasid == pasid:
            return
        WARN(True, f"DMAR: {dev_name(dev)} already has DMA PASID {info.pasid}")
        raise EBUSY(f"{dev_name(dev)}: one DMA PASID per device")
    if domain.type == IOMMU_DOMAIN_IDENTITY:
        intel_pasid_setup_pass_through(iommu, dev, pasid)
    else:
        dmar_domain = to_dmar_domain(domain)
        if dmar_domain.use_first_level:
            domain_setup_first_level(iommu, dmar_domain, dev, pasid, None)
        else:
            intel_pasid_setup_second_level(iommu, dmar_domain, dev, pasid)
    info.pasid = pasid


def intel_iommu_detach_dev_pasid(domain: IommuDomain, dev: Device, pasid: int) -> None:
    """Seed-v3 ``intel_iommu_detach_dev_pasid``."""
    info = dev_info_of(dev)
    WARN_ON(info.pasid != pasid, f"DMAR: {dev_name(dev)} has DMA PASID {info.pasid}, not {pasid}")
    intel_pasid_tear_down_entry(info.iommu, dev, pasid, False)
    info.pasid = 0
