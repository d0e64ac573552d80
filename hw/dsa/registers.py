"""BAR0 register definitions and layout (DSA spec ch. 9; facts B2-B10).

Fixed registers sit at the spec offsets; the GRPCFG, WQCFG, MSIX_PERM tables and the
MSI-X table/PBA are placed after them and advertised through TABLE_OFFSETS (in units
of 0x100), which is derived from the configuration, never hard-coded by software.

Layout chosen by this model (a driver must read TABLE_OFFSETS, as Linux does)::

    0x0000-0x01FF  fixed registers (VERSION ... SWERR)
    0x0400         GRPCFG table, 64 B per group
    next 0x100     WQCFG table, 32 B per WQ (64 B with per-WQ op config)
    next 0x100     MSIX_PERM table, 8 B per MSI-X vector
    next 0x100     MSI-X table (16 B per vector), then the PBA at the next 0x100
"""

from __future__ import annotations

from attrs import frozen

from hw.dsa.config import DsaConfig
from hw.regs import Access, Field, Register

RO, RW, RW1C = Access.RO, Access.RW, Access.RW1C

VERSION_OFFSET = 0x00
GENCAP_OFFSET = 0x10
WQCAP_OFFSET = 0x20
GRPCAP_OFFSET = 0x30
ENGCAP_OFFSET = 0x38
OPCAP_OFFSET = 0x40
TABLE_OFFSETS_OFFSET = 0x60
GENCFG_OFFSET = 0x80
GENCTRL_OFFSET = 0x88
GENSTS_OFFSET = 0x90
INTCAUSE_OFFSET = 0x98
CMD_OFFSET = 0xA0
CMDSTS_OFFSET = 0xA8
CMDCAP_OFFSET = 0xB0
SWERR_OFFSET = 0xC0
TABLE_OFFSET_MULT = 0x100
GRPCFG_BASE = 0x400
GRPCFG_SIZE = 64
MSIX_PERM_SIZE = 8

# GENSTS device states / reset types
GENSTS_DISABLED = 0
GENSTS_ENABLED = 1
GENSTS_DRAIN = 2
GENSTS_HALTED = 3
RESET_SOFTWARE = 0
RESET_FLR = 1

# INTCAUSE bits
INTCAUSE_SOFTERR = 1 << 0
INTCAUSE_CMD = 1 << 1
INTCAUSE_OCCUPY = 1 << 2
INTCAUSE_PERFMON = 1 << 3
INTCAUSE_HALT = 1 << 4
INTCAUSE_EVL = 1 << 5
INTCAUSE_INT_HANDLE_REVOKED = 1 << 31

WQ_STATE_DISABLED = 0
WQ_STATE_ENABLED = 1


class VERSION(Register):
    WIDTH = 32
    version = Field(31, 0, RO)


class CAP64(Register):
    """A read-only 64-bit capability word (GENCAP, WQCAP, GRPCAP, ENGCAP, OPCAP...)."""

    WIDTH = 64
    value = Field(63, 0, RO)


class GENCFG(Register):
    """Writable only while the device is disabled (enforced by the device hook)."""

    WIDTH = 32
    rdbuf_limit = Field(7, 0, RW)
    user_int_en = Field(12, 12, RW)


class GENCTRL(Register):
    WIDTH = 32
    softerr_int_en = Field(0, 0, RW)
    halt_int_en = Field(1, 1, RW)


class GENSTS(Register):
    WIDTH = 32
    state = Field(1, 0, RO)
    reset_type = Field(3, 2, RO)


class INTCAUSE(Register):
    WIDTH = 32
    softerr = Field(0, 0, RW1C)
    cmd = Field(1, 1, RW1C)
    occupy = Field(2, 2, RW1C)
    perfmon = Field(3, 3, RW1C)
    halt = Field(4, 4, RW1C)
    evl = Field(5, 5, RW1C)
    int_handle_revoked = Field(31, 31, RW1C)


class CMD(Register):
    WIDTH = 32
    operand = Field(19, 0, RW)
    cmd = Field(24, 20, RW)
    int_req = Field(31, 31, RW)


class CMDSTS(Register):
    WIDTH = 32
    err = Field(7, 0, RO)
    result = Field(23, 8, RO)
    active = Field(31, 31, RO)


class CMDCAP(Register):
    WIDTH = 32
    cmds = Field(31, 0, RO)


class SWERR0(Register):
    WIDTH = 64
    valid = Field(0, 0, RW1C)
    overflow = Field(1, 1, RW1C)
    desc_valid = Field(2, 2, RO)
    wq_idx_valid = Field(3, 3, RO)
    batch = Field(4, 4, RO)
    fault_rw = Field(5, 5, RO)
    priv = Field(6, 6, RO)
    error = Field(15, 8, RO)
    wq_idx = Field(23, 16, RO)
    operation = Field(39, 32, RO)
    pasid = Field(59, 40, RO)


