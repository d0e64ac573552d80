"""The ``smmuv3`` machine description, kept here until it moves into
``iommulab/presets.py`` (copy :data:`SMMUV3` as the preset), and the boot helper
the SMMUv3 tests share.

StreamID = PCI requester ID (an identity IORT mapping), so the DSA at 00:02.0 is
SID 0x10 and the edu at 00:03.0 SID 0x18.
"""

from __future__ import annotations

import copy
from typing import Any

from hw.machine import Machine, build_machine
from kernel.boot import Kernel, boot

SMMUV3: dict[str, Any] = {
    "name": "smmuv3",
    "ram": "256M",
    "iommus": [{"kind": "smmuv3", "name": "smmu0", "scope": "all"}],
    "devices": [
        {"kind": "dsa", "bdf": "0000:00:02.0"},
        {"kind": "edu", "bdf": "0000:00:03.0"},
    ],
    "doc": (
        "One ARM SMMUv3 (IORT, StreamID = requester ID) in front of an Intel DSA and the "
        "edu toy device. DSA behind SMMUv3 does not exist in silicon (the idxd driver is "
        "x86-only): this is a simulation pairing for the IOMMU-vendor swap under an "
        "unchanged idxd driver."
    ),
}

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
