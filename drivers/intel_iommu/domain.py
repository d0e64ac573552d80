"""Domain bookkeeping shared by paging and SVA domains (helpers of
drivers/iommu/intel/iommu.c): per-unit domain IDs (``domain_attach_iommu``), the
``dev_pasids`` list with its cache tags (``domain_add_dev_pasid``), and the
first-stage PASID-entry setup that chooses between setup and replace.
"""

from __future__ import annotations

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.cache import cache_tag_assign_domain, cache_tag_unassign_domain
from drivers.intel_iommu.pasid import (
    intel_pasid_replace_first_level,
    intel_pasid_setup_first_level,
)
from drivers.intel_iommu.structs import (
    DeviceDomainInfo,
    DevPasidInfo,
    DmarDomain,
    IntelIommu,
    IommuDomainInfo,
    domain_id_iommu,
)
from kernel.bug import WARN_ON
from kernel.device import Device, dev_name
from kernel.errno import ENODEV, ENOMEM, KernelError
from kernel.idr import ida_alloc_range, ida_free
from kernel.iommu.iommu_h import IOMMU_DOMAIN_IDENTITY, IOMMU_DOMAIN_SVA, IommuDomain
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.printk import pr_err


def dev_info_of(dev: Device) -> DeviceDomainInfo:
    """``dev_iommu_priv_get``: the driver's per-device state."""
    info = dev.iommu.priv if dev.iommu is not None else None
    if not isinstance(info, DeviceDomainInfo):
        raise ENODEV(f"{dev_name(dev)}: not probed by the Intel IOMMU driver")
    return info


def to_dmar_domain(domain: IommuDomain) -> DmarDomain:
    """``to_dmar_domain`` (``container_of``: the domain is the ``dmar_domain``). The
    ops on every map, unmap and sync make the same check in line."""
    assert isinstance(domain, DmarDomain), f"{domain!r} is not a VT-d paging domain"
    return domain


def domain_attach_iommu(domain: DmarDomain, iommu: IntelIommu) -> None:
    """``domain_attach_iommu``: the domain's DID on ``iommu`` (allocated on first use,
    then refcounted). SVA domains use FLPT_DEFAULT_DID and need none."""
    if domain.type == IOMMU_DOMAIN_SVA:
        return
    kmem = kzalloc(32, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("iommu_domain_info")
    curr = domain.iommu_array.get(iommu.seq_id)
    if curr is not None:
        curr.refcnt += 1
        kfree(kmem)
        return
    try:
        num = ida_alloc_range(iommu.domain_ida, ir.IDA_START_DID, ir.cap_ndoms(iommu.cap) - 1)
    except KernelError:
        pr_err(f"DMAR: {iommu.name}: No free domain ids")
        kfree(kmem)
        raise
    domain.iommu_array[iommu.seq_id] = IommuDomainInfo(iommu, num, kmem=kmem)


def domain_detach_iommu(domain: DmarDomain, iommu: IntelIommu) -> None:
    """``domain_detach_iommu``: drop one reference; the DID goes with the last."""
    if domain.type == IOMMU_DOMAIN_SVA:
        return
    info = domain.iommu_array[iommu.seq_id]
    info.refcnt -= 1
    if info.refcnt == 0:
        ida_free(iommu.domain_ida, info.did)
        del domain.iommu_array[iommu.seq_id]
        kfree(info.kmem)


def iommu_domain_did(domain: IommuDomain, iommu: IntelIommu) -> int:
    """``iommu_domain_did``: FLPT_DEFAULT_DID for identity and SVA domains."""
    if domain.type in (IOMMU_DOMAIN_IDENTITY, IOMMU_DOMAIN_SVA):
        return ir.FLPT_DEFAULT_DID
    return domain_id_iommu(to_dmar_domain(domain), iommu)


def __domain_setup_first_level(
    iommu: IntelIommu,
    dev: Device,
    pasid: int,
    did: int,
    fsptptr: int,
    flags: int,
    old: IommuDomain | None,
) -> None:
    if old is None:
        intel_pasid_setup_first_level(iommu, dev, fsptptr, pasid, did, flags)
    else:
        old_did = iommu_domain_did(old, iommu)
        intel_pasid_replace_first_level(iommu, dev, fsptptr, pasid, did, old_did, flags)


def domain_add_dev_pasid(domain: DmarDomain, dev: Device, pasid: int) -> DevPasidInfo:
    """``domain_add_dev_pasid``: bookkeeping, DID and cache tags for (dev, pasid)."""
    info = dev_info_of(dev)
    kmem = kzalloc(48, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("dev_pasid_info")
    try:
        domain_attach_iommu(domain, info.iommu)
    except KernelError:
        kfree(kmem)
        raise
    try:
        cache_tag_assign_domain(domain, dev, pasid)
    except KernelError:
        domain_detach_iommu(domain, info.iommu)
        kfree(kmem)
        raise
    dev_pasid = DevPasidInfo(info.dev, pasid, kmem=kmem)
    domain.dev_pasids.append(dev_pasid)
    return dev_pasid


def domain_remove_dev_pasid(domain: IommuDomain | None, dev: Device, pasid: int) -> None:
    """``domain_remove_dev_pasid``: undo ``domain_add_dev_pasid`` (identity domains
    keep no PASID state)."""
    if domain is None or domain.type == IOMMU_DOMAIN_IDENTITY:
        return
    info = dev_info_of(dev)
    dmar_domain = to_dmar_domain(domain)
    found = next(
        (p for p in dmar_domain.dev_pasids if p.dev is info.dev and p.pasid == pasid), None
    )
    if found is not None:
        dmar_domain.dev_pasids.remove(found)
    cache_tag_unassign_domain(dmar_domain, dev, pasid)
    domain_detach_iommu(dmar_domain, info.iommu)
    if not WARN_ON(found is None, f"no PASID {pasid} of {dev_name(dev)} in the domain"):
        assert found is not None
        kfree(found.kmem)
