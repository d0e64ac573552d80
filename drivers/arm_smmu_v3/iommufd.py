"""The iommufd-facing op of drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c (Linux 6.12):
``arm_smmu_domain_alloc_user``.

6.12's SMMUv3 driver gives iommufd paging domains only: the one flag it accepts
is DIRTY_TRACKING, which needs HTTU with dirty-state update (``ARM_SMMU_FEAT_HD``,
which the model's feature set does not have: EOPNOTSUPP), and it takes no parent
and no vendor data. It has no
``hw_info`` (IOMMU_GET_HW_INFO answers IOMMU_HW_INFO_TYPE_NONE): the IDR registers
in ``struct iommu_hw_info_arm_smmuv3``, NEST_PARENT and nested stage-1 domains
arrived with 6.13's ``arm-smmu-v3-iommufd.c``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.arm_smmu_v3.structs import dev_iommu_priv_get
from kernel.device import Device
from kernel.errno import EOPNOTSUPP
from kernel.iommu.iommu_h import IOMMU_DOMAIN_UNMANAGED, IommuDomain
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from drivers.arm_smmu_v3.arm_smmu_v3 import ArmSmmuOps


def arm_smmu_domain_alloc_user(
    ops: ArmSmmuOps, dev: Device, flags: int, parent: IommuDomain | None, user_data: Any
) -> IommuDomain:
    """``arm_smmu_domain_alloc_user``."""
    if flags & ~uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING:
        raise EOPNOTSUPP(f"HWPT flags {flags:#x}")
    if parent is not None or user_data is not None:
        raise EOPNOTSUPP("SMMUv3 in 6.12 takes no nested or vendor-data domains")
    if flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING:
        raise EOPNOTSUPP(f"{dev_iommu_priv_get(dev).smmu.name}: no HTTU dirty state")
    domain = ops.domain_alloc_paging(dev)
    domain.type = IOMMU_DOMAIN_UNMANAGED  # the owner is set by iommufd, as in C
    domain.ops = ops.default_domain_ops
    return domain
