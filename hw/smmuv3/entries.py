"""In-memory SMMUv3 structures, one 64-bit word per class (IHI 0070 chapter 5, 4, 7;
facts A5-A10).

Each class is a :class:`hw.regs.Register` with ``WIDTH = 64``, so fields have names,
``encode``/``decode`` work, and ``RSVDZ_MASK`` holds the bits no field covers. Names
and positions are Linux ``arm-smmu-v3.h``'s (``STRTAB_STE_*``, ``CTXDESC_CD_*``,
``CMDQ_*``, ``EVTQ_*``) and ``io-pgtable-arm.c``'s (``ARM_LPAE_PTE_*``).
Words are little-endian in memory, dw0 first.
"""

from __future__ import annotations

import enum

from hw.regs import Field, Register

STE_SIZE = 64
CD_SIZE = 64
L1_DESC_SIZE = 8
CMD_SIZE = 16
EVT_SIZE = 32


class _W(Register):
    WIDTH = 64


# -- stream table (IHI 0070 §5.1, §5.2; facts A5, A6) ----------------------------------
class L1Std(_W):
    SPAN = Field(4, 0)
    L2PTR = Field(51, 6)


class SteDw0(_W):
    V = Field(0, 0)
    CONFIG = Field(3, 1)
    S1FMT = Field(5, 4)
    S1CTXPTR = Field(51, 6)
    S1CDMAX = Field(63, 59)


class SteDw1(_W):
    S1DSS = Field(1, 0)
    S1CIR = Field(3, 2)
    S1COR = Field(5, 4)
    S1CSH = Field(7, 6)
    S1STALLD = Field(27, 27)
    EATS = Field(29, 28)
    STRW = Field(31, 30)
    SHCFG = Field(45, 44)


class SteDw2(_W):
    """STE word 2: the stage-2 controls (VTCR fields at 50:32 as ``STRTAB_STE_2_VTCR``)."""

    S2VMID = Field(15, 0)
    S2T0SZ = Field(37, 32)
    S2SL0 = Field(39, 38)
    S2IR0 = Field(41, 40)
    S2OR0 = Field(43, 42)
    S2SH0 = Field(45, 44)
    S2TG = Field(47, 46)
    S2PS = Field(50, 48)
    S2AA64 = Field(51, 51)
    S2ENDI = Field(52, 52)
    S2AFFD = Field(53, 53)
    S2PTW = Field(54, 54)
    S2HD = Field(55, 55)
    S2HA = Field(56, 56)
    S2S = Field(57, 57)
    S2R = Field(58, 58)


class SteDw3(_W):
    S2TTB = Field(51, 4)


S2TG_4K = 0


STE_CFG_ABORT = 0b000
STE_CFG_BYPASS = 0b100
STE_CFG_S1 = 0b101
STE_CFG_S2 = 0b110
STE_CFG_NESTED = 0b111

S1FMT_LINEAR = 0
S1FMT_64K_L2 = 2
S1FMT_4K_L2 = 1

S1DSS_TERMINATE = 0
S1DSS_BYPASS = 1
S1DSS_SSID0 = 2

STRW_NSEL1 = 0
STRW_EL2 = 2


# -- context descriptors (IHI 0070 §5.3, §5.4; facts A7) --------------------------------
class L1Cd(_W):
    V = Field(0, 0)
    L2PTR = Field(51, 12)


class CdDw0(_W):
    T0SZ = Field(5, 0)
    TG0 = Field(7, 6)
    IR0 = Field(9, 8)
    OR0 = Field(11, 10)
    SH0 = Field(13, 12)
    EPD0 = Field(14, 14)
    ENDI = Field(15, 15)
    T1SZ = Field(21, 16)
    TG1 = Field(23, 22)
    IR1 = Field(25, 24)
    OR1 = Field(27, 26)
    SH1 = Field(29, 28)
    EPD1 = Field(30, 30)
    V = Field(31, 31)
    IPS = Field(34, 32)
    AFFD = Field(35, 35)
    WXN = Field(36, 36)
    UWXN = Field(37, 37)
    TBI0 = Field(38, 38)
    TBI1 = Field(39, 39)
    PAN = Field(40, 40)
    AA64 = Field(41, 41)
    HD = Field(42, 42)
    HA = Field(43, 43)
    S = Field(44, 44)
    R = Field(45, 45)
    A = Field(46, 46)
    ASET = Field(47, 47)
    ASID = Field(63, 48)


