"""VT-d interrupt remapping: interrupt requests, the remapping table, the interrupt
entry cache (VT-d spec chapter 5, 9.10 IRTE, 10.4.29 IRTA_REG; facts A1, A4, A9 type 4,
A12.2).

An untranslated DWORD write without PASID to ``0xFEEx_xxxx`` is an interrupt request,
never memory. The machine hands such a write to :meth:`IrqRemapping.request` with the
requester's source-id, the address and the data:

- IRES=0 (interrupt remapping off): the message goes to the machine's interrupt
  controller as it is (compatibility format).
- IRES=1, compatibility format (address bit 4 = 0): passed through only while CFIS=1
  and IRTA.EIME=0, else blocked with fault 0x25.
- IRES=1, remappable format: handle (address 19:5 and bit 2 as handle 15), SHV
  (bit 3), subhandle (data 15:0); data 31:16 set is fault 0x20; index = handle (+
  subhandle with SHV), beyond ``2**(S+1)`` entries is 0x21; the 128-bit IRTE at
  ``IRTA + 16 * index`` is fetched through the interrupt entry cache (a RAM error is
  0x23); P=0 is 0x22, reserved bits (and SVT=3, IM=1 without CAP.PI, reserved
  delivery modes, destination bits xAPIC mode cannot carry) are 0x24, a requester
  SVT/SQ/SID reject is 0x26; FPD in the IRTE suppresses recording of these three.
  A valid entry is delivered to its vector and destination.

Reads of the window and writes that are not a naturally aligned DWORD are not
interrupt requests; the unit blocks them with fault 0x29 (facts A12.2: invalid
request without PASID to the interrupt range). Linux 6.12's reason table stops at
0x26, so its dmesg line says "Unknown" for it.

The interrupt entry cache keeps every valid IRTE it fetched until an IEC invalidation
(QI type 4: global, or index-selective with IM, ``IM <= ECAP.MHMV``) drops it; SIRTP
does not flush it (CAP.ESIRTPS = 0), it marks every entry for re-checking. Entries
are :class:`hw.pagewatch.SlotCached` on the unit's tracker: using a cached IRTE whose
table bytes changed without an invalidation is a stale use, counted with the other
caches' (:meth:`hw.translation.Pipeline.stale`) and emitted as
``hw_vtd:stale_translation`` with ``cache=iec``; the cached entry is what gets
delivered, as hardware would. Posted-format IRTEs (IM=1) are reserved without CAP.PI;
with it the vector is posted into the descriptor at the IRTE's PDA (PIR, ON/SN, the
notification event; 0x27 when the descriptor cannot be read, 0x28 for its reserved
bits). QEMU ``vtd_interrupt_remap_msi``/``vtd_irte_get`` behave
alike; QEMU has no entry cache and does not check reserved bits beyond the IRTE's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import frozen

from hw.bus import DmaFault, Finding
from hw.memory import BusError
from hw.pagewatch import GRANULE_SHIFT, SlotCached
from hw.regs import Access, Field, Register
from hw.translation import INTR_LO
from hw.vtd import registers as vr
from hw.vtd.faults import FR
from hw.vtd.findings import iec_stale_finding

if TYPE_CHECKING:
    from hw.vtd.unit import VtdUnit

IRTE_SIZE = 16
SIRTP_DELAY_NS = 100

# -- message formats (spec 5.1.2 compatibility, 5.1.5.2 remappable) ---------------
ADDR_FORMAT_REMAP = 1 << 4
ADDR_SHV = 1 << 3
ADDR_HANDLE_15 = 1 << 2
ADDR_RH = 1 << 3
ADDR_DM = 1 << 2
DATA_RSVD_REMAP = 0xFFFF_0000


class IRTE_LO(Register):
    """Remapped-format IRTE, low 64 bits (spec 9.10; Linux ``struct irte``)."""

    WIDTH = 64
    P = Field(0, 0)
    FPD = Field(1, 1)
    DM = Field(2, 2)
    RH = Field(3, 3)
    TM = Field(4, 4)
    DLM = Field(7, 5)
    AVAIL = Field(11, 8)
    RSVD1 = Field(14, 12, Access.RsvdZ)
    IM = Field(15, 15)
    V = Field(23, 16)
    RSVD2 = Field(31, 24, Access.RsvdZ)
    DST = Field(63, 32)


class IRTE_HI(Register):
    WIDTH = 64
    SID = Field(15, 0)
    SQ = Field(17, 16)
    SVT = Field(19, 18)
    RSVD = Field(63, 20, Access.RsvdZ)


SVT_NONE, SVT_SID, SVT_BUS, SVT_RSVD = 0, 1, 2, 3
_SQ_MASK = {0: 0xFFFF, 1: 0xFFFB, 2: 0xFFF9, 3: 0xFFF8}
"""SVT=01: the source-id bits compared for each SQ (spec 9.10: SQ=1 ignores bit 2,
SQ=2 bits 2:1, SQ=3 bits 2:0)."""
_DLM_RSVD = frozenset({3, 6})
_XAPIC_DST_RSVD = 0xFFFF_00FF
"""DST bits that must be 0 with EIME=0 (xAPIC: the APIC id is DST 15:8)."""


@frozen
class Irte:
    """A decoded remapped-format IRTE."""

    lo: int
    hi: int

    @property
    def present(self) -> bool:
        return bool(self.lo & 1)

    @property
    def fpd(self) -> bool:
        return bool(self.lo & 2)

    def dest(self, eime: bool) -> int:
        dst = IRTE_LO.DST.get(self.lo)
        return dst if eime else (dst >> 8) & 0xFF

    @property
    def posted(self) -> bool:
        return bool(IRTE_LO.IM.get(self.lo))

    def reserved(self, eime: bool, posted: bool) -> str:
        """Why the entry's programming is invalid (fault 0x24), or ''."""
        lo, hi = self.lo, self.hi
        if IRTE_LO.IM.get(lo):
            if not posted:
                return "posted format without CAP.PI"
            if lo & POSTED_LO_RSVD or hi & POSTED_HI_RSVD:
                return "reserved bits (posted format)"
            return "SVT 3" if IRTE_HI.SVT.get(hi) == SVT_RSVD else ""
        if lo & IRTE_LO.RSVDZ_MASK or hi & IRTE_HI.RSVDZ_MASK:
            return "reserved bits"
        if IRTE_LO.DLM.get(lo) in _DLM_RSVD:
            return "reserved delivery mode"
        if not eime and IRTE_LO.DST.get(lo) & _XAPIC_DST_RSVD:
            return "destination bits xAPIC mode does not use"
        if IRTE_HI.SVT.get(hi) == SVT_RSVD:
            return "SVT 3"
        return ""

    def text(self) -> str:
        """The entry decoded, for a report (remapped or posted format)."""
        lo, hi = self.lo, self.hi
        fmt = "posted" if self.posted else f"dest={IRTE_LO.DST.get(lo):#x}"
        return (
            f"P={lo & 1} FPD={IRTE_LO.FPD.get(lo)} vector={IRTE_LO.V.get(lo):#x} {fmt} "
            f"DLM={IRTE_LO.DLM.get(lo)} TM={IRTE_LO.TM.get(lo)} DM={IRTE_LO.DM.get(lo)} "
            f"SVT={IRTE_HI.SVT.get(hi)} SQ={IRTE_HI.SQ.get(hi)} SID={IRTE_HI.SID.get(hi):#06x}"
        )

    def source_ok(self, rid: int) -> bool:
        """Source validation (spec 9.10 SVT/SQ/SID)."""
        hi = self.hi
        svt = IRTE_HI.SVT.get(hi)
        sid = IRTE_HI.SID.get(hi)
        if svt == SVT_NONE:
            return True
        if svt == SVT_SID:
            mask = _SQ_MASK[IRTE_HI.SQ.get(hi)]
            return (rid & mask) == (sid & mask)
        bus = rid >> 8
        return sid >> 8 <= bus <= sid & 0xFF


