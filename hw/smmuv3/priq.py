"""The PRI queue (IHI 0070 §3.5.4, §4.6.2, §8.2; facts A4, C3 ``PRI_RESP``).

With IDR0.PRI, Page Request messages from PCIe functions (:class:`hw.pri.PageRequest`,
StreamID = requester ID, SubstreamID = PASID) are written to a ring in RAM located by
PRIQ_BASE (ADDR 51:5, LOG2SIZE 4:0 capped at IDR1.PRIQS) at PRIQ_PROD, 16 bytes each
(``PRIQ_0``: SID 31:0, SSID 51:32, Priv 58, Exec 59, Read 60, Write 61, Last 62,
SSV 63; ``PRIQ_1``: PRG index 8:0, page address 63:12), and the PRI interrupt is
raised (IRQ_CTRL.PRIQ_IRQEN; an MSI to PRIQ_IRQ_CFG0/1 or a wired pulse). Software
consumes up to PRIQ_PROD, moves PRIQ_CONS and answers each group with CMD_PRI_RESP
(RESP 0 Deny, 1 Fail, 2 Success), which the SMMU sends to the function as a PRG
Response (Invalid Request, Response Failure, Success).

Where the model reads the spec (marked unverified):

- a full queue loses the request and toggles PRIQ_PROD.OVFLG once per overflow (until
  software copies it into PRIQ_CONS.OVACKFLG); a lost request that ends its group is
  answered Success, so the function asks again later (as VT-d's queue does);
- with PRIQEN=0 (or no IDR0.PRI) requests are not recorded and the last of a group is
  answered Response Failure;
- a write of an entry outside RAM toggles GERROR.PRIQ_ABT_ERR and loses the entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.memory import BusError
from hw.pri import PRG_RESP_FAILURE, PRG_RESP_INVALID, PRG_RESP_SUCCESS, PageRequest
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr

if TYPE_CHECKING:
    from hw.pci import PciFunction
    from hw.smmuv3.unit import Smmuv3Unit

PRIQ_DELAY_NS = 100
"""Time from a Page Request message to its entry being visible in the PRI queue."""

RESP_TO_PRG = {
    ent.PRI_RESP_SUCC: PRG_RESP_SUCCESS,
    ent.PRI_RESP_DENY: PRG_RESP_INVALID,
    ent.PRI_RESP_FAIL: PRG_RESP_FAILURE,
}
"""CMD_PRI_RESP codes as PCIe PRG Response codes."""


def encode_priq_entry(req: PageRequest) -> tuple[int, int]:
    """The two words of the PRI queue entry for ``req``."""
    e0, e1 = ent.PriqEnt0, ent.PriqEnt1
    dw0 = e0.SID.put(0, req.rid)
    if req.pasid is not None:
        dw0 = e0.SSID_V.put(e0.SSID.put(dw0, req.pasid), 1)
    dw0 = e0.PERM_PRIV.put(dw0, int(req.priv))
    dw0 = e0.PERM_EXEC.put(dw0, int(req.exe))
    dw0 = e0.PERM_READ.put(dw0, int(req.read))
    dw0 = e0.PERM_WRITE.put(dw0, int(req.write))
    dw0 = e0.PRG_LAST.put(dw0, int(req.last))
    dw1 = e1.PRG_IDX.put(0, req.prgi) | (req.addr & e1.ADDR.mask)
    return dw0, dw1


class PriQueue:
    """The PRI-queue producer and PRI response sender of one SMMU."""

    def __init__(self, unit: Smmuv3Unit) -> None:
        self.unit = unit
        self.received = 0
        self.written = 0
        self.lost = 0
        self.refused = 0
        self.responses = 0
        self._fns: dict[int, PciFunction | None] = {}

    def geometry(self) -> tuple[int, int]:
        base = self.unit.regs["PRIQ_BASE"]
        log2size = min(sr.QBASE.LOG2SIZE.get(base), self.unit.cfg.priqs)
        addr = base & sr.QBASE.ADDR.mask & ~((ent.PRIQ_ENT_SIZE << log2size) - 1)
        return addr, log2size

    def receive(self, req: PageRequest) -> None:
        """A Page Request message arrives."""
        u = self.unit
        self.received += 1
        u.emit("hw_smmuv3:page_request", sid=req.rid, ssid=req.pasid, addr=req.addr, prgi=req.prgi)
        u.m.clock.schedule(PRIQ_DELAY_NS, lambda: self._arrive(req), f"{u.name}:priq")

    def _arrive(self, req: PageRequest) -> None:
        u = self.unit
        if not u.cfg.pri or not u.priq_enabled:
            self.refused += 1
            if req.last:
                self.send_response(req.rid, req.prgi, PRG_RESP_FAILURE, req.pasid)
            return
        base, log2size = self.geometry()
        mask = (1 << (log2size + 1)) - 1
        prod_reg, cons_reg = u.regs["PRIQ_PROD"], u.regs["PRIQ_CONS"]
        prod, cons = prod_reg & mask, cons_reg & mask
        if (prod ^ cons) == 1 << log2size:  # full
            self.lost += 1
            ovf = sr.PRIQ_PROD.OVFLG.get(prod_reg)
            if ovf == sr.PRIQ_CONS.OVACKFLG.get(cons_reg):
                u.regs.field("PRIQ_PROD", sr.PRIQ_PROD.OVFLG, ovf ^ 1)
            if req.last:
                self.send_response(req.rid, req.prgi, PRG_RESP_SUCCESS, req.pasid)
            u.irq("PRIQ")
            return
        addr = base + (prod & ((1 << log2size) - 1)) * ent.PRIQ_ENT_SIZE
        dw0, dw1 = encode_priq_entry(req)
        try:
            u.m.memory.write(addr, dw0.to_bytes(8, "little") + dw1.to_bytes(8, "little"))
        except BusError:
            self.lost += 1
            u.raise_gerror(sr.GERROR_PRIQ_ABT_ERR)
            return
        u.regs.field("PRIQ_PROD", sr.PRIQ_PROD.WR, (prod + 1) & mask)
        self.written += 1
        u.irq("PRIQ")

    # -- responses ------------------------------------------------------------------------
    def command(self, dw0: int, dw1: int) -> bool:
        """CMD_PRI_RESP; False for a reserved response code (the command is illegal)."""
        resp = ent.CmdPriResp1.RESP.get(dw1)
        code = RESP_TO_PRG.get(resp)
        if code is None:
            return False
        c0 = ent.CmdPriResp0
        pasid = c0.SSID.get(dw0) if c0.SSV.get(dw0) else None
        self.responses += 1
        self.send_response(c0.SID.get(dw0), ent.CmdPriResp1.GRPID.get(dw1), code, pasid)
        return True

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

    def send_response(self, rid: int, prgi: int, code: int, pasid: int | None) -> None:
        """A PRG Response message to the function with requester ID ``rid``."""
        self.unit.emit("hw_smmuv3:prg_response", sid=rid, prgi=prgi, code=code, ssid=pasid)
        fn = self._function(rid)
        if fn is not None and fn.pri is not None:
            fn.pri.response(prgi, code, pasid)