class CdDw1(_W):
    NSCFG0 = Field(0, 0)
    HAD0 = Field(1, 1)
    E0PD0 = Field(2, 2)
    TTB0 = Field(51, 4)


class CdDw2(_W):
    NSCFG1 = Field(0, 0)
    HAD1 = Field(1, 1)
    E0PD1 = Field(2, 2)
    TTB1 = Field(51, 4)


TG0_4K = 0
TG1_4K = 2
"""TG1 uses the TCR_EL1.TG1 encoding: 0b10 is 4 KiB (IHI 0070 §5.4)."""


# -- LPAE stage-1 descriptors (io-pgtable-arm.c; facts A10) -----------------------------
class LpaeTable(_W):
    VALID = Field(0, 0)
    TABLE = Field(1, 1)
    NLTA = Field(47, 12)
    PXNTABLE = Field(59, 59)
    XNTABLE = Field(60, 60)
    APTABLE = Field(62, 61)
    NSTABLE = Field(63, 63)


class LpaeLeaf(_W):
    VALID = Field(0, 0)
    TYPE = Field(1, 1)
    ATTRINDX = Field(4, 2)
    NS = Field(5, 5)
    AP1 = Field(6, 6, doc="unprivileged access allowed")
    AP2 = Field(7, 7, doc="read-only")
    SH = Field(9, 8)
    AF = Field(10, 10)
    NG = Field(11, 11)
    OA = Field(47, 12)
    DBM = Field(51, 51)
    CONT = Field(52, 52)
    PXN = Field(53, 53)
    XN = Field(54, 54)
    SW = Field(58, 55)


class LpaeS2Leaf(_W):
    """A stage-2 leaf (VMSAv8-64 stage-2 descriptor): S2AP[0] read, S2AP[1] write."""

    VALID = Field(0, 0)
    TYPE = Field(1, 1)
    MEMATTR = Field(5, 2)
    S2AP_R = Field(6, 6)
    S2AP_W = Field(7, 7)
    SH = Field(9, 8)
    AF = Field(10, 10)
    OA = Field(47, 12)
    DBM = Field(51, 51)
    CONT = Field(52, 52)
    XN = Field(54, 53)


# -- commands (IHI 0070 chapter 4; facts A8) --------------------------------------------
class Op(enum.IntEnum):
    PREFETCH_CONFIG = 0x01
    PREFETCH_ADDR = 0x02
    CFGI_STE = 0x03
    CFGI_STE_RANGE = 0x04
    CFGI_CD = 0x05
    CFGI_CD_ALL = 0x06
    TLBI_NH_ALL = 0x10
    TLBI_NH_ASID = 0x11
    TLBI_NH_VA = 0x12
    TLBI_NH_VAA = 0x13
    TLBI_EL2_ALL = 0x20
    TLBI_EL2_ASID = 0x21
    TLBI_EL2_VA = 0x22
    TLBI_S12_VMALL = 0x28
    TLBI_S2_IPA = 0x2A
    TLBI_NSNH_ALL = 0x30
    ATC_INV = 0x40
    PRI_RESP = 0x41
    RESUME = 0x44
    STALL_TERM = 0x45
    CMD_SYNC = 0x46


class CmdOp(_W):
    OP = Field(7, 0)


class CmdPrefetchCfg0(_W):
    OP = Field(7, 0)
    SSV = Field(11, 11)
    SSID = Field(31, 12)
    SID = Field(63, 32)


class CmdPrefetchAddr1(_W):
    SIZE = Field(4, 0)
    ADDR = Field(63, 12)


class CmdCfgiSte0(_W):
    OP = Field(7, 0)
    SID = Field(63, 32)


class CmdCfgiCd0(_W):
    OP = Field(7, 0)
    SSID = Field(31, 12)
    SID = Field(63, 32)


class CmdCfgiLeaf1(_W):
    LEAF = Field(0, 0)


class CmdCfgiRange1(_W):
    RANGE = Field(4, 0)


class CmdTlbi0(_W):
    """TLBI_NH_VA dw0 (NUM/SCALE only meaningful with IDR3.RIL)."""

    OP = Field(7, 0)
    NUM = Field(16, 12)
    SCALE = Field(24, 20)
    VMID = Field(47, 32)
    ASID = Field(63, 48)


class CmdTlbiVaa0(_W):
    """TLBI_NH_VAA dw0: every ASID of the VMID."""

    OP = Field(7, 0)
    NUM = Field(16, 12)
    SCALE = Field(24, 20)
    VMID = Field(47, 32)


