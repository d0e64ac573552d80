"""VT-d fault reasons and the primary fault log (VT-d spec 7.2/10.4.14; facts A7, A12).

:class:`FR` names every fault reason the model can report. :class:`FaultLog` owns the
fault recording registers: records fill round-robin from the record after the last
one written, a record whose F bit is still set is never overwritten (PFO is set
instead), FSTS.PPF is the OR of the F bits and FSTS.FRI points at the oldest pending
record. QEMU ``vtd_report_frcd_fault``/``vtd_try_collapse_fault`` behave alike, with
one record; this log has CAP.NFR+1.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from hw.regs import RegisterFile
from hw.vtd import registers as vr

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
