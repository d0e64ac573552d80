"""VT-d remapping-unit registers (VT-d spec chapter 10.4; facts A1-A8).

Offsets are the spec's; the IOTLB register pair and the fault recording registers
sit where CAP.FRO / ECAP.IRO say, which :mod:`hw.vtd.config` derives. PMEN/PLM*/PHM*
read as zero unless CAP.PLMR/PHMR (then :mod:`hw.vtd.pmr` defines them); AFLOG reads
zero (CAP.AFL is 0).
"""

from __future__ import annotations

from hw.regs import Access, Field, Register

RO, RW, RW1C, WO, RsvdP = Access.RO, Access.RW, Access.RW1C, Access.WO, Access.RsvdP

VER_OFF = 0x000
CAP_OFF = 0x008
ECAP_OFF = 0x010
GCMD_OFF = 0x018
GSTS_OFF = 0x01C
RTADDR_OFF = 0x020
CCMD_OFF = 0x028
FSTS_OFF = 0x034
FECTL_OFF = 0x038
FEDATA_OFF = 0x03C
FEADDR_OFF = 0x040
FEUADDR_OFF = 0x044
AFLOG_OFF = 0x058
PMEN_OFF = 0x064
PLMBASE_OFF = 0x068
PLMLIMIT_OFF = 0x06C
PHMBASE_OFF = 0x070
PHMLIMIT_OFF = 0x078
IQH_OFF = 0x080
IQT_OFF = 0x088
IQA_OFF = 0x090
ICS_OFF = 0x09C
IECTL_OFF = 0x0A0
IEDATA_OFF = 0x0A4
IEADDR_OFF = 0x0A8
IEUADDR_OFF = 0x0AC
IQERCD_OFF = 0x0B0
IRTA_OFF = 0x0B8
PQH_OFF = 0x0C0
PQT_OFF = 0x0C8
PQA_OFF = 0x0D0
PRS_OFF = 0x0DC
PECTL_OFF = 0x0E0
PEDATA_OFF = 0x0E4
PEADDR_OFF = 0x0E8
PEUADDR_OFF = 0x0EC


class VER(Register):
    MIN = Field(3, 0, RO)
    MAX = Field(7, 4, RO)
    UNDECLARED = RO


class CAP(Register):
    WIDTH = 64
    UNDECLARED = RO
    ND = Field(2, 0, RO)
    AFL = Field(3, 3, RO)
    RWBF = Field(4, 4, RO)
    PLMR = Field(5, 5, RO)
    PHMR = Field(6, 6, RO)
    CM = Field(7, 7, RO)
    SAGAW = Field(12, 8, RO)
    MGAW = Field(21, 16, RO)
    ZLR = Field(22, 22, RO)
    FRO = Field(33, 24, RO)
    SLLPS = Field(37, 34, RO)
    PSI = Field(39, 39, RO)
    NFR = Field(47, 40, RO)
    MAMV = Field(53, 48, RO)
    DWD = Field(54, 54, RO)
    DRD = Field(55, 55, RO)
    FL1GP = Field(56, 56, RO)
    PI = Field(59, 59, RO)
    FL5LP = Field(60, 60, RO)
    ECMDS = Field(61, 61, RO)
    ESIRTPS = Field(62, 62, RO)
    ESRTPS = Field(63, 63, RO)


class ECAP(Register):
    WIDTH = 64
    UNDECLARED = RO
    C = Field(0, 0, RO)
    QI = Field(1, 1, RO)
    DT = Field(2, 2, RO)
    IR = Field(3, 3, RO)
    EIM = Field(4, 4, RO)
    PT = Field(6, 6, RO)
    SC = Field(7, 7, RO)
    IRO = Field(17, 8, RO)
    MHMV = Field(23, 20, RO)
    MTS = Field(25, 25, RO)
    NEST = Field(26, 26, RO)
    PRS = Field(29, 29, RO)
    ERS = Field(30, 30, RO)
    SRS = Field(31, 31, RO)
    NWFS = Field(33, 33, RO)
    EAFS = Field(34, 34, RO)
    PSS = Field(39, 35, RO)
    PASID = Field(40, 40, RO)
    DIT = Field(41, 41, RO)
    PDS = Field(42, 42, RO)
    SMTS = Field(43, 43, RO)
    VCS = Field(44, 44, RO)
    SLADS = Field(45, 45, RO)
    SLTS = Field(46, 46, RO)
    FLTS = Field(47, 47, RO)
    SMPWC = Field(48, 48, RO)
    RPS = Field(49, 49, RO)
    PMS = Field(51, 51, RO)
    ADMS = Field(52, 52, RO)
    RPRIVS = Field(53, 53, RO)


class GCMD(Register):
    """Write-only command bits (facts A4); reads return 0."""

    CFI = Field(23, 23, WO)
    SIRTP = Field(24, 24, WO)
    IRE = Field(25, 25, WO)
    QIE = Field(26, 26, WO)
    WBF = Field(27, 27, WO)
    EAFL = Field(28, 28, WO)
    SFL = Field(29, 29, WO)
    SRTP = Field(30, 30, WO)
    TE = Field(31, 31, WO)


