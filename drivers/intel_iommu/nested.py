"""drivers/iommu/intel/nested.c (Linux 6.12): nested (stage-1 over stage-2) domains
for iommufd.

A nested domain is user space's first-stage table (guest-physical addresses, in
memory mapped through the parent) over a nesting parent, a second-stage paging
domain allocated with IOMMU_HWPT_ALLOC_NEST_PARENT. Its PASID entry is PGTT=3
(``intel_pasid_setup_nested``): the hardware walks the user's table and translates
every table pointer and the output through the parent's table. The domain gets
its own DID; its cache tags are PASID-based IOTLB invalidations (``use_first_level``)
and its parent carries NESTING tags with that DID, so unmapping from the parent
flushes what the nested domain cached.

``cache_invalidate_user`` takes user space's ``struct iommu_hwpt_vtd_s1_invalidate``
entries one by one: an unknown flag or a non-zero ``__reserved`` is EOPNOTSUPP, an
unaligned address or "all pages" with a non-zero address EINVAL, each good entry a
``cache_tag_flush_range``; ``entry_num`` ends as the number handled.

6.12 has no ``set_dev_pasid`` for nested domains (6.13 added it), so a nested
domain attaches to the RID only. Departures: the domain is allocated through
``domain_alloc_user`` with a parent (6.13's ``domain_alloc_nested``); a parent
must use 6.12's own page tables (under ``iommu.pt=generic`` its ops differ and it
is refused with EINVAL, as 6.12 refuses a parent of other ops).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.intel_iommu.cache import (
    cache_tag_assign_domain,
    cache_tag_flush_range,
    cache_tag_unassign_domain,
)
from drivers.intel_iommu.domain import (
    dev_info_of,
    domain_attach_iommu,
    domain_detach_iommu,
    to_dmar_domain,
)
from drivers.intel_iommu.iommu import (
    _restore,
    device_block_translation,
    paging_domain_compatible,
)
from drivers.intel_iommu.iommu_regs import VTD_PAGE_SHIFT, VTD_PAGE_SIZE
from drivers.intel_iommu.pasid import intel_pasid_setup_nested
from drivers.intel_iommu.structs import DmarDomain
from kernel.device import Device
from kernel.errno import EINVAL, ENODEV, ENOMEM, EOPNOTSUPP, KernelError
from kernel.iommu.iommu_h import IOMMU_DOMAIN_NESTED, IOMMU_NO_PASID, IommuDomain
from kernel.iommufd.user import (
    IommuUserData,
    IommuUserDataArray,
    iommu_copy_struct_from_user,
    iommu_copy_struct_from_user_array,
)
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.printk import dev_err
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from drivers.intel_iommu.ops import IntelIommuOps

U64_MAX = (1 << 64) - 1


def intel_nested_attach_dev(domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
    """``intel_nested_attach_dev``: block the RID, check the unit against the parent
    (ENODEV when the unit's AGAW is below the parent's, the parent's compatibility
    checks), DID, cache tags (own and the parent's NESTING ones), then the nested
    PASID entry. On failure the device goes back to ``old`` (as this driver's
    ``intel_iommu_attach_device`` does)."""
    dmar_domain = to_dmar_domain(domain)
    s2 = dmar_domain.s2_domain
    assert s2 is not None
    info = dev_info_of(dev)
    iommu = info.iommu
    device_block_translation(dev)
    try:
        if iommu.agaw < s2.agaw:
            dev_err(dev, "Adjusted guest address width not compatible")
            raise ENODEV(f"{iommu.name}: AGAW {iommu.agaw} below the parent's {s2.agaw}")
        paging_domain_compatible(s2, dev)
        domain_attach_iommu(dmar_domain, iommu)
        try:
            cache_tag_assign_domain(dmar_domain, dev, IOMMU_NO_PASID)
            try:
                intel_pasid_setup_nested(iommu, dev, IOMMU_NO_PASID, dmar_domain)
            except KernelError:
                cache_tag_unassign_domain(dmar_domain, dev, IOMMU_NO_PASID)
                raise
        except KernelError:
            domain_detach_iommu(dmar_domain, iommu)
            raise
    except KernelError:
        _restore(old, domain, dev)
        raise
    info.domain = dmar_domain
    info.domain_attached = True
    dmar_domain.devices.append(info)


def intel_nested_domain_free(domain: IommuDomain) -> None:
    """``intel_nested_domain_free``: off the parent's list, freed."""
    dmar_domain = to_dmar_domain(domain)
    s2 = dmar_domain.s2_domain
    if s2 is not None and dmar_domain in s2.s1_domains:
        s2.s1_domains.remove(dmar_domain)
    kfree(dmar_domain.kmem)
    dmar_domain.kmem = 0


def intel_nested_cache_invalidate_user(domain: IommuDomain, array: IommuUserDataArray) -> None:
    """``intel_nested_cache_invalidate_user``: see the module docstring. The C
    function returns the errno after setting ``array->entry_num``; here the
    KernelError is raised after setting it."""
    dmar_domain = to_dmar_domain(domain)
    processed = 0
    try:
        if array.type != uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1:
            raise EINVAL(f"invalidation data type {array.type}")
        for index in range(array.entry_num):
            inv = iommu_copy_struct_from_user_array(
                uapi.iommu_hwpt_vtd_s1_invalidate,
                array,
                uapi.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
                index,
            )
            if inv.flags & ~uapi.IOMMU_VTD_INV_FLAGS_LEAF or inv.reserved:
                raise EOPNOTSUPP(f"entry {index}: flags {inv.flags:#x} or __reserved set")
            if inv.addr % VTD_PAGE_SIZE or (inv.npages == U64_MAX and inv.addr):
                raise EINVAL(f"entry {index}: address {inv.addr:#x}, {inv.npages} pages")
            end = inv.addr + (inv.npages << VTD_PAGE_SHIFT) - 1
            cache_tag_flush_range(
                dmar_domain,
                inv.addr,
                min(end, U64_MAX),
                inv.flags & uapi.IOMMU_VTD_INV_FLAGS_LEAF,
            )
            processed += 1
    finally:
        array.entry_num = processed


class IntelNestedDomainOps:
    """``intel_nested_domain_ops``."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        intel_nested_attach_dev(domain, dev, old)

    def free(self, domain: IommuDomain) -> None:
        intel_nested_domain_free(domain)

    def cache_invalidate_user(self, domain: IommuDomain, array: IommuUserDataArray) -> None:
        intel_nested_cache_invalidate_user(domain, array)


def intel_nested_domain_alloc(
    ops: IntelIommuOps, parent: IommuDomain, user_data: IommuUserData
) -> DmarDomain:
    """``intel_nested_domain_alloc``: EOPNOTSUPP for data other than
    IOMMU_HWPT_DATA_VTD_S1, EINVAL for a parent that is not this driver's nesting
    parent, the copy's errno (EINVAL short, E2BIG non-zero tail, EFAULT), ENOMEM."""
    if user_data.type != uapi.IOMMU_HWPT_DATA_VTD_S1:
        raise EOPNOTSUPP(f"stage-1 data type {user_data.type}")
    if parent.ops is not ops.default_domain_ops or not isinstance(parent, DmarDomain):
        raise EINVAL("the parent is not a VT-d paging domain")
    if not parent.nested_parent:
        raise EINVAL("the parent was not allocated as a nest parent")
    vtd = iommu_copy_struct_from_user(
        uapi.iommu_hwpt_vtd_s1, user_data, uapi.IOMMU_HWPT_DATA_VTD_S1
    )
    kmem = kzalloc(512, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("dmar_domain")
    domain = DmarDomain(
        type=IOMMU_DOMAIN_NESTED,
        ops=ops.nested_domain_ops,
        name="dmar_domain",
        use_first_level=True,
        s2_domain=parent,
        s1_cfg=vtd,
        kmem=kmem,
    )
    parent.s1_domains.append(domain)
    return domain
