"""In-memory VT-d structures, one 64-bit word per class (VT-d spec 9.x; facts A5, A9-A11).

Each class is a :class:`hw.regs.Register` with ``WIDTH = 64`` so it has named fields,
``encode``/``decode`` and a ``RSVDZ_MASK`` of the bits no field covers (the spec's
reserved bits; a 1 there is a reserved-field fault). Address-field bits at or above
the host address width are reserved too; :func:`addr_rsvd` gives that mask.
"""

from __future__ import annotations

from hw.regs import Field, Register

ROOT_ENTRY_SIZE = 16
LEGACY_CTX_SIZE = 16
SM_CTX_SIZE = 32
PASID_DIR_ENTRY_SIZE = 8
PASID_ENTRY_SIZE = 64

# PASID table entry PGTT values (facts A10.4).
PGTT_FL = 1
PGTT_SL = 2
PGTT_NESTED = 3
PGTT_PT = 4

# Legacy context-entry TT values (facts A10.2).
TT_SL = 0
TT_SL_ATS = 1
TT_PT = 2


def addr_rsvd(haw: int) -> int:
    """Bits 63:haw of a 52-bit address field (bits 51:12) that must be zero."""
    return ((1 << 52) - 1) & ~((1 << haw) - 1)


class _W(Register):
    WIDTH = 64


# -- root table (A5) -------------------------------------------------------------
class RootLo(_W):
    """Legacy root entry qw0 / scalable root entry lower half (LP, LCTP)."""

    P = Field(0, 0)
    CTP = Field(63, 12)


class RootHi(_W):
    """Scalable root entry upper half (UP, UCTP); reserved (all zero) in legacy mode."""

    P = Field(0, 0)
    CTP = Field(63, 12)


# -- context entries (A10.1, A10.2) ---------------------------------------------
class LegacyCtxLo(_W):
    P = Field(0, 0)
    FPD = Field(1, 1)
    TT = Field(3, 2)
    SLPTPTR = Field(63, 12)


class LegacyCtxHi(_W):
    AW = Field(2, 0)
    AVAIL = Field(6, 3)
    DID = Field(23, 8)


class SmCtxLo(_W):
    P = Field(0, 0)
    FPD = Field(1, 1)
    DTE = Field(2, 2)
    PASIDE = Field(3, 3)
    PRE = Field(4, 4)
    PDTS = Field(11, 9)
    PASIDDIRPTR = Field(63, 12)


class SmCtxHi(_W):
    RID_PASID = Field(19, 0)
    RID_PRIV = Field(20, 20)


# -- PASID directory and table (A10.3, A10.4) ------------------------------------
class PasidDirEntry(_W):
    P = Field(0, 0)
    FPD = Field(1, 1)
    SMPTBLPTR = Field(63, 12)


class PasidQw0(_W):
    P = Field(0, 0)
    FPD = Field(1, 1)
    AW = Field(4, 2)
    SSEE = Field(5, 5)
    PGTT = Field(8, 6)
    SSADE = Field(9, 9)
    SSPTPTR = Field(63, 12)


class PasidQw1(_W):
    DID = Field(15, 0)
    PWSNP = Field(23, 23)
    PGSNP = Field(24, 24)
    CD = Field(25, 25)
    EMTE = Field(26, 26)
    EMT = Field(29, 27)
    PWT = Field(30, 30)
    PCD = Field(31, 31)
    PAT = Field(63, 32)


class PasidQw2(_W):
    SRE = Field(0, 0)
    ERE = Field(1, 1)
    FSPM = Field(3, 2)
    WPE = Field(4, 4)
    NXE = Field(5, 5)
    SMEP = Field(6, 6)
    EAFE = Field(7, 7)
    FSPTPTR = Field(63, 12)


# -- paging entries (A11) ---------------------------------------------------------
class FlPte(_W):
    """First-stage (x86-64) paging entry; bits 9, 11 and 62:52 are ignored (declared)."""

    P = Field(0, 0)
    RW = Field(1, 1)
    US = Field(2, 2)
    PWT = Field(3, 3)
    PCD = Field(4, 4)
    A = Field(5, 5)
    D = Field(6, 6)
    PS = Field(7, 7)
    G = Field(8, 8)
    IGN9 = Field(9, 9)
    EA = Field(10, 10)
    IGN11 = Field(11, 11)
    ADDR = Field(51, 12)
    IGN_HI = Field(62, 52)
    XD = Field(63, 63)


