"""ARM SMMUv3 IOMMU driver (drivers/iommu/arm/arm-smmu-v3/ and io-pgtable-arm.c):
the ``arm_smmu_v3`` vendor plugin.

It claims the firmware's ``IORT`` SMMUv3 units. Modules mirror the kernel files,
with arm-smmu-v3.c split by concern: :mod:`registers` (arm-smmu-v3.h's register and
table fields), :mod:`structs` (arm-smmu-v3.h's structures), :mod:`arm_smmu_v3`
(arm-smmu-v3.c: bring-up, ``arm_smmu_ops``, masters), :mod:`cmdq` (the command/event
queue and global-error parts), :mod:`entry_writer` (STEs, CD tables and the hitless
entry writer), :mod:`domain` (domains, attach, PASID, TLB invalidation),
:mod:`io_pgtable_arm` (io-pgtable-arm.c, LPAE stage 1) and :mod:`debugfs` (the
``smmuv3`` dump view). The driver has no SVA, so there is no arm-smmu-v3-sva.c
counterpart. The driver programs the SMMU only through MMIO and tables in RAM; it
never imports the hardware model.
"""

from __future__ import annotations

from collections.abc import Sequence

from kernel.debugfs import DumpTarget
from kernel.hookspecs import hookimpl
from kernel.module import IommuDriverInfo


@hookimpl
def iommulab_iommu_drivers() -> Sequence[IommuDriverInfo]:
    from drivers.arm_smmu_v3.arm_smmu_v3 import arm_smmu_device_probe, arm_smmu_device_shutdown

    return [
        IommuDriverInfo(
            name="arm_smmu_v3",
            table="IORT",
            probe=arm_smmu_device_probe,
            shutdown=arm_smmu_device_shutdown,
            description="ARM SMMUv3 (stage 1, PASID through CD tables)",
        )
    ]


@hookimpl
def iommulab_dump_targets() -> Sequence[DumpTarget]:
    from drivers.arm_smmu_v3.debugfs import smmuv3_dump_target

    return [smmuv3_dump_target()]
