"""include/uapi/linux/iommufd.h (Linux 6.12): the iommufd ioctl numbers, constants and
structs, byte-exact.

Every struct is a :class:`UapiStruct`: an attrs class whose fields are the C members
in order (a C name with leading underscores, ``__reserved``, becomes ``reserved``;
:meth:`UapiStruct.c_layout` gives the C names) and whose bytes come from one
``struct`` format without implicit padding, since each iommufd struct is laid out
with explicit reserved members and ``__aligned_u64`` at 8-byte offsets. The layout
test compiles the real 6.12 header with gcc and compares every size and offset.

This is the kernel's (and the test "user space"'s) one home for these layouts: no
hardware model parses them, so unlike ``linux/idxd.h`` it lives in ``kernel.uapi``.

Names newer than 6.12 are kept apart at the end of the module
(:data:`NEWER_THAN_6_12`) and say which release added them.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Self

from attrs import astuple, define, fields

# --------------------------------------------------------------------------- ioctl numbers

IOMMUFD_TYPE = ord(";")

IOMMUFD_CMD_BASE = 0x80
IOMMUFD_CMD_DESTROY = IOMMUFD_CMD_BASE
IOMMUFD_CMD_IOAS_ALLOC = 0x81
IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82
IOMMUFD_CMD_IOAS_COPY = 0x83
IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84
IOMMUFD_CMD_IOAS_MAP = 0x85
IOMMUFD_CMD_IOAS_UNMAP = 0x86
IOMMUFD_CMD_OPTION = 0x87
IOMMUFD_CMD_VFIO_IOAS = 0x88
IOMMUFD_CMD_HWPT_ALLOC = 0x89
IOMMUFD_CMD_GET_HW_INFO = 0x8A
IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8B
IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8C
IOMMUFD_CMD_HWPT_INVALIDATE = 0x8D
IOMMUFD_CMD_FAULT_QUEUE_ALLOC = 0x8E

_IOC_NRBITS = 8
_IOC_TYPESHIFT = _IOC_NRBITS


def _IO(type: int, nr: int) -> int:
    """``_IO(type, nr)`` of asm-generic/ioctl.h: direction none, size 0."""
    return type << _IOC_TYPESHIFT | nr


def _IOC_NR(cmd: int) -> int:
    return cmd & ((1 << _IOC_NRBITS) - 1)


def _IOC_TYPE(cmd: int) -> int:
    return (cmd >> _IOC_TYPESHIFT) & 0xFF


IOMMU_DESTROY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)
IOMMU_IOAS_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
IOMMU_IOAS_ALLOW_IOVAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS)
IOMMU_IOAS_COPY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY)
IOMMU_IOAS_IOVA_RANGES = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)
IOMMU_IOAS_MAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)
IOMMU_IOAS_UNMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP)
IOMMU_OPTION = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION)
IOMMU_VFIO_IOAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS)
IOMMU_HWPT_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC)
IOMMU_GET_HW_INFO = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO)
IOMMU_HWPT_SET_DIRTY_TRACKING = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING)
IOMMU_HWPT_GET_DIRTY_BITMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP)
IOMMU_HWPT_INVALIDATE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE)
IOMMU_FAULT_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC)

# --------------------------------------------------------------------------- enums

IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE = 1 << 1
IOMMU_IOAS_MAP_READABLE = 1 << 2

IOMMU_OPTION_RLIMIT_MODE = 0
IOMMU_OPTION_HUGE_PAGES = 1
IOMMU_OPTION_OP_SET = 0
IOMMU_OPTION_OP_GET = 1

IOMMU_VFIO_IOAS_GET = 0
IOMMU_VFIO_IOAS_SET = 1
IOMMU_VFIO_IOAS_CLEAR = 2

IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID = 1 << 2

IOMMU_VTD_S1_SRE = 1 << 0
IOMMU_VTD_S1_EAFE = 1 << 1
IOMMU_VTD_S1_WPE = 1 << 2

IOMMU_HWPT_DATA_NONE = 0
IOMMU_HWPT_DATA_VTD_S1 = 1

IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0

IOMMU_HW_INFO_TYPE_NONE = 0
IOMMU_HW_INFO_TYPE_INTEL_VTD = 1

IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0
IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1
IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2

IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1
IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1

IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0
IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0

IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0
IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1
IOMMU_PGFAULT_PERM_READ = 1 << 0
IOMMU_PGFAULT_PERM_WRITE = 1 << 1
IOMMU_PGFAULT_PERM_EXEC = 1 << 2
IOMMU_PGFAULT_PERM_PRIV = 1 << 3

IOMMUFD_PAGE_RESP_SUCCESS = 0
IOMMUFD_PAGE_RESP_INVALID = 1

CONSTANTS_6_12: tuple[str, ...] = tuple(n for n in dir() if n.startswith("IOMMU"))
"""Every constant above, each of which the 6.12 header defines (layout test)."""

# --------------------------------------------------------------------------- structs


class UapiStruct:
    """A UAPI struct: attrs fields in C order, one little-endian ``struct`` format.

    Subclasses set ``_FORMAT`` (one code per field, in order). ``SIZE`` and the
    per-field ``(offset, size)`` layout follow from it."""

    _FORMAT: ClassVar[str]
    _STRUCT: ClassVar[struct.Struct]
    SIZE: ClassVar[int]
    C_NAME: ClassVar[str]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._STRUCT = struct.Struct("<" + cls._FORMAT)
        cls.SIZE = cls._STRUCT.size
        cls.C_NAME = cls.__name__

    def to_bytes(self) -> bytes:
        return self._STRUCT.pack(*astuple(self, recurse=False))  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Parse the first ``SIZE`` bytes of ``data`` (shorter data is zero-extended,
        as ``copy_struct_from_user`` zero-fills a short user struct)."""
        raw = bytes(data[: cls.SIZE])
        raw += bytes(cls.SIZE - len(raw))
        return cls(*cls._STRUCT.unpack(raw))

    @classmethod
    def c_layout(cls) -> dict[str, tuple[int, int]]:
        """C member name -> (offset, size), for the layout test."""
        out: dict[str, tuple[int, int]] = {}
        codes = _split_format(cls._FORMAT)
        off = 0
        for f, code in zip(fields(cls), codes, strict=True):  # type: ignore[arg-type]
            size = struct.calcsize("<" + code)
            out[_c_name(f.name)] = (off, size)
            off += size
        return out

    @classmethod
    def offsetofend(cls, member: str) -> int:
        """C ``offsetofend(struct, member)`` (``member`` by its C name)."""
        off, size = cls.c_layout()[member]
        return off + size


