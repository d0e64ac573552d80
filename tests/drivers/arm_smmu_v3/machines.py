"""The ``smmuv3`` machine preset (defined in ``iommulab/presets.py``) and the boot
helper the SMMUv3 tests share.

StreamID = PCI requester ID (an identity IORT mapping), so the DSA at 00:02.0 is
SID 0x10 and the edu at 00:03.0 SID 0x18.
"""

from __future__ import annotations

import copy
from typing import Any

from hw.machine import Machine, build_machine
from iommulab.presets import PRESETS
from kernel.boot import Kernel, boot

SMMUV3: dict[str, Any] = PRESETS["smmuv3"]

DSA_BDF = "0000:00:02.0"
EDU_BDF = "0000:00:03.0"
DSA_SID = 0x10
EDU_SID = 0x18


def smmuv3_machine(smmu_config: dict[str, Any] | None = None, ram: str | None = None) -> Machine:
    """:data:`SMMUV3` with optional SMMU configuration (``Smmuv3Config`` keys)."""
    spec = copy.deepcopy(SMMUV3)
    if smmu_config:
        spec["iommus"][0]["config"] = dict(smmu_config)
    if ram is not None:
        spec["ram"] = ram
    return build_machine(spec)


def boot_smmuv3(
    cmdline: str = "",
    smmu_config: dict[str, Any] | None = None,
    builtins: tuple[str, ...] = ("drivers.arm_smmu_v3",),
) -> Kernel:
    """Boot a kernel with the arm_smmu_v3 plugin (and nothing else unless asked)."""
    return boot(smmuv3_machine(smmu_config), cmdline, builtins=builtins, entry_points=False)