class CmdTlbiAsid0(_W):
    OP = Field(7, 0)
    VMID = Field(47, 32)
    ASID = Field(63, 48)


class CmdTlbiVmid0(_W):
    OP = Field(7, 0)
    VMID = Field(47, 32)


class CmdTlbiVa1(_W):
    LEAF = Field(0, 0)
    TTL = Field(9, 8)
    TG = Field(11, 10)
    ADDR = Field(63, 12)


class CmdSync0(_W):
    OP = Field(7, 0)
    CS = Field(13, 12)
    MSH = Field(23, 22)
    MSIATTR = Field(27, 24)
    MSIDATA = Field(63, 32)


class CmdSync1(_W):
    MSIADDR = Field(51, 2)


class CmdEmpty(_W):
    """A command word with no fields (every bit reserved)."""


class CmdPriResp0(_W):
    """CMD_PRI_RESP dw0: SSV, SSID, SID (``CMDQ_PRI_0_*``)."""

    OP = Field(7, 0)
    SSV = Field(11, 11)
    SSID = Field(31, 12)
    SID = Field(63, 32)


class CmdPriResp1(_W):
    """CMD_PRI_RESP dw1: PRG index and response (``CMDQ_PRI_1_*``)."""

    GRPID = Field(8, 0)
    RESP = Field(13, 12)


PRI_RESP_DENY = 0
PRI_RESP_FAIL = 1
PRI_RESP_SUCC = 2

PRIQ_ENT_SIZE = 16


class PriqEnt0(_W):
    """PRI queue entry dw0 (``PRIQ_0_*``)."""

    SID = Field(31, 0)
    SSID = Field(51, 32)
    PERM_PRIV = Field(58, 58)
    PERM_EXEC = Field(59, 59)
    PERM_READ = Field(60, 60)
    PERM_WRITE = Field(61, 61)
    PRG_LAST = Field(62, 62)
    SSID_V = Field(63, 63)


class PriqEnt1(_W):
    """PRI queue entry dw1: PRG index 8:0, page address 63:12 (``PRIQ_1_*``)."""

    PRG_IDX = Field(8, 0)
    ADDR = Field(63, 12)


SYNC_CS_NONE = 0
SYNC_CS_IRQ = 1
SYNC_CS_SEV = 2


# -- events (IHI 0070 chapter 7; facts A9) ----------------------------------------------
class Evt(enum.IntEnum):
    ABORT = 0x00
    """Not an event: the transaction is aborted without a record (STE.Config abort,
    GBPA.ABORT); 0 is not an architected event id."""
    F_UUT = 0x01
    C_BAD_STREAMID = 0x02
    F_STE_FETCH = 0x03
    C_BAD_STE = 0x04
    F_BAD_ATS_TREQ = 0x05
    F_STREAM_DISABLED = 0x06
    F_TRANSL_FORBIDDEN = 0x07
    C_BAD_SUBSTREAMID = 0x08
    F_CD_FETCH = 0x09
    C_BAD_CD = 0x0A
    F_WALK_EABT = 0x0B
    F_TRANSLATION = 0x10
    F_ADDR_SIZE = 0x11
    F_ACCESS = 0x12
    F_PERMISSION = 0x13
    F_TLB_CONFLICT = 0x20
    F_CFG_CONFLICT = 0x21
    E_PAGE_REQUEST = 0x24
    F_VMS_FETCH = 0x25


TRANSLATION_FAULTS = frozenset(
    {Evt.F_TRANSLATION, Evt.F_ADDR_SIZE, Evt.F_ACCESS, Evt.F_PERMISSION, Evt.F_WALK_EABT}
)
"""Stage-1 translation-related faults: recorded only when CD.R=1 (IHI 0070 §5.4)."""


class EvtDw0(_W):
    ID = Field(7, 0)
    SSV = Field(11, 11)
    SSID = Field(31, 12)
    SID = Field(63, 32)


class EvtDw1(_W):
    STAG = Field(15, 0)
    STALL = Field(31, 31)
    PNU = Field(33, 33)
    IND = Field(34, 34)
    RNW = Field(35, 35)
    S2 = Field(39, 39)
    CLASS = Field(41, 40)
    TT_READ = Field(44, 44)


class EvtDw3(_W):
    FETCH_ADDR = Field(51, 3)


class EvtDw3S2(_W):
    """Word 3 of a stage-2 translation fault record: the IPA (``EVTQ_3_IPA``)."""

    IPA = Field(51, 12)


EVT_CLASS_CD = 0
EVT_CLASS_TT = 1
EVT_CLASS_IN = 2