def _split_format(fmt: str) -> list[str]:
    out: list[str] = []
    num = ""
    for ch in fmt.replace(" ", ""):
        if ch.isdigit():
            num += ch
        else:
            out.append(num + ch)
            num = ""
    return out


def _c_name(py: str) -> str:
    return "__" + py if py.startswith("reserved") else py


@define
class iommu_destroy(UapiStruct):
    _FORMAT = "II"
    size: int = 0
    id: int = 0


@define
class iommu_ioas_alloc(UapiStruct):
    _FORMAT = "III"
    size: int = 0
    flags: int = 0
    out_ioas_id: int = 0


@define
class iommu_iova_range(UapiStruct):
    _FORMAT = "QQ"
    start: int = 0
    last: int = 0


@define
class iommu_ioas_iova_ranges(UapiStruct):
    _FORMAT = "IIIIQQ"
    size: int = 0
    ioas_id: int = 0
    num_iovas: int = 0
    reserved: int = 0
    allowed_iovas: int = 0
    out_iova_alignment: int = 0


@define
class iommu_ioas_allow_iovas(UapiStruct):
    _FORMAT = "IIIIQ"
    size: int = 0
    ioas_id: int = 0
    num_iovas: int = 0
    reserved: int = 0
    allowed_iovas: int = 0


@define
class iommu_ioas_map(UapiStruct):
    _FORMAT = "IIIIQQQ"
    size: int = 0
    flags: int = 0
    ioas_id: int = 0
    reserved: int = 0
    user_va: int = 0
    length: int = 0
    iova: int = 0


@define
class iommu_ioas_copy(UapiStruct):
    _FORMAT = "IIIIQQQ"
    size: int = 0
    flags: int = 0
    dst_ioas_id: int = 0
    src_ioas_id: int = 0
    length: int = 0
    dst_iova: int = 0
    src_iova: int = 0


