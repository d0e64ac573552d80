"""``include/uapi/linux/idxd.h``: DSA descriptors, completion records, opcodes, flags.

Byte layouts are those of the packed C structs: :class:`DsaHwDesc` is
``struct dsa_hw_desc`` (64 bytes) and :class:`DsaCompletionRecord` is
``struct dsa_completion_record`` (32 bytes). Each C member (including every member
of the anonymous unions) is an attribute with the C name; union members overlay
the same bytes exactly as in C. Bit-fields (``pasid:20``, ``flags:24`` ...) are
little-endian bit ranges of their 32-bit storage unit, as gcc lays them out on
x86-64. :data:`DSA_HW_DESC_LAYOUT` / :data:`DSA_COMPLETION_RECORD_LAYOUT` list
``name -> (byte offset, byte size, bit lsb, bit width)`` for layout tests.

Dependency-free on purpose (stdlib only).
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, overload

# --------------------------------------------------------------------------- flags
IDXD_OP_FLAG_FENCE = 0x0001
IDXD_OP_FLAG_BOF = 0x0002
IDXD_OP_FLAG_CRAV = 0x0004
IDXD_OP_FLAG_RCR = 0x0008
IDXD_OP_FLAG_RCI = 0x0010
IDXD_OP_FLAG_CRSTS = 0x0020
IDXD_OP_FLAG_CR = 0x0080
IDXD_OP_FLAG_CC = 0x0100
IDXD_OP_FLAG_ADDR1_TCS = 0x0200
IDXD_OP_FLAG_ADDR2_TCS = 0x0400
IDXD_OP_FLAG_ADDR3_TCS = 0x0800
IDXD_OP_FLAG_CR_TCS = 0x1000
IDXD_OP_FLAG_STORD = 0x2000
IDXD_OP_FLAG_DRDBK = 0x4000
IDXD_OP_FLAG_DSTS = 0x8000
IDXD_OP_FLAG_RD_SRC2_AECS = 0x010000
IDXD_OP_FLAG_RD_SRC2_2ND = 0x020000
IDXD_OP_FLAG_WR_SRC2_AECS_COMP = 0x040000
IDXD_OP_FLAG_WR_SRC2_AECS_OVFL = 0x080000
IDXD_OP_FLAG_SRC2_STS = 0x100000
IDXD_OP_FLAG_CRC_RFC3720 = 0x200000

DSA_COMP_STATUS_MASK = 0x7F
DSA_COMP_STATUS_WRITE = 0x80

IDXD_SCMD_SOFTERR_MASK = 0x80000000
IDXD_SCMD_SOFTERR_SHIFT = 16


class dsa_opcode(enum.IntEnum):
    DSA_OPCODE_NOOP = 0x00
    DSA_OPCODE_BATCH = 0x01
    DSA_OPCODE_DRAIN = 0x02
    DSA_OPCODE_MEMMOVE = 0x03
    DSA_OPCODE_MEMFILL = 0x04
    DSA_OPCODE_COMPARE = 0x05
    DSA_OPCODE_COMPVAL = 0x06
    DSA_OPCODE_CR_DELTA = 0x07
    DSA_OPCODE_AP_DELTA = 0x08
    DSA_OPCODE_DUALCAST = 0x09
    DSA_OPCODE_CRCGEN = 0x10
    DSA_OPCODE_COPY_CRC = 0x11
    DSA_OPCODE_DIF_CHECK = 0x12
    DSA_OPCODE_DIF_INS = 0x13
    DSA_OPCODE_DIF_STRP = 0x14
    DSA_OPCODE_DIF_UPDT = 0x15
    DSA_OPCODE_CFLUSH = 0x20


class dsa_completion_status(enum.IntEnum):
    DSA_COMP_NONE = 0x00
    DSA_COMP_SUCCESS = 0x01
    DSA_COMP_SUCCESS_PRED = 0x02
    DSA_COMP_PAGE_FAULT_NOBOF = 0x03
    DSA_COMP_PAGE_FAULT_IR = 0x04
    DSA_COMP_BATCH_FAIL = 0x05
    DSA_COMP_BATCH_PAGE_FAULT = 0x06
    DSA_COMP_DR_OFFSET_NOINC = 0x07
    DSA_COMP_DR_OFFSET_ERANGE = 0x08
    DSA_COMP_DIF_ERR = 0x09
    DSA_COMP_BAD_OPCODE = 0x10
    DSA_COMP_INVALID_FLAGS = 0x11
    DSA_COMP_NOZERO_RESERVE = 0x12
    DSA_COMP_XFER_ERANGE = 0x13
    DSA_COMP_DESC_CNT_ERANGE = 0x14
    DSA_COMP_DR_ERANGE = 0x15
    DSA_COMP_OVERLAP_BUFFERS = 0x16
    DSA_COMP_DCAST_ERR = 0x17
    DSA_COMP_DESCLIST_ALIGN = 0x18
    DSA_COMP_INT_HANDLE_INVAL = 0x19
    DSA_COMP_CRA_XLAT = 0x1A
    DSA_COMP_CRA_ALIGN = 0x1B
    DSA_COMP_ADDR_ALIGN = 0x1C
    DSA_COMP_PRIV_BAD = 0x1D
    DSA_COMP_TRAFFIC_CLASS_CONF = 0x1E
    DSA_COMP_PFAULT_RDBA = 0x1F
    DSA_COMP_HW_ERR1 = 0x20
    DSA_COMP_HW_ERR_DRB = 0x21
    DSA_COMP_TRANSLATION_FAIL = 0x22


class idxd_scmd_stat(enum.IntEnum):
    """Driver-generated command status (never read from hardware)."""

    IDXD_SCMD_DEV_ENABLED = 0x80000010
    IDXD_SCMD_DEV_NOT_ENABLED = 0x80000020
    IDXD_SCMD_WQ_ENABLED = 0x80000021
    IDXD_SCMD_DEV_DMA_ERR = 0x80020000
    IDXD_SCMD_WQ_NO_GRP = 0x80030000
    IDXD_SCMD_WQ_NO_NAME = 0x80040000
    IDXD_SCMD_WQ_NO_SVM = 0x80050000
    IDXD_SCMD_WQ_NO_THRESH = 0x80060000
    IDXD_SCMD_WQ_PORTAL_ERR = 0x80070000
    IDXD_SCMD_WQ_RES_ALLOC_ERR = 0x80080000
    IDXD_SCMD_PERCPU_ERR = 0x80090000
    IDXD_SCMD_DMA_CHAN_ERR = 0x800A0000
    IDXD_SCMD_CDEV_ERR = 0x800B0000
    IDXD_SCMD_WQ_NO_SWQ_SUPPORT = 0x800C0000
    IDXD_SCMD_WQ_NONE_CONFIGURED = 0x800D0000
    IDXD_SCMD_WQ_NO_SIZE = 0x800E0000
    IDXD_SCMD_WQ_NO_PRIV = 0x800F0000
    IDXD_SCMD_WQ_IRQ_ERR = 0x80100000
    IDXD_SCMD_WQ_USER_NO_IOMMU = 0x80110000


# Module-level names for the C enumerators (values come from the enums above, once).
DSA_OPCODE_NOOP = dsa_opcode.DSA_OPCODE_NOOP
DSA_OPCODE_BATCH = dsa_opcode.DSA_OPCODE_BATCH
DSA_OPCODE_DRAIN = dsa_opcode.DSA_OPCODE_DRAIN
DSA_OPCODE_MEMMOVE = dsa_opcode.DSA_OPCODE_MEMMOVE
DSA_OPCODE_MEMFILL = dsa_opcode.DSA_OPCODE_MEMFILL
DSA_OPCODE_COMPARE = dsa_opcode.DSA_OPCODE_COMPARE
DSA_OPCODE_COMPVAL = dsa_opcode.DSA_OPCODE_COMPVAL
DSA_OPCODE_CR_DELTA = dsa_opcode.DSA_OPCODE_CR_DELTA
DSA_OPCODE_AP_DELTA = dsa_opcode.DSA_OPCODE_AP_DELTA
DSA_OPCODE_DUALCAST = dsa_opcode.DSA_OPCODE_DUALCAST
DSA_OPCODE_CRCGEN = dsa_opcode.DSA_OPCODE_CRCGEN
DSA_OPCODE_COPY_CRC = dsa_opcode.DSA_OPCODE_COPY_CRC
DSA_OPCODE_DIF_CHECK = dsa_opcode.DSA_OPCODE_DIF_CHECK
DSA_OPCODE_DIF_INS = dsa_opcode.DSA_OPCODE_DIF_INS
DSA_OPCODE_DIF_STRP = dsa_opcode.DSA_OPCODE_DIF_STRP
DSA_OPCODE_DIF_UPDT = dsa_opcode.DSA_OPCODE_DIF_UPDT
DSA_OPCODE_CFLUSH = dsa_opcode.DSA_OPCODE_CFLUSH
DSA_COMP_NONE = dsa_completion_status.DSA_COMP_NONE
DSA_COMP_SUCCESS = dsa_completion_status.DSA_COMP_SUCCESS
DSA_COMP_SUCCESS_PRED = dsa_completion_status.DSA_COMP_SUCCESS_PRED
DSA_COMP_PAGE_FAULT_NOBOF = dsa_completion_status.DSA_COMP_PAGE_FAULT_NOBOF
DSA_COMP_PAGE_FAULT_IR = dsa_completion_status.DSA_COMP_PAGE_FAULT_IR
DSA_COMP_BATCH_FAIL = dsa_completion_status.DSA_COMP_BATCH_FAIL
DSA_COMP_BATCH_PAGE_FAULT = dsa_completion_status.DSA_COMP_BATCH_PAGE_FAULT
DSA_COMP_DR_OFFSET_NOINC = dsa_completion_status.DSA_COMP_DR_OFFSET_NOINC
DSA_COMP_DR_OFFSET_ERANGE = dsa_completion_status.DSA_COMP_DR_OFFSET_ERANGE
DSA_COMP_DIF_ERR = dsa_completion_status.DSA_COMP_DIF_ERR
DSA_COMP_BAD_OPCODE = dsa_completion_status.DSA_COMP_BAD_OPCODE
DSA_COMP_INVALID_FLAGS = dsa_completion_status.DSA_COMP_INVALID_FLAGS
DSA_COMP_NOZERO_RESERVE = dsa_completion_status.DSA_COMP_NOZERO_RESERVE
DSA_COMP_XFER_ERANGE = dsa_completion_status.DSA_COMP_XFER_ERANGE
DSA_COMP_DESC_CNT_ERANGE = dsa_completion_status.DSA_COMP_DESC_CNT_ERANGE
DSA_COMP_DR_ERANGE = dsa_completion_status.DSA_COMP_DR_ERANGE
DSA_COMP_OVERLAP_BUFFERS = dsa_completion_status.DSA_COMP_OVERLAP_BUFFERS
DSA_COMP_DCAST_ERR = dsa_completion_status.DSA_COMP_DCAST_ERR
DSA_COMP_DESCLIST_ALIGN = dsa_completion_status.DSA_COMP_DESCLIST_ALIGN
DSA_COMP_INT_HANDLE_INVAL = dsa_completion_status.DSA_COMP_INT_HANDLE_INVAL
DSA_COMP_CRA_XLAT = dsa_completion_status.DSA_COMP_CRA_XLAT
DSA_COMP_CRA_ALIGN = dsa_completion_status.DSA_COMP_CRA_ALIGN
DSA_COMP_ADDR_ALIGN = dsa_completion_status.DSA_COMP_ADDR_ALIGN
DSA_COMP_PRIV_BAD = dsa_completion_status.DSA_COMP_PRIV_BAD
DSA_COMP_TRAFFIC_CLASS_CONF = dsa_completion_status.DSA_COMP_TRAFFIC_CLASS_CONF
DSA_COMP_PFAULT_RDBA = dsa_completion_status.DSA_COMP_PFAULT_RDBA
DSA_COMP_HW_ERR1 = dsa_completion_status.DSA_COMP_HW_ERR1
DSA_COMP_HW_ERR_DRB = dsa_completion_status.DSA_COMP_HW_ERR_DRB
DSA_COMP_TRANSLATION_FAIL = dsa_completion_status.DSA_COMP_TRANSLATION_FAIL


# --------------------------------------------------------------------------- struct fields
Layout = tuple[int, int, int, int]
"""(byte offset, byte size of the storage unit, bit lsb, bit width); width 0 = bytes."""


class _Member:
    """One C member of a packed struct: an unsigned little-endian integer (or a
    bit-field of its storage unit, or a byte array when ``array`` is set)."""

    __slots__ = ("array", "lsb", "mask", "name", "off", "size", "width")

    def __init__(
        self, off: int, size: int, lsb: int = 0, width: int = 0, array: bool = False
    ) -> None:
        self.off = off
        self.size = size
        self.lsb = lsb
        self.width = width or 8 * size
        self.mask = (1 << self.width) - 1
        self.array = array
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Member: ...
    @overload
    def __get__(self, obj: _Struct, owner: type) -> Any: ...
    def __get__(self, obj: _Struct | None, owner: type) -> Any:
        if obj is None:
            return self
        raw = obj._b[self.off : self.off + self.size]
        if self.array:
            return bytes(raw)
        return (int.from_bytes(raw, "little") >> self.lsb) & self.mask

    def __set__(self, obj: _Struct, value: int | bytes) -> None:
        if self.array:
            if not isinstance(value, bytes | bytearray) or len(value) != self.size:
                raise ValueError(f"{self.name}: expected {self.size} bytes")
            obj._b[self.off : self.off + self.size] = value
            return
        if not isinstance(value, int) or value < 0 or value > self.mask:
            raise ValueError(f"{self.name}={value!r} does not fit in {self.width} bits")
        unit = int.from_bytes(obj._b[self.off : self.off + self.size], "little")
        unit = (unit & ~(self.mask << self.lsb)) | (value << self.lsb)
        obj._b[self.off : self.off + self.size] = unit.to_bytes(self.size, "little")

    @property
    def layout(self) -> Layout:
        return (self.off, self.size, self.lsb, 0 if self.width == 8 * self.size else self.width)


class _Struct:
    """A packed C struct backed by its bytes."""

    SIZE: ClassVar[int] = 0
    MEMBERS: ClassVar[dict[str, _Member]] = {}
    __slots__ = ("_b",)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.MEMBERS = {
            k: v for klass in cls.__mro__ for k, v in vars(klass).items() if isinstance(v, _Member)
        }

    def __init__(self, **fields: int | bytes) -> None:
        self._b = bytearray(self.SIZE)
        for name, value in fields.items():
            if name not in self.MEMBERS:
                raise TypeError(f"{type(self).__name__} has no member {name!r}")
            setattr(self, name, value)

    def to_bytes(self) -> bytes:
        return bytes(self._b)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Any:
        if len(data) != cls.SIZE:
            raise ValueError(f"{cls.__name__} is {cls.SIZE} bytes, got {len(data)}")
        obj = cls()
        obj._b[:] = data
        return obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Struct) and type(other) is type(self) and self._b == other._b

    def __hash__(self) -> int:
        return hash(bytes(self._b))

    def __repr__(self) -> str:
        return f"{type(self).__name__}.from_bytes(bytes.fromhex({self._b.hex()!r}))"


def _u8(off: int) -> _Member:
    return _Member(off, 1)


def _u16(off: int) -> _Member:
    return _Member(off, 2)


def _u32(off: int) -> _Member:
    return _Member(off, 4)


def _u64(off: int) -> _Member:
    return _Member(off, 8)


def _arr(off: int, n: int) -> _Member:
    return _Member(off, n, array=True)


class DsaHwDesc(_Struct):
    """``struct dsa_hw_desc`` (64 bytes, packed)."""

    SIZE = 64
    __slots__ = ()
    pasid = _Member(0, 4, 0, 20)
    rsvd = _Member(0, 4, 20, 11)
    priv = _Member(0, 4, 31, 1)
    flags = _Member(4, 4, 0, 24)
    opcode = _Member(4, 4, 24, 8)
    completion_addr = _u64(8)
    src_addr = _u64(16)
    rdback_addr = _u64(16)
    pattern = _u64(16)
    desc_list_addr = _u64(16)
    dst_addr = _u64(24)
    rdback_addr2 = _u64(24)
    src2_addr = _u64(24)
    comp_pattern = _u64(24)
    xfer_size = _u32(32)
    desc_count = _u32(32)
    int_handle = _u16(36)
    rsvd1 = _u16(38)
    expected_res = _u8(40)
    delta_addr = _u64(40)
    max_delta_size = _u32(48)
    delt_rsvd = _u32(52)
    expected_res_mask = _u8(56)
    delta_rec_size = _u32(40)
    dest2 = _u64(40)
    crc_seed = _u32(40)
    crc_rsvd = _u32(44)
    seed_addr = _u64(48)
    src_dif_flags = _u8(40)
    dif_chk_res = _u8(41)
    dif_chk_flags = _u8(42)
    dif_chk_res2 = _arr(43, 5)
    chk_ref_tag_seed = _u32(48)
    chk_app_tag_mask = _u16(52)
    chk_app_tag_seed = _u16(54)
    dif_ins_res = _u8(40)
    dest_dif_flag = _u8(41)
    dif_ins_flags = _u8(42)
    dif_ins_res2 = _arr(43, 13)
    ins_ref_tag_seed = _u32(56)
    ins_app_tag_mask = _u16(60)
    ins_app_tag_seed = _u16(62)
    src_upd_flags = _u8(40)
    upd_dest_flags = _u8(41)
    dif_upd_flags = _u8(42)
    dif_upd_res = _arr(43, 5)
    src_ref_tag_seed = _u32(48)
    src_app_tag_mask = _u16(52)
    src_app_tag_seed = _u16(54)
    dest_ref_tag_seed = _u32(56)
    dest_app_tag_mask = _u16(60)
    dest_app_tag_seed = _u16(62)
    op_specific = _arr(40, 24)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> DsaHwDesc:
        obj: DsaHwDesc = super().from_bytes(data)
        return obj


class DsaCompletionRecord(_Struct):
    """``struct dsa_completion_record`` (32 bytes, packed; 32-byte aligned in memory)."""

    SIZE = 32
    __slots__ = ()
    status = _u8(0)
    result = _u8(1)
    dif_status = _u8(1)
    rsvd = _u16(2)
    bytes_completed = _u32(4)
    fault_addr = _u64(8)
    invalid_flags = _Member(16, 4, 0, 24)
    rsvd2 = _Member(16, 4, 24, 8)
    delta_rec_size = _u32(16)
    crc_val = _u64(16)
    dif_chk_ref_tag = _u32(16)
    dif_chk_app_tag_mask = _u16(20)
    dif_chk_app_tag = _u16(22)
    dif_ins_res = _u64(16)
    dif_ins_ref_tag = _u32(24)
    dif_ins_app_tag_mask = _u16(28)
    dif_ins_app_tag = _u16(30)
    dif_upd_src_ref_tag = _u32(16)
    dif_upd_src_app_tag_mask = _u16(20)
    dif_upd_src_app_tag = _u16(22)
    dif_upd_dest_ref_tag = _u32(24)
    dif_upd_dest_app_tag_mask = _u16(28)
    dif_upd_dest_app_tag = _u16(30)
    op_specific = _arr(16, 16)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> DsaCompletionRecord:
        obj: DsaCompletionRecord = super().from_bytes(data)
        return obj


DSA_HW_DESC_SIZE = DsaHwDesc.SIZE
DSA_COMPLETION_RECORD_SIZE = DsaCompletionRecord.SIZE
DSA_HW_DESC_LAYOUT: dict[str, Layout] = {n: m.layout for n, m in DsaHwDesc.MEMBERS.items()}
DSA_COMPLETION_RECORD_LAYOUT: dict[str, Layout] = {
    n: m.layout for n, m in DsaCompletionRecord.MEMBERS.items()
}
