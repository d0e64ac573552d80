"""Queued invalidation (VT-d spec 6.5.2, 10.4.22-10.4.25; facts A8, A9).

The queue is a ring of 128-bit (IQA.DW=0) or 256-bit (DW=1) descriptors at IQA.
Writing IQT schedules a clock event that executes descriptors from IQH up to IQT in
order and advances IQH, like QEMU ``vtd_fetch_inv_desc`` (which runs synchronously).
On an error FSTS.IQE is set, IQERCD.IQEI says why, IQH stays on the offending
descriptor and nothing more is fetched until software clears IQE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hw.memory import BusError, QwordView
from hw.regs import RegSlot
from hw.vtd import entries as ent
from hw.vtd import registers as vr

if TYPE_CHECKING:
    from hw.vtd.unit import VtdUnit

QI_DELAY_NS = 200
"""Time from an IQT write (or IQE clear) to the queue being processed."""
ATS_INV_NS = 500
"""Time from a device-TLB invalidation to the device's Invalidation Completion."""

_CHECKED_MAX = 1024
"""Checked descriptors remembered at most (the memo is emptied when full)."""

IQEI_NONE = 0
IQEI_TAIL = 1
IQEI_FETCH = 2
IQEI_TYPE = 3
IQEI_RSVD = 4
IQEI_WIDTH = 5
IQEI_TAIL_ALIGN = 6

# The in-line decodings below must match the layouts in hw.vtd.entries.
assert ent.QiPiotlbQw0.G.mask == 3 << 4 and ent.QiPiotlbQw0.DID.mask == 0xFFFF << 16
assert ent.QiPiotlbQw0.PASID.mask == 0xF_FFFF << 32 and ent.QiAddrQw1.AM.mask == 0x3F
assert ent.QiWaitQw0.SW.mask == 0x20 and ent.QiWaitQw0.IF.mask == 0x10
assert ent.QiWaitQw0.STDATA.mask == 0xFFFF_FFFF << 32

_QI_WAIT = ent.QI_WAIT
_QI_PGRP = ent.QI_PGRP
_WAIT_PD = ent.QiWaitQw0.PD.mask
_FSTS_IQE = vr.FSTS.IQE.mask
_IQT_QT = vr.IQT.QT.mask
_IQH_QH = vr.IQH.QH.mask


def devtlb_range(addr: int, s: bool) -> tuple[int, int]:
    """Base and size of a device-TLB invalidation (facts A9; PCIe ATS invalidation
    size encoding, QEMU ``do_invalidate_device_tlb``): S=0 is the 4 KiB page at
    ``addr``; S=1 makes the number of 1 bits from bit 12 up give the size
    (8 KiB << count), naturally aligned. All ones from bit 12 covers everything."""
    if not s:
        return addr & ~0xFFF, 4096
    v = addr >> 12
    ones = (v ^ (v + 1)).bit_length() - 1
    size = 8192 << ones
    return addr & ~(size - 1), size