POSTED_LO_RSVD = 0xFC | 0x3000 | ((1 << 38) - (1 << 24))
"""Posted-format IRTE low qword: bits 7:2, 13:12 and 37:24 are reserved (spec 9.11)."""
POSTED_HI_RSVD = 0xFFF << 20
PID_SIZE = 64
PID_ON = 1 << 256
PID_SN = 1 << 257
PID_RSVD = ((1 << 272) - (1 << 258)) | ((1 << 288) - (1 << 280)) | ((1 << 512) - (1 << 320))
"""Posted-interrupt descriptor bits 271:258, 287:280 and 511:320 (spec 9.12)."""


class IecEntry(SlotCached):
    """One cached IRTE and the two table granules it came from."""

    __slots__ = ("index", "irte")

    def __init__(self, index: int, irte: Irte, slots: tuple[int, int]) -> None:
        super().__init__(slots)
        self.index = index
        self.irte = irte


class _IrFault(Exception):
    def __init__(self, reason: FR, fpd: bool = False, why: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.fpd = fpd
        self.why = why


NON_QUALIFIED_IR = frozenset({FR.IR_REQ_RSVD, FR.IR_INDEX_OVER, FR.IR_ROOT_INVAL, FR.IR_REQ_COMPAT})
"""Faults recorded whatever the IRTE's FPD says: it was not (validly) read."""


class IrqRemapping:
    """The interrupt-remapping half of one unit: latched IRTA, IRE/CFI state, the
    interrupt entry cache, and the handling of interrupt requests."""

    def __init__(self, unit: VtdUnit) -> None:
        self.unit = unit
        self.base = 0
        self.size_field = 0
        self.eime = False
        self.enabled = False
        self.cfi = False
        self.iec: dict[int, IecEntry] = {}
        self.delivered = 0
        """Interrupts this unit delivered (remapped or passed through)."""
        self.blocked = 0

    @property
    def entries(self) -> int:
        return 2 << self.size_field

    # -- GCMD side effects --------------------------------------------------------
    def sirtp(self) -> None:
        """SIRTP: latch IRTA after the command delay; the IEC is kept (no ESIRTPS)."""
        value = self.unit.regs["IRTA"]
        self.unit.regs.field("GSTS", vr.GSTS.IRTPS, 0)
        self.unit._schedule(SIRTP_DELAY_NS, lambda: self._sirtp_done(value), "sirtp")

    def _sirtp_done(self, value: int) -> None:
        unit = self.unit
        self.base = value & ~0xFFF
        self.size_field = vr.IRTA.S.get(value)
        eime = bool(vr.IRTA.EIME.get(value))
        if eime and not unit.cfg.eim:
            unit.error("IRTA.EIME set but ECAP.EIM is 0; treated as 0")
            eime = False
        self.eime = eime
        span = self.entries * IRTE_SIZE
        if span > 4096 and self.base % span:
            unit.error(f"IRTA {self.base:#x} is not aligned to the table size {span:#x}")
        if self.iec:
            unit.caches.deps.mark_all(self.iec.values())
        unit.regs.field("GSTS", vr.GSTS.IRTPS, 1)

    def set_enable(self, on: bool) -> None:
        unit = self.unit
        if on and not unit.regs.field("GSTS", vr.GSTS.IRTPS):
            unit.error("GCMD.IRE set before an interrupt remapping table was latched (SIRTP)")

        def done() -> None:
            self.enabled = on
            unit.regs.field("GSTS", vr.GSTS.IRES, int(on))

        unit._schedule(SIRTP_DELAY_NS, done, "ire")

    def set_cfi(self, on: bool) -> None:
        def done() -> None:
            self.cfi = on
            self.unit.regs.field("GSTS", vr.GSTS.CFIS, int(on))

        self.unit._schedule(SIRTP_DELAY_NS, done, "cfi")

    # -- invalidation (QI type 4) ------------------------------------------------------
    def invalidate(self, index: int | None, im: int = 0) -> int:
        """Drop cached IRTEs: all (``index`` None) or ``2**im`` entries from ``index``
        (aligned down to that size, as the spec's handle mask does)."""
        if index is None:
            victims = list(self.iec)
        else:
            first = index & ~((1 << im) - 1)
            victims = [i for i in self.iec if first <= i < first + (1 << im)]
        deps = self.unit.caches.deps
        for i in victims:
            deps.drop(self.iec.pop(i))
        return len(victims)

    # -- requests -------------------------------------------------------------------------
    def request(self, rid: int, addr: int, data: int) -> DmaFault | None:
        """One interrupt request (a DWORD write without PASID to the window)."""
        unit = self.unit
        if not self.enabled:
            self._deliver(addr, data)
            return None
        if not addr & ADDR_FORMAT_REMAP:
            if self.cfi and not self.eime:
                self._deliver(addr, data)
                return None
            return self._fault(rid, 0, addr, _IrFault(FR.IR_REQ_COMPAT))
        handle = ((addr >> 5) & 0x7FFF) | (0x8000 if addr & ADDR_HANDLE_15 else 0)
        index = handle
        try:
            if data & DATA_RSVD_REMAP or addr >> 32:
                raise _IrFault(FR.IR_REQ_RSVD)
            if addr & ADDR_SHV:
                index += data & 0xFFFF
            if index >= self.entries:
                raise _IrFault(FR.IR_INDEX_OVER)
            entry, cached = self._lookup(index)
            irte = entry.irte
            if not irte.source_ok(rid):
                raise _IrFault(FR.IR_SID_ERR, irte.fpd)
        except _IrFault as f:
            return self._fault(rid, index, addr, f)
        if irte.posted:
            return self._post(rid, index, irte, addr)
        vector = IRTE_LO.V.get(irte.lo)
        dest = irte.dest(self.eime)
        if unit.machine is not None and unit.machine.hw_trace is not None:
            unit.emit(
                "hw_vtd:irte",
                sid=rid,
                index=index,
                vector=vector,
                dest=dest,
                cached=cached,
                irte=(irte.lo, irte.hi),
            )
        lo = irte.lo
        msg_addr = (
            INTR_LO
            | (dest & 0xFF) << 12
            | ((dest >> 8) & 0x7F) << 5
            | IRTE_LO.RH.get(lo) << 3
            | IRTE_LO.DM.get(lo) << 2
        )
        msg_data = vector | IRTE_LO.DLM.get(lo) << 8 | IRTE_LO.TM.get(lo) << 15
        self._deliver(msg_addr, msg_data)
        return None

    def _post(self, rid: int, index: int, irte: Irte, addr: int) -> DmaFault | None:
        """Posted format (CAP.PI; spec 5.2.3): set the vector's bit in the descriptor's
        PIR and, unless ON is already set or SN suppresses a non-urgent one, set ON
        and send the notification event (NV to NDST)."""
        lo, hi = irte.lo, irte.hi
        pda = ((lo >> 38) << 6) | ((hi >> 32) << 32)
        mem = self.unit.m.memory
        try:
            pid = int.from_bytes(mem.read(pda, PID_SIZE), "little")
        except BusError:
            return self._fault(rid, index, addr, _IrFault(FR.IR_PDA_INVAL))
        if pid & PID_RSVD:
            return self._fault(rid, index, addr, _IrFault(FR.IR_PID_RSVD))
        vector = IRTE_LO.V.get(lo)
        urgent = bool(lo >> 14 & 1)
        pid |= 1 << vector
        notify = not pid & PID_ON and (urgent or not pid & PID_SN)
        if notify:
            pid |= PID_ON
        mem.write(pda, pid.to_bytes(PID_SIZE, "little"))
        self.unit.emit("hw_vtd:irte", sid=rid, index=index, vector=vector, dest=-1, posted=True)
        if notify:
            nv = (pid >> 272) & 0xFF
            ndst = (pid >> 288) & 0xFFFF_FFFF
            dest = ndst if self.eime else (ndst >> 8) & 0xFF
            self._deliver(INTR_LO | (dest & 0xFF) << 12 | ((dest >> 8) & 0x7F) << 5, nv)
        return None

    def _deliver(self, addr: int, data: int) -> None:
        self.delivered += 1
        self.unit.m.msi(addr, data)
        return None

    def _fetch(self, index: int) -> tuple[Irte, tuple[int, int]]:
        at = self.base + IRTE_SIZE * index
        try:
            lo, hi = self.unit.m.memory.read_u64s(at, 2)
        except BusError:
            raise _IrFault(FR.IR_ROOT_INVAL) from None
        return Irte(lo, hi), (at >> GRANULE_SHIFT, (at + 8) >> GRANULE_SHIFT)

    def _check(self, irte: Irte) -> None:
        if not irte.present:
            raise _IrFault(FR.IR_ENTRY_P, irte.fpd)
        why = irte.reserved(self.eime, self.unit.cfg.pi)
        if why:
            raise _IrFault(FR.IR_IRTE_RSVD, irte.fpd, why)

    def _lookup(self, index: int) -> tuple[IecEntry, bool]:
        """The IRTE for ``index`` through the cache; a suspect entry is re-read and a
        changed one reported as a stale use (the cached entry is still used)."""
        e = self.iec.get(index)
        if e is None:
            irte, slots = self._fetch(index)
            self._check(irte)
            e = self.iec[index] = IecEntry(index, irte, slots)
            self.unit.caches.deps.add(e)
            return e, False
        if e.suspect:
            fresh: Irte | None = None
            try:
                fresh, slots = self._fetch(index)
            except _IrFault:
                slots = tuple(e.slots)  # type: ignore[assignment]
            if fresh is None or not self.unit.pipeline.revalidate(e, fresh == e.irte, slots):
                self._stale(e, fresh)
        return e, True

    def _stale(self, e: IecEntry, fresh: Irte | None) -> None:
        unit = self.unit
        cached = (e.irte.lo, e.irte.hi)
        current = (-1,) if fresh is None else (fresh.lo, fresh.hi)
        what = (
            f"{unit.name}: interrupt index {e.index:#x}: cached IRTE {cached} used, "
            f"table says {current}"
        )

        def report() -> Finding:
            found = iec_stale_finding(unit, e, fresh)
            unit.emit(
                "hw_vtd:stale_translation",
                rid=-1,
                pasid=None,
                addr=e.index,
                cached=cached,
                current=current,
                cache="iec",
                write_ns=[w.time_ns for w in found.writes],
                missing=[i.text() for i in found.missing],
            )
            unit.report(found)
            return found

        unit.pipeline.stale(what, report)

    def _fault(self, rid: int, index: int, addr: int, f: _IrFault) -> DmaFault:
        self.blocked += 1
        fpd = f.fpd and f.reason not in NON_QUALIFIED_IR
        return self.unit.reporting.fault(
            rid, None, False, False, addr, True, f.reason, fpd, fi=index << 48
        )

    def window_fault(self, rid: int, addr: int, write: bool) -> DmaFault:
        """A read of the interrupt window or a write that is not an aligned DWORD."""
        self.blocked += 1
        return self.unit.reporting.fault(
            rid, None, False, False, addr, write, FR.IR_INVALID_REQUEST, False
        )

    # -- debug -------------------------------------------------------------------------
    def table(self) -> list[tuple[int, Irte]]:
        """(index, IRTE) of every present entry of the latched table, read from RAM."""
        out: list[tuple[int, Irte]] = []
        if not self.unit.regs.field("GSTS", vr.GSTS.IRTPS):
            return out
        mem = self.unit.m.memory
        count = min(self.entries, max(0, mem.ram_run(self.base, self.entries * IRTE_SIZE)) // 16)
        raw = mem.read(self.base, count * IRTE_SIZE) if count else b""
        for index in range(count):
            lo = int.from_bytes(raw[16 * index : 16 * index + 8], "little")
            if lo & 1:
                hi = int.from_bytes(raw[16 * index + 8 : 16 * index + 16], "little")
                out.append((index, Irte(lo, hi)))
        return out