@define
class iommu_ioas_unmap(UapiStruct):
    _FORMAT = "IIQQ"
    size: int = 0
    ioas_id: int = 0
    iova: int = 0
    length: int = 0


@define
class iommu_option(UapiStruct):
    _FORMAT = "IIHHIQ"
    size: int = 0
    option_id: int = 0
    op: int = 0
    reserved: int = 0
    object_id: int = 0
    val64: int = 0


@define
class iommu_vfio_ioas(UapiStruct):
    _FORMAT = "IIHH"
    size: int = 0
    ioas_id: int = 0
    op: int = 0
    reserved: int = 0


@define
class iommu_hwpt_vtd_s1(UapiStruct):
    _FORMAT = "QQII"
    flags: int = 0
    pgtbl_addr: int = 0
    addr_width: int = 0
    reserved: int = 0


@define
class iommu_hwpt_alloc(UapiStruct):
    _FORMAT = "IIIIIIIIQII"
    size: int = 0
    flags: int = 0
    dev_id: int = 0
    pt_id: int = 0
    out_hwpt_id: int = 0
    reserved: int = 0
    data_type: int = 0
    data_len: int = 0
    data_uptr: int = 0
    fault_id: int = 0
    reserved2: int = 0


@define
class iommu_hw_info_vtd(UapiStruct):
    _FORMAT = "IIQQ"
    flags: int = 0
    reserved: int = 0
    cap_reg: int = 0
    ecap_reg: int = 0


@define
class iommu_hw_info(UapiStruct):
    _FORMAT = "IIIIQIB3sQ"
    size: int = 0
    flags: int = 0
    dev_id: int = 0
    data_len: int = 0
    data_uptr: int = 0
    out_data_type: int = 0
    out_max_pasid_log2: int = 0
    reserved: bytes = b"\0\0\0"
    out_capabilities: int = 0


@define
class iommu_hwpt_set_dirty_tracking(UapiStruct):
    _FORMAT = "IIII"
    size: int = 0
    flags: int = 0
    hwpt_id: int = 0
    reserved: int = 0


@define
class iommu_hwpt_get_dirty_bitmap(UapiStruct):
    _FORMAT = "IIIIQQQQ"
    size: int = 0
    hwpt_id: int = 0
    flags: int = 0
    reserved: int = 0
    iova: int = 0
    length: int = 0
    page_size: int = 0
    data: int = 0


@define
class iommu_hwpt_vtd_s1_invalidate(UapiStruct):
    _FORMAT = "QQII"
    addr: int = 0
    npages: int = 0
    flags: int = 0
    reserved: int = 0


@define
class iommu_hwpt_invalidate(UapiStruct):
    _FORMAT = "IIQIIII"
    size: int = 0
    hwpt_id: int = 0
    data_uptr: int = 0
    data_type: int = 0
    entry_len: int = 0
    entry_num: int = 0
    reserved: int = 0


@define
class iommu_hwpt_pgfault(UapiStruct):
    _FORMAT = "IIIIIIQII"
    flags: int = 0
    dev_id: int = 0
    pasid: int = 0
    grpid: int = 0
    perm: int = 0
    reserved: int = 0
    addr: int = 0
    length: int = 0
    cookie: int = 0


@define
class iommu_hwpt_page_response(UapiStruct):
    _FORMAT = "II"
    cookie: int = 0
    code: int = 0


@define
class iommu_fault_alloc(UapiStruct):
    _FORMAT = "IIII"
    size: int = 0
    flags: int = 0
    out_fault_id: int = 0
    out_fault_fd: int = 0


STRUCTS_6_12: tuple[type[UapiStruct], ...] = (
    iommu_destroy,
    iommu_ioas_alloc,
    iommu_iova_range,
    iommu_ioas_iova_ranges,
    iommu_ioas_allow_iovas,
    iommu_ioas_map,
    iommu_ioas_copy,
    iommu_ioas_unmap,
    iommu_option,
    iommu_vfio_ioas,
    iommu_hwpt_vtd_s1,
    iommu_hwpt_alloc,
    iommu_hw_info_vtd,
    iommu_hw_info,
    iommu_hwpt_set_dirty_tracking,
    iommu_hwpt_get_dirty_bitmap,
    iommu_hwpt_vtd_s1_invalidate,
    iommu_hwpt_invalidate,
    iommu_hwpt_pgfault,
    iommu_hwpt_page_response,
    iommu_fault_alloc,
)
"""Every struct of the 6.12 header, each checked against it by the layout test."""

