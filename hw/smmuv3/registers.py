"""SMMUv3 registers, pages 0 and 1 (IHI 0070 chapter 6; facts A1-A4).

Offsets and field positions are those Linux ``arm-smmu-v3.h`` uses (``ARM_SMMU_*``
offsets, ``IDR*_``, ``CR0_``, ``GBPA_``, ``IRQ_CTRL_``, ``GERROR_``, ``STRTAB_*``,
``Q_BASE_*``, ``CMDQ_CONS_ERR``, ``EVTQ_*_OVFLG``). The producer/consumer registers
the SMMU writes for the event queue live in page 1 (base + 0x10000).
"""

from __future__ import annotations

from hw.regs import Access, Field, Register

RO, RW = Access.RO, Access.RW

PAGE1 = 0x10000

IDR0_OFF = 0x000
IDR1_OFF = 0x004
IDR2_OFF = 0x008
IDR3_OFF = 0x00C
IDR4_OFF = 0x010
IDR5_OFF = 0x014
IIDR_OFF = 0x018
AIDR_OFF = 0x01C
CR0_OFF = 0x020
CR0ACK_OFF = 0x024
CR1_OFF = 0x028
CR2_OFF = 0x02C
STATUSR_OFF = 0x040
GBPA_OFF = 0x044
AGBPA_OFF = 0x048
IRQ_CTRL_OFF = 0x050
IRQ_CTRLACK_OFF = 0x054
GERROR_OFF = 0x060
GERRORN_OFF = 0x064
GERROR_IRQ_CFG0_OFF = 0x068
GERROR_IRQ_CFG1_OFF = 0x070
GERROR_IRQ_CFG2_OFF = 0x074
STRTAB_BASE_OFF = 0x080
STRTAB_BASE_CFG_OFF = 0x088
CMDQ_BASE_OFF = 0x090
CMDQ_PROD_OFF = 0x098
CMDQ_CONS_OFF = 0x09C
EVTQ_BASE_OFF = 0x0A0
EVTQ_IRQ_CFG0_OFF = 0x0B0
EVTQ_IRQ_CFG1_OFF = 0x0B8
EVTQ_IRQ_CFG2_OFF = 0x0BC
EVTQ_PROD_OFF = PAGE1 + 0x0A8
EVTQ_CONS_OFF = PAGE1 + 0x0AC
PRIQ_BASE_OFF = 0x0C0
PRIQ_IRQ_CFG0_OFF = 0x0D0
PRIQ_IRQ_CFG1_OFF = 0x0D8
PRIQ_IRQ_CFG2_OFF = 0x0DC
PRIQ_PROD_OFF = PAGE1 + 0x0C8
PRIQ_CONS_OFF = PAGE1 + 0x0CC


class IDR0(Register):
    UNDECLARED = RO
    S2P = Field(0, 0, RO)
    S1P = Field(1, 1, RO)
    TTF = Field(3, 2, RO)
    COHACC = Field(4, 4, RO)
    BTM = Field(5, 5, RO)
    HTTU = Field(7, 6, RO)
    HYP = Field(9, 9, RO)
    ATS = Field(10, 10, RO)
    ASID16 = Field(12, 12, RO)
    MSI = Field(13, 13, RO)
    SEV = Field(14, 14, RO)
    PRI = Field(16, 16, RO)
    VMID16 = Field(18, 18, RO)
    CD2L = Field(19, 19, RO)
    TTENDIAN = Field(22, 21, RO)
    STALL_MODEL = Field(25, 24, RO)
    TERM_MODEL = Field(26, 26, RO)
    ST_LEVEL = Field(28, 27, RO)


class IDR1(Register):
    UNDECLARED = RO
    SIDSIZE = Field(5, 0, RO)
    SSIDSIZE = Field(10, 6, RO)
    PRIQS = Field(15, 11, RO)
    EVTQS = Field(20, 16, RO)
    CMDQS = Field(25, 21, RO)
    ATTR_TYPES_OVR = Field(27, 27, RO)
    REL = Field(28, 28, RO)
    QUEUES_PRESET = Field(29, 29, RO)
    TABLES_PRESET = Field(30, 30, RO)


class IDR3(Register):
    UNDECLARED = RO
    RIL = Field(10, 10, RO)


class IDR5(Register):
    UNDECLARED = RO
    OAS = Field(2, 0, RO)
    GRAN4K = Field(4, 4, RO)
    GRAN16K = Field(5, 5, RO)
    GRAN64K = Field(6, 6, RO)
    VAX = Field(11, 10, RO)
    STALL_MAX = Field(31, 16, RO)


class ReadOnly32(Register):
    """IDR2, IDR4, IIDR, AIDR, STATUSR, AGBPA: fixed values."""

    UNDECLARED = RO


class CR0(Register):
    SMMUEN = Field(0, 0)
    PRIQEN = Field(1, 1)
    EVTQEN = Field(2, 2)
    CMDQEN = Field(3, 3)
    ATSCHK = Field(4, 4)


class CR0ACK(Register):
    UNDECLARED = RO
    SMMUEN = Field(0, 0, RO)
    PRIQEN = Field(1, 1, RO)
    EVTQEN = Field(2, 2, RO)
    CMDQEN = Field(3, 3, RO)
    ATSCHK = Field(4, 4, RO)


