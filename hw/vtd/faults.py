"""VT-d fault reasons, the primary fault log and the unit's fault reporting
(VT-d spec 7.2/7.3, 10.4.9-10.4.14; facts A7, A12).

:class:`FR` names every fault reason the model can report. :class:`FaultLog` owns the
fault recording registers: records fill round-robin from the record after the last
one written, a record whose F bit is still set is never overwritten (PFO is set
instead), FSTS.PPF is the OR of the F bits and FSTS.FRI points at the oldest pending
record. QEMU ``vtd_report_frcd_fault``/``vtd_try_collapse_fault`` behave alike, with
one record; this log has CAP.NFR+1. :class:`FaultReporting` is the unit's side:
recording a translation fault (honouring FPD), the fault and invalidation-completion
event interrupts (FECTL/IECTL masking and pending bits) and the status registers'
write side effects (QEMU ``vtd_report_dmar_fault``, ``vtd_generate_fault_event``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from hw.bus import DmaFault
from hw.regs import RegisterFile, RegSlot
from hw.vtd import registers as vr

if TYPE_CHECKING:
    from hw.vtd.unit import VtdUnit

PASID_MASK = (1 << 20) - 1
"""A PASID is 20 bits on the wire (PCIe PASID TLP prefix) and in FRCD.PV."""
PV_SID_MASK = 0xFFFF


class FR(enum.IntEnum):
    """Fault reason codes (facts A12.1 legacy, A12.3 scalable mode)."""

    # legacy mode
    ROOT_NOT_PRESENT = 0x01
    CTX_NOT_PRESENT = 0x02
    CTX_INVALID = 0x03
    ADDR_BEYOND_MGAW = 0x04
    WRITE = 0x05
    READ = 0x06
    PAGING_ENTRY_ACCESS = 0x07
    ROOT_ACCESS = 0x08
    CTX_ACCESS = 0x09
    ROOT_RSVD = 0x0A
    CTX_RSVD = 0x0B
    PAGING_ENTRY_RSVD = 0x0C
    CTX_TT_BLOCKED = 0x0D
    INTERRUPT_ADDR = 0x0E
    # interrupt remapping (facts A12.2; hw.vtd.irq_remap)
    IR_REQ_RSVD = 0x20
    IR_INDEX_OVER = 0x21
    IR_ENTRY_P = 0x22
    IR_ROOT_INVAL = 0x23
    IR_IRTE_RSVD = 0x24
    IR_REQ_COMPAT = 0x25
    IR_SID_ERR = 0x26
    IR_PDA_INVAL = 0x27
    IR_PID_RSVD = 0x28
    IR_INVALID_REQUEST = 0x29
    # scalable mode
    SM_RTADDR_INVALID = 0x30
    SM_TTM_LEGACY_PASID = 0x31
    SM_ROOT_ACCESS = 0x38
    SM_ROOT_NOT_PRESENT = 0x39
    SM_ROOT_RSVD = 0x3A
    SM_CTX_ACCESS = 0x40
    SM_CTX_NOT_PRESENT = 0x41
    SM_CTX_RSVD = 0x42
    SM_CTX_INVALID = 0x43
    SM_CTX_DTE = 0x44
    SM_CTX_PASIDE = 0x45
    SM_PASID_TOO_LARGE = 0x46
    SM_PRE_ABSENT = 0x47
    SM_PASID_DIR_ACCESS = 0x50
    SM_PASID_DIR_NOT_PRESENT = 0x51
    SM_PASID_DIR_RSVD = 0x52
    SM_PASID_ACCESS = 0x58
    SM_PASID_NOT_PRESENT = 0x59
    SM_PASID_RSVD = 0x5A
    SM_PASID_INVALID = 0x5B
    SM_PASID_ERE = 0x5C
    SM_PASID_SRE = 0x5D
    FS_ACCESS = 0x70
    FS_NOT_PRESENT = 0x71
    FS_RSVD = 0x72
    FS_PTR_INVALID = 0x73
    SS_ACCESS = 0x78
    SS_PERM = 0x79
    SS_RSVD = 0x7A
    SS_PTR_INVALID = 0x7B
    SM_NON_CANONICAL = 0x80
    SM_US = 0x81
    SM_EXEC = 0x82
    SM_ADDR_BEYOND = 0x83
    SM_WRITE = 0x85
    SM_READ = 0x86
    SM_INTERRUPT_ADDR = 0x87


NON_QUALIFIED = frozenset(
    {
        FR.ROOT_NOT_PRESENT,
        FR.ROOT_ACCESS,
        FR.CTX_ACCESS,
        FR.ROOT_RSVD,
        FR.SM_RTADDR_INVALID,
        FR.SM_TTM_LEGACY_PASID,
        FR.SM_ROOT_ACCESS,
        FR.SM_ROOT_NOT_PRESENT,
        FR.SM_ROOT_RSVD,
        FR.SM_CTX_ACCESS,
        FR.SM_PASID_DIR_ACCESS,
        FR.SM_PASID_ACCESS,
    }
)
"""Faults recorded even when an FPD bit is set: the FPD bit that would suppress them
cannot have been read yet (QEMU ``vtd_qualified_faults``; facts A12.3, unverified
against the spec table). Context-entry access and reserved-bit faults on the root
entry count as non-qualified as well."""


class TranslationFault(Exception):
    """Raised inside a walk; carries the fault reason and the FPD that applied."""

    __slots__ = ("fpd", "reason")

    def __init__(self, reason: FR, fpd: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fpd = fpd


class FaultLog:
    """Primary fault logging into the fault recording registers (spec 7.2.1, 10.4.14).

    ``regs`` is the unit's register file; records are the slots ``FRCD{i}_LO/HI``.
    ``event`` is called when a fault event must be signalled (PPF 0->1 or PFO set).
    Returns from :meth:`record` say whether the fault was logged (False: overflow).
    """

    def __init__(self, regs: RegisterFile, count: int, event: Callable[[], None]) -> None:
        self.regs = regs
        self.count = count
        self.event = event
        self.next = 0

    def pending(self, i: int) -> bool:
        return bool(self.regs[f"FRCD{i}_HI"] >> 63)

    def record(
        self,
        sid: int,
        addr: int,
        reason: int,
        write: bool,
        pasid: int | None,
        priv: bool,
        exe: bool,
    ) -> bool:
        regs = self.regs
        i = self.next
        if self.pending(i):
            was = regs.field("FSTS", vr.FSTS.PFO)
            regs.field("FSTS", vr.FSTS.PFO, 1)
            if not was:
                self.event()
            return False
        had_pending = bool(regs.field("FSTS", vr.FSTS.PPF))
        # The record holds what a PASID TLP prefix can carry: 20 bits. A request
        # tagged wider (only a model can make one) keeps its low bits, as SID does.
        regs[f"FRCD{i}_LO"] = addr & ~0xFFF
        regs[f"FRCD{i}_HI"] = vr.FRCD_HI.encode(
            SID=sid & PV_SID_MASK,
            PRIV=int(priv),
            EXE=int(exe),
            PP=int(pasid is not None),
            FR=reason,
            PV=(pasid or 0) & PASID_MASK,
            T=int(not write),
            F=1,
        )
        self.next = (i + 1) % self.count
        if not had_pending:
            regs.field("FSTS", vr.FSTS.FRI, i)
        self.update()
        if not had_pending:
            self.event()
        return True

    def update(self) -> None:
        """Recompute FSTS.PPF and FRI after records were written or cleared."""
        regs = self.regs
        fri = regs.field("FSTS", vr.FSTS.FRI)
        for k in range(self.count):
            j = (fri + k) % self.count
            if self.pending(j):
                regs.field("FSTS", vr.FSTS.FRI, j)
                regs.field("FSTS", vr.FSTS.PPF, 1)
                return
        regs.field("FSTS", vr.FSTS.PPF, 0)


class FaultReporting:
    """Fault recording and event interrupts of one unit (spec 7.2, 7.3, 10.4.9-10.4.12).

    The register file's write hooks for FSTS, FECTL, IECTL, ICS and the FRCD high
    words point here; :meth:`fault` is what every translation path calls."""

    def __init__(self, unit: VtdUnit) -> None:
        self.unit = unit

    def fault(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        exe: bool,
        addr: int,
        write: bool,
        reason: FR,
        fpd: bool,
        fi: int | None = None,
    ) -> DmaFault:
        """Record a translation fault (spec 7.2) unless FPD suppresses a qualified one.
        ``fi`` replaces the recorded FI field (an interrupt-remapping fault records the
        interrupt index in FI 63:48, not the address)."""
        unit = self.unit
        stats = unit.stats
        stats.faults += 1
        if fpd and reason not in NON_QUALIFIED:
            stats.faults_suppressed += 1
            recorded = "suppressed (FPD)"
        elif unit.faults.record(
            rid, addr if fi is None else fi, int(reason), write, pasid, priv, exe
        ):
            stats.faults_recorded += 1
            recorded = "recorded"
        else:
            stats.faults_overflow += 1
            recorded = "lost (primary fault overflow)"
        from hw.vtd.findings import fault_finding  # findings imports FR from here

        unit.report(fault_finding(unit, rid, pasid, priv, exe, addr, write, reason, recorded, fi))
        unit.emit("hw_vtd:fault", rid=rid, pasid=pasid, addr=addr, reason=int(reason), write=write)
        return DmaFault(addr, int(reason), write, reason.name)

    # -- event interrupts ------------------------------------------------------------
    def fault_event(self) -> None:
        self._event("FECTL", "FEADDR", "FEUADDR", "FEDATA")

    def iwc_event(self) -> None:
        self._event("IECTL", "IEADDR", "IEUADDR", "IEDATA")

    def _event(self, ctl: str, addr: str, uaddr: str, data: str) -> None:
        regs = self.unit.regs
        if regs.field(ctl, vr.EventControl.IM):
            regs.field(ctl, vr.EventControl.IP, 1)
            return
        regs.field(ctl, vr.EventControl.IP, 0)
        self.unit.m.msi(regs[addr] | (regs[uaddr] << 32), regs[data])

    def _unmask(self, ctl: str) -> None:
        regs = self.unit.regs
        if not regs.field(ctl, vr.EventControl.IM) and regs.field(ctl, vr.EventControl.IP):
            if ctl == "FECTL":
                self.fault_event()
            else:
                self.iwc_event()

    def set_iqe(self, code: int) -> None:
        """Report an invalidation queue error (FSTS.IQE + IQERCD.IQEI) and signal it."""
        regs = self.unit.regs
        self.unit.stats.qi_errors += 1
        regs.field("IQERCD", vr.IQERCD.IQEI, code)
        if not regs.field("FSTS", vr.FSTS.IQE):
            regs.field("FSTS", vr.FSTS.IQE, 1)
            self.fault_event()

    # -- register write hooks ----------------------------------------------------------
    def fectl_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        self._unmask("FECTL")

    def iectl_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        self._unmask("IECTL")

    def fsts_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        regs = self.unit.regs
        status = vr.FSTS.PFO.mask | vr.FSTS.PPF.mask | vr.FSTS.IQE.mask
        status |= vr.FSTS.ICE.mask | vr.FSTS.ITE.mask
        if not regs["FSTS"] & status:
            regs.field("FECTL", vr.EventControl.IP, 0)
        if old & vr.FSTS.IQE.mask and not slot.value & vr.FSTS.IQE.mask:
            self.unit.qi.kick()

    def ics_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not slot.value & 1:
            self.unit.regs.field("IECTL", vr.EventControl.IP, 0)

    def frcd_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        self.unit.faults.update()
