"""The iommufd-facing ops of drivers/iommu/intel/iommu.c (Linux 6.12):
``intel_iommu_hw_info`` and ``intel_iommu_domain_alloc_user``.

``hw_info`` hands user space the unit's raw CAP and ECAP registers in a
``struct iommu_hw_info_vtd``, with the SPR17 erratum flag 6.12 always sets.

``domain_alloc_user`` makes the domains IOMMU_HWPT_ALLOC asks for. User-owned
paging domains are always second-stage tables (6.12: "Do not use first stage for
user domain translation"), so a VMM's IOAS lives in the table format nesting would
put under a guest's first stage. NEST_PARENT needs ECAP.NEST and DIRTY_TRACKING
needs scalable mode with ECAP.SLADS (EOPNOTSUPP otherwise); the vendor data of a
nested (stage-1) domain is not modelled yet, so a ``parent`` is EOPNOTSUPP.
6.13 split this op into ``domain_alloc_paging_flags`` and ``domain_alloc_nested``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.domain import dev_info_of
from kernel.device import Device
from kernel.errno import ENOMEM, EOPNOTSUPP
from kernel.fault_inject import should_fail
from kernel.iommu.iommu_h import IOMMU_DOMAIN_UNMANAGED, IommuDomain
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from drivers.intel_iommu.ops import IntelIommuOps


def intel_iommu_hw_info(dev: Device) -> tuple[bytes, int]:
    """``intel_iommu_hw_info``: ``struct iommu_hw_info_vtd`` bytes and its type."""
    if should_fail("kmalloc"):
        raise ENOMEM("iommu_hw_info_vtd (injected)")
    iommu = dev_info_of(dev).iommu
    vtd = uapi.iommu_hw_info_vtd(
        flags=uapi.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, cap_reg=iommu.cap, ecap_reg=iommu.ecap
    )
    return vtd.to_bytes(), uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD


def intel_iommu_domain_alloc_user(
    ops: IntelIommuOps, dev: Device, flags: int, parent: IommuDomain | None, user_data: Any
) -> IommuDomain:
    """``intel_iommu_domain_alloc_user``."""
    iommu = dev_info_of(dev).iommu
    nested_parent = bool(flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    dirty_tracking = bool(flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    if parent is not None:
        raise EOPNOTSUPP("nested VT-d domains are not modelled yet")
    if flags & ~(
        uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
        | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        | uapi.IOMMU_HWPT_FAULT_ID_VALID
    ):
        raise EOPNOTSUPP(f"HWPT flags {flags:#x}")
    if nested_parent and not ir.ecap_nest(iommu.ecap):
        raise EOPNOTSUPP(f"{iommu.name}: no nested translation (ECAP.NEST=0)")
    if user_data is not None:
        raise EOPNOTSUPP("vendor data for a paging domain")
    if dirty_tracking and not (iommu.sm and ir.ecap_slads(iommu.ecap)):
        raise EOPNOTSUPP(f"{iommu.name}: no second-stage A/D bits (ECAP.SLADS=0)")
    if dirty_tracking:
        raise EOPNOTSUPP("VT-d dirty tracking is not modelled yet")
    domain = ops.paging_domain_alloc(dev, first_stage=False)
    domain.type = IOMMU_DOMAIN_UNMANAGED  # the owner is set by iommufd, as in C
    return domain