class CR1(Register):
    QUEUE_IC = Field(1, 0)
    QUEUE_OC = Field(3, 2)
    QUEUE_SH = Field(5, 4)
    TABLE_IC = Field(7, 6)
    TABLE_OC = Field(9, 8)
    TABLE_SH = Field(11, 10)


class CR2(Register):
    E2H = Field(0, 0)
    RECINVSID = Field(1, 1)
    PTM = Field(2, 2)


class GBPA(Register):
    """Global bypass attributes; only Update and Abort have an effect here."""

    MEMATTR = Field(3, 0)
    MTCFG = Field(4, 4)
    ALLOCCFG = Field(11, 8)
    SHCFG = Field(13, 12)
    PRIVCFG = Field(17, 16)
    INSTCFG = Field(19, 18)
    ABORT = Field(20, 20)
    UPDATE = Field(31, 31)


class IRQ_CTRL(Register):
    GERROR_IRQEN = Field(0, 0)
    PRIQ_IRQEN = Field(1, 1)
    EVTQ_IRQEN = Field(2, 2)


class IRQ_CTRLACK(Register):
    UNDECLARED = RO
    GERROR_IRQEN = Field(0, 0, RO)
    PRIQ_IRQEN = Field(1, 1, RO)
    EVTQ_IRQEN = Field(2, 2, RO)


class GERROR(Register):
    """Global errors, toggled by the SMMU; active while GERROR[x] != GERRORN[x]."""

    UNDECLARED = RO
    CMDQ_ERR = Field(0, 0, RO)
    EVTQ_ABT_ERR = Field(2, 2, RO)
    PRIQ_ABT_ERR = Field(3, 3, RO)
    MSI_CMDQ_ABT_ERR = Field(4, 4, RO)
    MSI_EVTQ_ABT_ERR = Field(5, 5, RO)
    MSI_PRIQ_ABT_ERR = Field(6, 6, RO)
    MSI_GERROR_ABT_ERR = Field(7, 7, RO)
    SFM_ERR = Field(8, 8, RO)


class GERRORN(Register):
    CMDQ_ERR = Field(0, 0)
    EVTQ_ABT_ERR = Field(2, 2)
    PRIQ_ABT_ERR = Field(3, 3)
    MSI_CMDQ_ABT_ERR = Field(4, 4)
    MSI_EVTQ_ABT_ERR = Field(5, 5)
    MSI_PRIQ_ABT_ERR = Field(6, 6)
    MSI_GERROR_ABT_ERR = Field(7, 7)
    SFM_ERR = Field(8, 8)


GERROR_ACTIVE_MASK = 0x1FD


class IrqCfg0(Register):
    """GERROR_IRQ_CFG0 / EVTQ_IRQ_CFG0: MSI address 51:2."""

    WIDTH = 64
    ADDR = Field(51, 2)


class IrqCfg1(Register):
    DATA = Field(31, 0)


class IrqCfg2(Register):
    MEMATTR = Field(3, 0)
    SH = Field(5, 4)


class STRTAB_BASE(Register):
    WIDTH = 64
    ADDR = Field(51, 6)
    RA = Field(62, 62)


class STRTAB_BASE_CFG(Register):
    LOG2SIZE = Field(5, 0)
    SPLIT = Field(10, 6)
    FMT = Field(17, 16)


STRTAB_FMT_LINEAR = 0
STRTAB_FMT_2LVL = 1


class QBASE(Register):
    """CMDQ_BASE / EVTQ_BASE: LOG2SIZE 4:0, ADDR 51:5, RA/WA hint 62."""

    WIDTH = 64
    LOG2SIZE = Field(4, 0)
    ADDR = Field(51, 5)
    RA = Field(62, 62)


class CMDQ_PROD(Register):
    """Software-owned; index and wrap bit share bits LOG2SIZE:0 (19:0 at most)."""

    WR = Field(19, 0)


class CMDQ_CONS(Register):
    """SMMU-owned; writable by software only while the command queue is disabled."""

    RD = Field(19, 0)
    ERR = Field(30, 24)


class EVTQ_PROD(Register):
    """SMMU-owned (page 1); OVFLG toggles when an event is lost to a full queue."""

    WR = Field(19, 0)
    OVFLG = Field(31, 31)


class EVTQ_CONS(Register):
    """Software-owned (page 1); OVACKFLG acknowledges an overflow."""

    RD = Field(19, 0)
    OVACKFLG = Field(31, 31)


class PRIQ_PROD(Register):
    """SMMU-owned (page 1); OVFLG toggles when a page request is lost to a full queue."""

    WR = Field(19, 0)
    OVFLG = Field(31, 31)


class PRIQ_CONS(Register):
    """Software-owned (page 1); OVACKFLG acknowledges an overflow."""

    RD = Field(19, 0)
    OVACKFLG = Field(31, 31)


GERROR_PRIQ_ABT_ERR = 1 << 3

CERROR_NONE = 0
CERROR_ILL = 1
CERROR_ABT = 2
CERROR_ATC_INV_SYNC = 3
