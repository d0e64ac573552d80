"""kernel.uapi.iommufd's Linux 6.13 additions against facts transcribed from the
v6.13 ``include/uapi/linux/iommufd.h`` (the vIOMMU and SMMUv3 nesting UAPI).

The compiled-header test (``test_uapi_layout.py``) cannot check these: Debian's
6.12 header does not have them. The facts below are written out from the v6.13
header by hand - member order, C types and ``__aligned_u64`` / ``__aligned_le64``
alignment - and are never derived from the module under test. Array members
(``ste[2]``, ``idr[6]``, ``cmd[2]``) are split into numbered Python fields; the test
joins them back to the C member.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from kernel.iommufd.viommu import iommufd_viommu_ioctl_ops
from kernel.uapi import iommufd as uapi
from tests.kernel.iommufd.nested_guest import boot_nested

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks

LAYOUT_6_13: dict[str, dict[str, tuple[int, int]]] = {
    # struct iommu_hwpt_arm_smmuv3 { __aligned_le64 ste[2]; };
    "iommu_hwpt_arm_smmuv3": {"sizeof": (16, 0), "ste": (0, 16)},
    # struct iommu_hw_info_arm_smmuv3 { __u32 flags; __u32 __reserved; __u32 idr[6];
    #                                   __u32 iidr; __u32 aidr; };
    "iommu_hw_info_arm_smmuv3": {
        "sizeof": (40, 0),
        "flags": (0, 4),
        "__reserved": (4, 4),
        "idr": (8, 24),
        "iidr": (32, 4),
        "aidr": (36, 4),
    },
    # struct iommu_viommu_alloc { __u32 size; __u32 flags; __u32 type; __u32 dev_id;
    #                             __u32 hwpt_id; __u32 out_viommu_id; };
    "iommu_viommu_alloc": {
        "sizeof": (24, 0),
        "size": (0, 4),
        "flags": (4, 4),
        "type": (8, 4),
        "dev_id": (12, 4),
        "hwpt_id": (16, 4),
        "out_viommu_id": (20, 4),
    },
    # struct iommu_vdevice_alloc { __u32 size; __u32 viommu_id; __u32 dev_id;
    #                              __u32 out_vdevice_id; __aligned_u64 virt_id; };
    "iommu_vdevice_alloc": {
        "sizeof": (24, 0),
        "size": (0, 4),
        "viommu_id": (4, 4),
        "dev_id": (8, 4),
        "out_vdevice_id": (12, 4),
        "virt_id": (16, 8),
    },
    # struct iommu_viommu_arm_smmuv3_invalidate { __aligned_le64 cmd[2]; };
    "iommu_viommu_arm_smmuv3_invalidate": {"sizeof": (16, 0), "cmd": (0, 16)},
}

CONSTANTS_6_13 = {
    # #define IOMMU_VIOMMU_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VIOMMU_ALLOC), CMD 0x90
    "IOMMU_VIOMMU_ALLOC": ord(";") << 8 | 0x90,
    # #define IOMMU_VDEVICE_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VDEVICE_ALLOC), CMD 0x91
    "IOMMU_VDEVICE_ALLOC": ord(";") << 8 | 0x91,
    "IOMMU_HWPT_DATA_ARM_SMMUV3": 2,  # enum iommu_hwpt_data_type
    "IOMMU_HW_INFO_TYPE_ARM_SMMUV3": 2,  # enum iommu_hw_info_type
    "IOMMU_VIOMMU_TYPE_DEFAULT": 0,  # enum iommu_viommu_type
    "IOMMU_VIOMMU_TYPE_ARM_SMMUV3": 1,
    "IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3": 1,  # enum iommu_hwpt_invalidate_data_type
}

MIN_SIZES_6_13 = {"iommu_viommu_alloc": 24, "iommu_vdevice_alloc": 24}
"""main.c's IOCTL_OP rows: offsetofend(out_viommu_id), offsetofend(virt_id)."""


def c_members(cls: type[uapi.UapiStruct]) -> dict[str, tuple[int, int]]:
    """The struct's C members: numbered fields (``idr0``..``idr5``) joined into the
    array they split."""
    out: dict[str, tuple[int, int]] = {"sizeof": (cls.SIZE, 0)}
    for name, (off, size) in cls.c_layout().items():
        base = re.sub(r"\d+$", "", name)
        if base != name and base in out:
            first, total = out[base]
            assert off == first + total, f"{cls.C_NAME}.{name} is not contiguous"
            out[base] = (first, total + size)
        else:
            out[base] = (off, size)
    return out


@pytest.mark.parametrize("cls", uapi.STRUCTS_6_13, ids=lambda c: c.C_NAME)
def test_every_6_13_struct_has_the_headers_size_and_member_offsets(
    cls: type[uapi.UapiStruct],
) -> None:
    assert c_members(cls) == LAYOUT_6_13[cls.C_NAME]


def test_the_facts_cover_every_6_13_struct_and_constant() -> None:
    assert {cls.C_NAME for cls in uapi.STRUCTS_6_13} == set(LAYOUT_6_13)
    assert set(uapi.CONSTANTS_6_13) == set(CONSTANTS_6_13)


def test_every_6_13_constant_has_the_headers_value() -> None:
    assert {n: getattr(uapi, n) for n in uapi.CONSTANTS_6_13} == CONSTANTS_6_13


def test_the_6_13_commands_have_upstreams_minimum_size(iommulab_checks: KernelChecks) -> None:
    """Under ``iommufd.viommu=on`` the two commands are in the ioctl table with
    main.c's minimum sizes; without it they are not."""
    k = iommulab_checks.track(boot_nested("smmuv3"))
    with k:
        ops = iommufd_viommu_ioctl_ops().values()
        assert {op.struct.C_NAME: op.min_size for op in ops} == MIN_SIZES_6_13
        assert {op.ioctl_num for op in ops} == {
            CONSTANTS_6_13["IOMMU_VIOMMU_ALLOC"],
            CONSTANTS_6_13["IOMMU_VDEVICE_ALLOC"],
        }
    k = iommulab_checks.track(boot_nested("smmuv3", cmdline=""))
    with k:
        assert not iommufd_viommu_ioctl_ops()


@pytest.mark.parametrize("cls", uapi.STRUCTS_6_13, ids=lambda c: c.C_NAME)
def test_6_13_structs_round_trip_little_endian(cls: type[uapi.UapiStruct]) -> None:
    raw = bytes(range(1, cls.SIZE + 1))
    assert cls.from_bytes(raw).to_bytes() == raw
    assert cls.from_bytes(raw[:4]).to_bytes() == raw[:4] + bytes(cls.SIZE - 4)