class SlPte(_W):
    """Second-stage paging entry; bit 10 and 61:52, 63 are ignored (declared)."""

    R = Field(0, 0)
    W = Field(1, 1)
    X = Field(2, 2)
    EMT = Field(5, 3)
    IPAT = Field(6, 6)
    PS = Field(7, 7)
    A = Field(8, 8)
    D = Field(9, 9)
    IGN10 = Field(10, 10)
    SNP = Field(11, 11)
    ADDR = Field(51, 12)
    IGN_HI = Field(61, 52)
    TM = Field(62, 62)
    IGN63 = Field(63, 63)


# -- invalidation descriptors (A9) ------------------------------------------------
class _Desc(_W):
    TYPE = Field(3, 0)
    TYPE_HI = Field(11, 9)


class QiCcQw0(_Desc):
    """Type 1 context-cache invalidation."""

    G = Field(5, 4)
    DID = Field(31, 16)
    SID = Field(47, 32)
    FM = Field(49, 48)


class QiIotlbQw0(_Desc):
    """Type 2 IOTLB invalidation."""

    G = Field(5, 4)
    DW = Field(6, 6)
    DR = Field(7, 7)
    DID = Field(31, 16)


class QiAddrQw1(_W):
    """qw1 of IOTLB (type 2) and P_IOTLB (type 6) descriptors."""

    AM = Field(5, 0)
    IH = Field(6, 6)
    ADDR = Field(63, 12)


class QiDevTlbQw0(_Desc):
    """Type 3 device-TLB invalidation."""

    PFSID_LO = Field(15, 12)
    MIP = Field(20, 16)
    SID = Field(47, 32)
    PFSID_HI = Field(63, 52)


class QiDevTlbQw1(_W):
    S = Field(0, 0)
    ADDR = Field(63, 12)


class QiIecQw0(_Desc):
    """Type 4 interrupt-entry-cache invalidation."""

    G = Field(4, 4)
    IM = Field(31, 27)
    IIDX = Field(47, 32)


class QiWaitQw0(_Desc):
    """Type 5 invalidation wait."""

    IF = Field(4, 4)
    SW = Field(5, 5)
    FN = Field(6, 6)
    PD = Field(7, 7)
    STDATA = Field(63, 32)


class QiWaitQw1(_W):
    STADDR = Field(63, 2)


class QiPiotlbQw0(_Desc):
    """Type 6 PASID-based IOTLB invalidation."""

    G = Field(5, 4)
    DID = Field(31, 16)
    PASID = Field(51, 32)


class QiPcQw0(_Desc):
    """Type 7 PASID-cache invalidation."""

    G = Field(5, 4)
    DID = Field(31, 16)
    PASID = Field(51, 32)


class QiPdevTlbQw0(_Desc):
    """Type 8 PASID-based device-TLB invalidation."""

    MIP = Field(8, 4)
    PFSID_LO = Field(15, 12)
    SID = Field(31, 16)
    PASID = Field(51, 32)
    PFSID_HI = Field(63, 52)


class QiPdevTlbQw1(_W):
    G = Field(0, 0)
    S = Field(11, 11)
    ADDR = Field(63, 12)


class QiPgrpQw0(_Desc):
    """Type 9 page group response."""

    PP = Field(4, 4)
    PDP = Field(5, 5)
    RC = Field(15, 12)
    RID = Field(31, 16)
    PASID = Field(51, 32)


class QiPgrpQw1(_W):
    LPIG = Field(2, 2)
    PRGI = Field(11, 3)


class ReservedQw(_W):
    """A descriptor word with no fields (qw1 of types 1, 4, 7; qw2/qw3 of 256-bit slots)."""


QI_CC = 1
QI_IOTLB = 2
QI_DEVTLB = 3
QI_IEC = 4
QI_WAIT = 5
QI_PIOTLB = 6
QI_PC = 7
QI_PDEVTLB = 8
QI_PGRP = 9

QI_LAYOUTS: dict[int, tuple[type[Register], type[Register]]] = {
    QI_CC: (QiCcQw0, ReservedQw),
    QI_IOTLB: (QiIotlbQw0, QiAddrQw1),
    QI_DEVTLB: (QiDevTlbQw0, QiDevTlbQw1),
    QI_IEC: (QiIecQw0, ReservedQw),
    QI_WAIT: (QiWaitQw0, QiWaitQw1),
    QI_PIOTLB: (QiPiotlbQw0, QiAddrQw1),
    QI_PC: (QiPcQw0, ReservedQw),
    QI_PDEVTLB: (QiPdevTlbQw0, QiPdevTlbQw1),
    QI_PGRP: (QiPgrpQw0, QiPgrpQw1),
}