class SWERR1(Register):
    WIDTH = 64
    batch_idx = Field(15, 0, RO)
    invalid_flags = Field(63, 32, RO)


class SWERR_RO64(Register):
    WIDTH = 64
    UNDECLARED = RO


class RSVD64(Register):
    WIDTH = 64


class WQCFG_SIZE(Register):
    WIDTH = 32
    wq_size = Field(15, 0, RW)


class WQCFG_THRESH(Register):
    WIDTH = 32
    wq_thresh = Field(15, 0, RW)


class WQCFG_MODE(Register):
    """Dword 2. ATS-disable is reserved (WQCAP does not advertise it); PRS-disable is
    latched only when WQCAP bit 55 offers it."""

    WIDTH = 32
    mode = Field(0, 0, RW)
    bof = Field(1, 1, RW)
    prs_disable = Field(3, 3, RW)
    priority = Field(7, 4, RW)
    pasid = Field(27, 8, RW)
    pasid_en = Field(28, 28, RW)
    priv = Field(29, 29, RW)


class WQCFG_SHIFTS(Register):
    WIDTH = 32
    max_xfer_shift = Field(4, 0, RW)
    max_batch_shift = Field(8, 5, RW)


class WQCFG_RSVD(Register):
    """Dwords 4, 5, 7: occupancy interrupts are not advertised (WQCAP bit 53 = 0)."""

    WIDTH = 32


class WQCFG_STATUS(Register):
    WIDTH = 32
    occupancy = Field(15, 0, RO)
    mode_support = Field(29, 29, RO)
    wq_state = Field(31, 30, RO)


class WQCFG_OPCFG(Register):
    WIDTH = 32
    ops = Field(31, 0, RW)


class GRP64(Register):
    """GRPWQCFG[0..3] and GRPENGCFG bitmaps (checked at Enable Device)."""

    WIDTH = 64
    bits = Field(63, 0, RW)


class GRPFLAGS(Register):
    WIDTH = 64
    tc_a = Field(2, 0, RW)
    tc_b = Field(5, 3, RW)
    use_rdbuf_limit = Field(7, 7, RW)
    rdbufs_reserved = Field(15, 8, RW)
    rdbufs_allowed = Field(27, 20, RW)
    desc_progress_limit = Field(33, 32, RW)
    batch_progress_limit = Field(37, 36, RW)


class MSIX_PERM(Register):
    WIDTH = 64
    ignore = Field(2, 2, RW)
    pasid_en = Field(3, 3, RW)
    pasid = Field(31, 12, RW)


WQCFG_DWORDS: tuple[type[Register], ...] = (
    WQCFG_SIZE,
    WQCFG_THRESH,
    WQCFG_MODE,
    WQCFG_SHIFTS,
    WQCFG_RSVD,
    WQCFG_RSVD,
    WQCFG_STATUS,
    WQCFG_RSVD,
)


def _align(value: int, to: int) -> int:
    return (value + to - 1) & ~(to - 1)


@frozen
class Bar0Layout:
    """Where the tables live in BAR0 for a given configuration."""

    grpcfg: int
    wqcfg: int
    msix_perm: int
    msix_table: int
    msix_pba: int
    size: int
    wqcfg_size: int

    @classmethod
    def for_config(cls, cfg: DsaConfig) -> Bar0Layout:
        grpcfg = GRPCFG_BASE
        wqcfg = _align(grpcfg + cfg.num_groups * GRPCFG_SIZE, TABLE_OFFSET_MULT)
        perm = _align(wqcfg + cfg.num_wqs * cfg.wqcfg_size, TABLE_OFFSET_MULT)
        table = _align(perm + cfg.msix_vectors * MSIX_PERM_SIZE, TABLE_OFFSET_MULT)
        pba = _align(table + 16 * cfg.msix_vectors, TABLE_OFFSET_MULT)
        end = pba + 8 * ((cfg.msix_vectors + 63) // 64)
        size = 0x10000
        while size < end:
            size <<= 1
        return cls(grpcfg, wqcfg, perm, table, pba, size, cfg.wqcfg_size)

    @property
    def table_offsets(self) -> int:
        """TABLE_OFFSETS as one 128-bit value (no IMS, no perfmon)."""
        m = TABLE_OFFSET_MULT
        return self.grpcfg // m | (self.wqcfg // m) << 16 | (self.msix_perm // m) << 32

    def wqcfg_offset(self, wq: int, dword: int) -> int:
        return self.wqcfg + wq * self.wqcfg_size + 4 * dword

    def grpcfg_offset(self, group: int) -> int:
        return self.grpcfg + group * GRPCFG_SIZE