class GSTS(Register):
    UNDECLARED = RO
    CFIS = Field(23, 23, RO)
    IRTPS = Field(24, 24, RO)
    IRES = Field(25, 25, RO)
    QIES = Field(26, 26, RO)
    WBFS = Field(27, 27, RO)
    AFLS = Field(28, 28, RO)
    FLS = Field(29, 29, RO)
    RTPS = Field(30, 30, RO)
    TES = Field(31, 31, RO)


class RTADDR(Register):
    WIDTH = 64
    TTM = Field(11, 10, RW)
    RTA = Field(63, 12, RW)


class CCMD(Register):
    WIDTH = 64
    DID = Field(15, 0, RW)
    SID = Field(31, 16, RW)
    FM = Field(33, 32, RW)
    CAIG = Field(60, 59, RO)
    CIRG = Field(62, 61, RW)
    ICC = Field(63, 63, RW)


class FSTS(Register):
    PFO = Field(0, 0, RW1C)
    PPF = Field(1, 1, RO)
    AFO = Field(2, 2, RW1C)
    APF = Field(3, 3, RW1C)
    IQE = Field(4, 4, RW1C)
    ICE = Field(5, 5, RW1C)
    ITE = Field(6, 6, RW1C)
    PRO = Field(7, 7, RsvdP, doc="deprecated; Linux still writes it when clearing")
    FRI = Field(15, 8, RO)


class EventControl(Register):
    """FECTL / IECTL: IM (mask, set at reset) and IP (pending)."""

    IP = Field(30, 30, RO)
    IM = Field(31, 31, RW, reset=1)
    UNDECLARED = RsvdP


class EventData(Register):
    IMD = Field(15, 0, RW)
    EIMD = Field(31, 16, RsvdP)


class EventAddr(Register):
    MA = Field(31, 2, RW)


class EventUAddr(Register):
    MUA = Field(31, 0, RW)


class RO64(Register):
    """A 64-bit register that reads zero here (AFLOG, PHMBASE, PHMLIMIT)."""

    WIDTH = 64
    UNDECLARED = RO


class RO32(Register):
    UNDECLARED = RO


class IQH(Register):
    WIDTH = 64
    QH = Field(18, 4, RO)
    UNDECLARED = RO


class IQT(Register):
    WIDTH = 64
    QT = Field(18, 4, RW)


class IQA(Register):
    WIDTH = 64
    QS = Field(2, 0, RW)
    DW = Field(11, 11, RW)
    IQA = Field(63, 12, RW)


class ICS(Register):
    IWC = Field(0, 0, RW1C)


class IQERCD(Register):
    WIDTH = 64
    UNDECLARED = RO
    IQEI = Field(3, 0, RO)
    ITESID = Field(47, 32, RO)
    ICESID = Field(63, 48, RO)


class IRTA(Register):
    """IRTA_REG: table base, EIME, size S (entries = 2**(S+1)); facts A1."""

    WIDTH = 64
    S = Field(3, 0, RW)
    RSVD = Field(10, 4, Access.RsvdZ)
    EIME = Field(11, 11, RW)
    IRTA = Field(63, 12, RW)


class PQH(Register):
    """Page request queue head: byte offset of the next descriptor software reads."""

    WIDTH = 64
    PQH = Field(18, 5, RW)


class PQT(Register):
    """Page request queue tail: byte offset of the next descriptor hardware writes
    (software writes it only to reset the queue)."""

    WIDTH = 64
    PQT = Field(18, 5, RW)


class PQA(Register):
    """Page request queue address: base (4 KiB aligned) and size 2**PQS pages."""

    WIDTH = 64
    PQS = Field(2, 0, RW)
    PQA = Field(63, 12, RW)


class PRS(Register):
    """Page request status: pending page request (PPR) and overflow (PRO)."""

    PPR = Field(0, 0, RW1C)
    PRO = Field(1, 1, RW1C)


class IVA(Register):
    WIDTH = 64
    AM = Field(5, 0, RW)
    IH = Field(6, 6, RW)
    ADDR = Field(63, 12, RW)


class IOTLB(Register):
    WIDTH = 64
    DID = Field(47, 32, RW)
    DW = Field(48, 48, RW)
    DR = Field(49, 49, RW)
    IAIG = Field(58, 57, RO)
    IIRG = Field(61, 60, RW)
    IVT = Field(63, 63, RW)


class FRCD_LO(Register):
    WIDTH = 64
    UNDECLARED = RO
    FI = Field(63, 12, RO)


class FRCD_HI(Register):
    WIDTH = 64
    UNDECLARED = RO
    SID = Field(15, 0, RO)
    T2 = Field(28, 28, RO)
    PRIV = Field(29, 29, RO)
    EXE = Field(30, 30, RO)
    PP = Field(31, 31, RO)
    FR = Field(39, 32, RO)
    PV = Field(59, 40, RO)
    AT = Field(61, 60, RO)
    T = Field(62, 62, RO)
    F = Field(63, 63, RW1C)


# GCMD/GSTS bit groups (same positions in both registers).
LEVEL_BITS = (GCMD.TE.mask, GCMD.QIE.mask, GCMD.IRE.mask, GCMD.CFI.mask, GCMD.EAFL.mask)
ONESHOT_BITS = (GCMD.SRTP.mask, GCMD.SFL.mask, GCMD.WBF.mask, GCMD.SIRTP.mask)
