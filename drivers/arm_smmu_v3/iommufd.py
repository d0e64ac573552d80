"""The iommufd-facing ops of drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c (Linux 6.12):
``arm_smmu_domain_alloc_user`` and ``arm_smmu_dirty_ops``.

6.12's SMMUv3 driver gives iommufd paging domains only: the one flag it accepts
is DIRTY_TRACKING (iommufd has already checked ``arm_smmu_dbm_capable``: HTTU with
dirty-state update and coherent walks), which finalises the domain with the HD
quirk, so its CD carries HA/HD and its writable leaves DBM. It takes no parent and
no vendor data. It has no ``hw_info`` (IOMMU_GET_HW_INFO answers
IOMMU_HW_INFO_TYPE_NONE): the IDR registers in ``struct iommu_hw_info_arm_smmuv3``,
NEST_PARENT and nested stage-1 domains arrived with 6.13's ``arm-smmu-v3-iommufd.c``.

Dirty ops: ``set_dirty_tracking`` does nothing (the CD's HD is always on for such a
domain, and iommufd clears the dirty state before it enables tracking);
``read_and_clear_dirty`` is io-pgtable's. Unlike VT-d (SSADE off while tracking is
off), writes made while tracking is "off" are still recorded by the hardware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.arm_smmu_v3.domain import ArmSmmuDomain
from drivers.arm_smmu_v3.io_pgtable_arm import ArmLpaeIoPgtable
from kernel.device import Device
from kernel.errno import EOPNOTSUPP
from kernel.iommu.iommu_h import IOMMU_DOMAIN_UNMANAGED, IommuDomain
from kernel.iommufd.iova_bitmap import IommuDirtyBitmap
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
    domain = ops.domain_alloc_finalised(dev, flags, "smmu-user")
    domain.type = IOMMU_DOMAIN_UNMANAGED  # the owner is set by iommufd, as in C
    domain.ops = ops.default_domain_ops
    return domain


class ArmSmmuDirtyOps:
    """``arm_smmu_dirty_ops``."""

    def set_dirty_tracking(self, domain: IommuDomain, enabled: bool) -> None:
        """``arm_smmu_set_dirty_tracking``: always on in the hardware; nothing to do."""

    def read_and_clear_dirty(
        self, domain: IommuDomain, iova: int, size: int, flags: int, dirty: IommuDirtyBitmap
    ) -> None:
        """``arm_smmu_read_and_clear_dirty``: the domain's io-pgtable reads (and clears)
        the dirty leaves; the caller flushes what was recorded in the gather."""
        assert isinstance(domain, ArmSmmuDomain)
        pgtbl = domain.pgtbl_ops
        if not isinstance(pgtbl, ArmLpaeIoPgtable):
            raise EOPNOTSUPP("dirty state needs the io-pgtable-arm tables")
        pgtbl.read_and_clear_dirty(iova, size, flags, dirty)


ARM_SMMU_DIRTY_OPS = ArmSmmuDirtyOps()
