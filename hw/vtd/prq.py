"""The page request queue (VT-d spec 7.5-7.10, 10.4.29-10.4.35; facts A1, A9, A12).

Page Request messages from the functions behind the unit (:class:`hw.pri.PageRequest`)
arrive :data:`PR_TRANSIT_NS` after the function sent them, and are then checked and
written to the queue in RAM:

- the queue is PQA (base, 2**PQS pages) with head PQH and tail PQT as byte offsets of
  32-byte page request descriptors (qw0: type 1 in 7:0, PASID present 8, RID 31:16,
  PASID 51:32, Execute 52, Privileged 53; qw1: Read 0, Write 1, LPIG 2, PRG index 11:3,
  page address 63:12; qw2/qw3 private data, zero here);
- with remapping on, the requester's context entry must be present with PRE=1, else
  the request is refused: fault SCT.8 (0x47, honouring FPD; a context fault instead
  when the entry itself faults) and, for the last request of a group, an automatic
  Invalid Request response;
- a full queue (PQT one descriptor behind PQH) or PRS.PRO already set: PRS.PRO is set
  (with an event) and the request is dropped; the last request of a group gets an
  automatic Success response, so the function retries its translation and asks again
  once software has made room and cleared PRO;
- otherwise the descriptor is written, PQT advances and, if PRS.PPR was clear, PPR is
  set and the page request event is signalled (PECTL IM/IP, PEDATA/PEADDR/PEUADDR).

Page group responses come through the invalidation queue (descriptor type 9) and go to
the function named by RID as a PRG Response message (:meth:`hw.pri.PriPort.response`);
an invalidation wait with PD=1 (ECAP.PDS) completes only after every page request
received before it has been written to the queue (:attr:`in_transit` is 0). A unit
without ECAP.PRS answers every page request with Response Failure (the model's
reading of an unsupported request); the model takes page requests in scalable mode only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.memory import BusError
from hw.pri import PRG_RESP_FAILURE, PRG_RESP_INVALID, PRG_RESP_SUCCESS, PageRequest
from hw.regs import RegSlot
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from hw.vtd.faults import FR, TranslationFault

if TYPE_CHECKING:
    from hw.pci import PciFunction
    from hw.vtd.unit import VtdUnit

PR_TRANSIT_NS = 500
"""Time from a function sending a Page Request to the unit writing it to the queue."""
PRQ_DESC_SIZE = 32
PRQ_DESC_TYPE = 1


def encode_page_request(req: PageRequest) -> tuple[int, int]:
    """qw0 and qw1 of the page request descriptor for ``req``."""
    qw0 = PRQ_DESC_TYPE | (req.rid << 16)
    if req.pasid is not None:
        qw0 |= 1 << 8 | req.pasid << 32 | int(req.exe) << 52 | int(req.priv) << 53
    qw1 = int(req.read) | int(req.write) << 1 | int(req.last) << 2 | req.prgi << 3
    return qw0, qw1 | (req.addr & ~0xFFF)


class PageRequestQueue:
    """The page request side of one unit."""

    def __init__(self, unit: VtdUnit) -> None:
        self.unit = unit
        self.in_transit = 0
        """Page requests received but not yet written to the queue (or refused)."""
        self.received = 0
        self.written = 0
        self.overflows = 0
        self.refused = 0
        self.responses = 0
        self._fns: dict[int, PciFunction | None] = {}

    # -- receiving ------------------------------------------------------------------------
    def receive(self, req: PageRequest) -> None:
        """A Page Request message arrives at the unit."""
        unit = self.unit
        self.received += 1
        self.in_transit += 1
        unit.emit(
            "hw_vtd:page_request",
            rid=req.rid,
            pasid=req.pasid,
            addr=req.addr,
            prgi=req.prgi,
            write=req.write,
        )
        unit.m.clock.schedule(PR_TRANSIT_NS, lambda: self._arrive(req), f"{unit.name}:prq")

    def _arrive(self, req: PageRequest) -> None:
        self.in_transit -= 1
        try:
            self._accept(req)
        finally:
            if not self.in_transit:
                self.unit.qi.resume()

    def _accept(self, req: PageRequest) -> None:
        unit = self.unit
        if not unit.cfg.page_requests:
            self.refused += 1
            self._respond(req.rid, req.prgi, PRG_RESP_FAILURE, req.pasid)
            return
        if unit.te and not self._allowed(req):
            self.refused += 1
            if req.last:
                self._respond(req.rid, req.prgi, PRG_RESP_INVALID, req.pasid)
            return
        regs = unit.regs
        size, base = self._geometry()
        head = regs["PQH"] & vr.PQH.PQH.mask
        tail = regs["PQT"] & vr.PQT.PQT.mask
        nxt = (tail + PRQ_DESC_SIZE) % size if size else head
        if regs.field("PRS", vr.PRS.PRO) or nxt == head or tail >= size:
            self._overflow(req)
            return
        qw0, qw1 = encode_page_request(req)
        try:
            unit.m.memory.write_u64s(base + tail, (qw0, qw1, 0, 0))
        except BusError:
            self._overflow(req)  # the queue is not in RAM: nothing can be recorded
            return
        self.written += 1
        regs["PQT"] = nxt
        unit.emit("hw_vtd:prq_write", slot=tail // PRQ_DESC_SIZE, qw0=qw0, qw1=qw1)
        if not regs.field("PRS", vr.PRS.PPR):
            regs.field("PRS", vr.PRS.PPR, 1)
            self.event()

    def _geometry(self) -> tuple[int, int]:
        pqa = self.unit.regs["PQA"]
        return 4096 << vr.PQA.PQS.get(pqa), pqa & ~0xFFF

    def _allowed(self, req: PageRequest) -> bool:
        """The context entry must be present with PRE=1 (fault SCT.8 otherwise)."""
        unit = self.unit
        try:
            ce = unit.xlate.ctx_cached(req.rid, [False])
        except TranslationFault as f:
            unit.fault(req.rid, req.pasid, req.priv, req.exe, req.addr, req.write, f.reason, f.fpd)
            return False
        if ce.info.scalable and ce.info.pre:
            return True
        unit.fault(
            req.rid,
            req.pasid,
            req.priv,
            req.exe,
            req.addr,
            req.write,
            FR.SM_PRE_ABSENT,
            ce.info.fpd,
        )
        return False

    def _overflow(self, req: PageRequest) -> None:
        unit = self.unit
        self.overflows += 1
        unit.emit("hw_vtd:prq_overflow", rid=req.rid, prgi=req.prgi)
        if not unit.regs.field("PRS", vr.PRS.PRO):
            unit.regs.field("PRS", vr.PRS.PRO, 1)
            self.event()
        if req.last:
            self._respond(req.rid, req.prgi, PRG_RESP_SUCCESS, req.pasid)

    # -- events ------------------------------------------------------------------------
    def event(self) -> None:
        """The page request event (PECTL: IM masks, IP records a masked event)."""
        regs = self.unit.regs
        if regs.field("PECTL", vr.EventControl.IM):
            regs.field("PECTL", vr.EventControl.IP, 1)
            return
        regs.field("PECTL", vr.EventControl.IP, 0)
        self.unit.m.msi(regs["PEADDR"] | (regs["PEUADDR"] << 32), regs["PEDATA"])

    def pectl_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        regs = self.unit.regs
        if not regs.field("PECTL", vr.EventControl.IM) and regs.field("PECTL", vr.EventControl.IP):
            self.event()

    def prs_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not slot.value & (vr.PRS.PPR.mask | vr.PRS.PRO.mask):
            self.unit.regs.field("PECTL", vr.EventControl.IP, 0)

    # -- responses ---------------------------------------------------------------------
    def group_response(self, qw0: int, qw1: int) -> None:
        """QI type 9: a page group response to the function named by RID."""
        f, f1 = ent.QiPgrpQw0, ent.QiPgrpQw1
        pasid = f.PASID.get(qw0) if f.PP.get(qw0) else None
        self.responses += 1
        self._respond(f.RID.get(qw0), f1.PRGI.get(qw1), f.RC.get(qw0), pasid)

    def _function(self, rid: int) -> PciFunction | None:
        try:
            return self._fns[rid]
        except KeyError:
            m = self.unit.m
            fn = next(
                (f for a, f in m.functions.items() if a.rid == rid and m.iommu_for(a) is self.unit),
                None,
            )
            self._fns[rid] = fn
            return fn

    def _respond(self, rid: int, prgi: int, code: int, pasid: int | None) -> None:
        self.unit.emit("hw_vtd:prg_response", rid=rid, prgi=prgi, code=code, pasid=pasid)
        fn = self._function(rid)
        if fn is not None and fn.pri is not None:
            fn.pri.response(prgi, code, pasid)