class _DescError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class InvalidationQueue:
    """The invalidation-queue engine of one unit."""

    def __init__(self, unit: VtdUnit) -> None:
        self.unit = unit
        self.enabled = False
        self.base = 0
        self.dw = 0
        self.size = 0
        self._scheduled = False
        self.inflight = 0
        """Device-TLB invalidations sent whose completion has not come back."""
        self._stalled = False
        # The queue is built when the unit is attached: its machine, clock, RAM and
        # caches are bound once here (the unit's properties check on every access).
        self._m = unit.m
        self._clock = self._m.clock
        self._mem = self._m.memory
        self._caches = unit.caches
        self._words: QwordView | None = None
        """RAM by quadword while all of the latched queue is RAM (descriptors are then
        read by index, no call); None while it is not (:meth:`enable`)."""
        self._process = self.process
        """The bound :meth:`process` posted on every tail write (made once)."""
        self._slots: tuple[RegSlot, RegSlot, RegSlot] | None = None
        self._table: dict[int, tuple[int, int, _Handler]] = {}
        self._checked: dict[tuple[int, ...], tuple[int, _Handler]] = {}
        """Descriptors (all their quadwords) that passed :meth:`_check`: type, handler."""

    # -- enable/disable (GCMD.QIE) -----------------------------------------------------
    def enable(self, on: bool) -> None:
        """QIE change took effect: latch IQA on enable and reset IQH (spec 10.4.23)."""
        u = self.unit
        regs = u.regs
        if on:
            iqa = regs["IQA"]
            self.base = iqa & ~0xFFF
            self.dw = vr.IQA.DW.get(iqa)
            self.size = 4096 << vr.IQA.QS.get(iqa)
            regs["IQH"] = 0
            # IQA cannot change while the queue is enabled, nor RAM at all: whether
            # every descriptor slot is RAM is decided here, once.
            mem = self._mem
            self._words = mem.qwords if mem.contains(self.base, self.size) else None
        self.enabled = on
        regs.field("GSTS", vr.GSTS.QIES, int(on))
        if on:
            self.kick()

    # -- tail and scheduling -------------------------------------------------------------
    def tail_written(self) -> None:
        """IQT was written: process the queue after :data:`QI_DELAY_NS` (:meth:`kick`
        written out: this runs on every synchronous invalidation)."""
        if self.enabled and not self._scheduled:
            self._scheduled = True
            self._clock.post(QI_DELAY_NS, self._process)

    def kick(self) -> None:
        if self.enabled and not self._scheduled:
            self._scheduled = True
            self._clock.post(QI_DELAY_NS, self._process)

    def process(self) -> None:
        """Execute descriptors from IQH to IQT (stops at the first error or at a wait
        descriptor that must hold). Each descriptor is fetched (its 2 or 4 quadwords:
        indexed in RAM's quadword view when the whole queue is RAM, else one
        bounds-checked read, whose bus error is the fetch IQE), checked against its
        type's reserved bits (:meth:`_check`, once per distinct descriptor) and handed
        to its handler; IQH advances past it. IQT, IQH and FSTS are read and IQH
        written through their register slots (:meth:`hw.regs.RegisterFile.slot`), not
        by name. (Runs on every invalidation: the per-descriptor steps are written out
        in the loop.)"""
        self._scheduled = False
        u = self.unit
        fsts, iqt, iqh = self._slots or self._bind()
        if not self.enabled or fsts.value & _FSTS_IQE:
            return
        dw = self.dw
        stride = 16 << dw
        tail = iqt.value & _IQT_QT
        if dw and tail & 0x10:
            u.set_iqe(IQEI_TAIL_ALIGN)
            return
        size = self.size
        if tail >= size:
            u.set_iqe(IQEI_TAIL)
            return
        head = iqh.value & _IQH_QH
        base = self.base
        nqw = 2 << dw
        words = self._words
        checked = self._checked
        m = self._m
        stats = u.stats
        while head != tail:
            q: tuple[int, ...]
            if words is not None:  # the queue is RAM: its quadwords by index
                i = (base + head) >> 3
                q = (
                    (words[i], words[i + 1])
                    if not dw
                    else (words[i], words[i + 1], words[i + 2], words[i + 3])
                )
            else:
                try:
                    q = self._mem.read_u64s(base + head, nqw)
                except BusError:
                    u.set_iqe(IQEI_FETCH)
                    return
            kind = checked.get(q) or self._check(q)
            if kind is None:
                return
            dtype, handler = kind
            qw0 = q[0]
            if dtype == _QI_WAIT and (
                self.inflight or (qw0 & _WAIT_PD and self._drain_pending(qw0))
            ):
                self._stalled = True
                return
            stats.qi_descriptors += 1
            if m.hw_trace is not None:
                u.emit("hw_vtd:qi_descriptor", type=dtype, qw=q)
            try:
                handler(self, qw0, q[1])
            except _DescError as err:
                u.set_iqe(err.code)
                return
            head = (head + stride) % size
            iqh.value = head

    def _check(self, q: tuple[int, ...]) -> tuple[int, _Handler] | None:
        """Decode a descriptor's type and check its reserved bits (the IQE of a bad one
        is set here, None returned). A descriptor that passes is remembered with its
        type and handler: the checks depend on its words alone, and a queue replays
        the same few descriptors (one per IOVA page, one wait per slot)."""
        qw0, qw1 = q[0], q[1]
        dtype = (qw0 & 0xF) | (((qw0 >> 9) & 0x7) << 4)
        u = self.unit
        kind = self._table.get(dtype)
        if kind is None:
            u.set_iqe(IQEI_TYPE)
            return None
        rsvd0, rsvd1, handler = kind
        if (
            qw0 & rsvd0
            or qw1 & rsvd1
            or (
                len(q) > 2
                and (q[2] or q[3])
                # a page group response with private data carries it in qw2/qw3
                and not (dtype == _QI_PGRP and ent.QiPgrpQw0.PDP.get(qw0))
            )
        ):
            u.set_iqe(IQEI_RSVD)
            return None
        checked = self._checked
        if len(checked) >= _CHECKED_MAX:
            checked.clear()
        got = checked[q] = (dtype, handler)
        return got

    def _bind(self) -> tuple[RegSlot, RegSlot, RegSlot]:
        """Look up the register slots :meth:`process` uses and build the descriptor
        table: type -> (reserved bits of qw0, of qw1, handler)."""
        regs = self.unit.regs
        self._slots = (regs.slot("FSTS"), regs.slot("IQT"), regs.slot("IQH"))
        self._table = {
            dtype: (lo.RSVDZ_MASK, hi.RSVDZ_MASK, _HANDLERS[dtype])
            for dtype, (lo, hi) in ent.QI_LAYOUTS.items()
        }
        return self._slots

    # -- descriptors ---------------------------------------------------------------------
    def _cc(self, qw0: int, qw1: int) -> None:
        g = ent.QiCcQw0.G.get(qw0)
        if g == 0:
            raise _DescError(IQEI_RSVD)
        f = ent.QiCcQw0
        self.unit.context_invalidate(g, f.DID.get(qw0), f.SID.get(qw0), f.FM.get(qw0))

    def _addr(self, qw1: int) -> tuple[int, int]:
        am = qw1 & 0x3F  # QiAddrQw1.AM
        if am > self.unit.cfg.mamv:
            raise _DescError(IQEI_RSVD)
        return qw1 & ~0xFFF, am

    def _iotlb(self, qw0: int, qw1: int) -> None:
        g = ent.QiIotlbQw0.G.get(qw0)
        if g == 0:
            raise _DescError(IQEI_RSVD)
        addr, am = self._addr(qw1) if g == 3 else (0, 0)
        if g == 3 and not self.unit.cfg.psi:
            g = 2
        self.unit.iotlb_invalidate(g, ent.QiIotlbQw0.DID.get(qw0), addr, am)

    def _piotlb(self, qw0: int, qw1: int) -> None:
        """P_IOTLB: G=2 all mappings of the PASID in the domain, G=3 page-selective;
        first-stage and nested entries alike (spec 6.5.2.4).
        G=0/1 are treated as reserved (facts part E). (Runs on every strict unmap:
        the fields are decoded in line, ``Field.get`` written out, and
        :meth:`Caches.flush_tlb` is called with positional arguments.)"""
        g = (qw0 >> 4) & 3  # QiPiotlbQw0.G
        if g < 2:
            raise _DescError(IQEI_RSVD)
        did = (qw0 >> 16) & 0xFFFF  # QiPiotlbQw0.DID
        pasid = (qw0 >> 32) & 0xF_FFFF  # QiPiotlbQw0.PASID
        u = self.unit
        u.stats.invalidations += 1
        if g == 2:
            self._caches.flush_tlb(did, pasid, None, 0, True)
            return
        am = qw1 & 0x3F  # _addr() written out
        if am > u.cfg.mamv:
            raise _DescError(IQEI_RSVD)
        self._caches.flush_tlb(did, pasid, qw1 & ~0xFFF, am, True)  # nested too

    def _pc(self, qw0: int, qw1: int) -> None:
        """PASID cache: G=0 all PASIDs of DID, G=1 one PASID of DID, G=3 global."""
        f = ent.QiPcQw0
        g = f.G.get(qw0)
        u = self.unit
        if g == 2:
            raise _DescError(IQEI_RSVD)
        u.stats.invalidations += 1
        if g == 3:
            u.caches.flush_pasid()
        elif g == 0:
            u.caches.flush_pasid(did=f.DID.get(qw0))
        else:
            u.caches.flush_pasid(did=f.DID.get(qw0), pasid=f.PASID.get(qw0))

    def _devtlb(self, qw0: int, qw1: int) -> None:
        """Type 3 (spec 6.5.2.5; Linux ``qi_desc_dev_iotlb``): an Invalidation Request
        without PASID to the function SID names, which drops the range for every
        PASID (:meth:`hw.ats.AddressTranslationCache.invalidate`). MIP and PFSID are
        decoded by nobody: the model neither throttles (ECAP.DIT=0) nor queues."""
        sid = ent.QiDevTlbQw0.SID.get(qw0)
        addr, size = devtlb_range(qw1, bool(ent.QiDevTlbQw1.S.get(qw1)))
        if self.unit.devtlb_invalidate(sid, None, False, addr, size):
            self._sent()

    def _pdevtlb(self, qw0: int, qw1: int) -> None:
        """Type 8 (spec 6.5.2.7; Linux ``qi_desc_dev_iotlb_pasid``): with PASID; G=1
        (Global Invalidate) covers every PASID of the function, as QEMU
        ``vtd_process_device_piotlb_desc`` does."""
        f, f1 = ent.QiPdevTlbQw0, ent.QiPdevTlbQw1
        sid, pasid = f.SID.get(qw0), f.PASID.get(qw0)
        addr, size = devtlb_range(qw1, bool(f1.S.get(qw1)))
        if self.unit.devtlb_invalidate(sid, pasid, bool(f1.G.get(qw1)), addr, size):
            self._sent()

    def _sent(self) -> None:
        """The device answers after :data:`ATS_INV_NS`; wait descriptors hold until then
        (spec 6.5.2.8: a wait completes after all earlier invalidations did)."""
        self.inflight += 1
        self.unit.m.clock.schedule(ATS_INV_NS, self._completion, f"{self.unit.name}:ats-inv")

    def _completion(self) -> None:
        self.inflight -= 1
        self.resume()

    def resume(self) -> None:
        """Something a stalled wait descriptor waited for finished: run on if nothing
        else holds it."""
        if self._stalled and not self.inflight and not self.unit.prq.in_transit:
            self._stalled = False
            self.kick()

    def _drain_pending(self, qw0: int) -> bool:
        """PD=1 (with ECAP.PDS): page requests received before the wait must have been
        written to the page request queue first."""
        u = self.unit
        return bool(qw0 & _WAIT_PD and u.cfg.pds and u.prq.in_transit)

    def _pgrp(self, qw0: int, qw1: int) -> None:
        """Page group response (spec 6.5.2.9): to the function, as a PRG Response."""
        self.unit.prq.group_response(qw0, qw1)

    def _iec(self, qw0: int, qw1: int) -> None:
        """Interrupt-entry cache (spec 6.5.2.9): G=0 global, G=1 the ``2**IM`` entries
        from IIDX; IM above ECAP.MHMV is a reserved-field error."""
        f = ent.QiIecQw0
        u = self.unit
        u.stats.invalidations += 1
        if not f.G.get(qw0):
            u.irq.invalidate(None)
            return
        im = f.IM.get(qw0)
        if im > u.cfg.mhmv:
            raise _DescError(IQEI_RSVD)
        u.irq.invalidate(f.IIDX.get(qw0), im)

    def _wait(self, qw0: int, qw1: int) -> None:
        """Invalidation wait: status write (SW) and/or completion interrupt (IF).
        (Ends every synchronous submission: the fields are decoded in line.)"""
        if qw0 & 0x20:  # QiWaitQw0.SW
            try:
                self._mem.write_u32(qw1 & ~0x3, qw0 >> 32)  # STDATA
            except BusError:
                raise _DescError(IQEI_NONE) from None
        if qw0 & 0x10:  # QiWaitQw0.IF
            u = self.unit
            if not u.regs.field("ICS", vr.ICS.IWC):
                u.regs.field("ICS", vr.ICS.IWC, 1)
                u.iwc_event()


_Handler = Callable[[InvalidationQueue, int, int], None]

_HANDLERS: dict[int, _Handler] = {
    ent.QI_CC: InvalidationQueue._cc,
    ent.QI_IOTLB: InvalidationQueue._iotlb,
    ent.QI_DEVTLB: InvalidationQueue._devtlb,
    ent.QI_IEC: InvalidationQueue._iec,
    ent.QI_WAIT: InvalidationQueue._wait,
    ent.QI_PIOTLB: InvalidationQueue._piotlb,
    ent.QI_PC: InvalidationQueue._pc,
    ent.QI_PDEVTLB: InvalidationQueue._pdevtlb,
    ent.QI_PGRP: InvalidationQueue._pgrp,
}