# --------------------------------------------------------------------------- newer than 6.12

IOMMU_HWPT_ALLOC_PASID = 1 << 3
"""6.15 (``iommufd: Support pasid attach/replace``): the HWPT may be attached to a
PASID. 6.12 has no PASID attach through iommufd; the model offers it as the newer
generation (see ``kernel.iommufd.device``)."""

# Linux 6.13, newer than the 6.12 baseline: the vIOMMU objects and SMMUv3 nesting
# (include/uapi/linux/iommufd.h of v6.13). The model offers them under the boot
# parameter ``iommufd.viommu=on`` (see ``kernel.iommufd.viommu``);
# ``tests/kernel/iommufd/test_uapi_layout_6_13.py`` checks them against facts
# transcribed from the v6.13 header, since the compiled 6.12 header lacks them.

IOMMUFD_CMD_VIOMMU_ALLOC = 0x90
IOMMUFD_CMD_VDEVICE_ALLOC = 0x91
IOMMU_VIOMMU_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VIOMMU_ALLOC)
IOMMU_VDEVICE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VDEVICE_ALLOC)

IOMMU_HWPT_DATA_ARM_SMMUV3 = 2
IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2
IOMMU_VIOMMU_TYPE_DEFAULT = 0
IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1
IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1


@define
class iommu_hwpt_arm_smmuv3(UapiStruct):
    """``struct iommu_hwpt_arm_smmuv3``: the guest's vSTE, ``__aligned_le64 ste[2]``
    (``ste0``/``ste1`` here)."""

    _FORMAT = "QQ"
    ste0: int = 0
    ste1: int = 0


@define
class iommu_hw_info_arm_smmuv3(UapiStruct):
    """``struct iommu_hw_info_arm_smmuv3``: ``__u32 idr[6]`` is ``idr0``..``idr5``."""

    _FORMAT = "IIIIIIIIII"
    flags: int = 0
    reserved: int = 0
    idr0: int = 0
    idr1: int = 0
    idr2: int = 0
    idr3: int = 0
    idr4: int = 0
    idr5: int = 0
    iidr: int = 0
    aidr: int = 0


@define
class iommu_viommu_alloc(UapiStruct):
    _FORMAT = "IIIIII"
    size: int = 0
    flags: int = 0
    type: int = 0
    dev_id: int = 0
    hwpt_id: int = 0
    out_viommu_id: int = 0


@define
class iommu_vdevice_alloc(UapiStruct):
    _FORMAT = "IIIIQ"
    size: int = 0
    viommu_id: int = 0
    dev_id: int = 0
    out_vdevice_id: int = 0
    virt_id: int = 0


@define
class iommu_viommu_arm_smmuv3_invalidate(UapiStruct):
    """``struct iommu_viommu_arm_smmuv3_invalidate``: one SMMUv3 command,
    ``__aligned_le64 cmd[2]`` (``cmd0``/``cmd1`` here)."""

    _FORMAT = "QQ"
    cmd0: int = 0
    cmd1: int = 0


STRUCTS_6_13: tuple[type[UapiStruct], ...] = (
    iommu_hwpt_arm_smmuv3,
    iommu_hw_info_arm_smmuv3,
    iommu_viommu_alloc,
    iommu_vdevice_alloc,
    iommu_viommu_arm_smmuv3_invalidate,
)
"""The structs 6.13 added that the model uses."""

CONSTANTS_6_13: tuple[str, ...] = (
    "IOMMU_VIOMMU_ALLOC",
    "IOMMU_VDEVICE_ALLOC",
    "IOMMU_HWPT_DATA_ARM_SMMUV3",
    "IOMMU_HW_INFO_TYPE_ARM_SMMUV3",
    "IOMMU_VIOMMU_TYPE_DEFAULT",
    "IOMMU_VIOMMU_TYPE_ARM_SMMUV3",
    "IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3",
)

NEWER_THAN_6_12: tuple[str, ...] = (
    "IOMMU_HWPT_ALLOC_PASID",
    *CONSTANTS_6_13,
    *(cls.C_NAME for cls in STRUCTS_6_13),
)
