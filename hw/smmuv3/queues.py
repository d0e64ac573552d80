"""Command queue and event queue engines (IHI 0070 chapter 3.5, 4, 7; facts A3, A4, A8).

Both queues are rings in RAM located by a ``*_BASE`` register (ADDR 51:5, LOG2SIZE
4:0, capped at IDR1.CMDQS/EVTQS) with producer/consumer registers whose bit LOG2SIZE
is the wrap bit: empty when index and wrap are equal, full when the index is equal and
the wrap differs.

Commands: a CMDQ_PROD write (or the queue being enabled, or a command error being
acknowledged) schedules a clock event that consumes commands from CMDQ_CONS up to
CMDQ_PROD. An unknown opcode, a reserved field set, or a command for a feature the
SMMU lacks stops the queue with CMDQ_CONS.ERR = CERROR_ILL and GERROR.CMDQ_ERR
toggled, CONS left on the offending entry; a fetch outside RAM gives CERROR_ABT.
Software acknowledges by copying GERROR.CMDQ_ERR into GERRORN, after which
consumption resumes at CONS (Linux ``arm_smmu_cmdq_skip_err`` first overwrites the
entry with a CMD_SYNC; software may instead disable the queue and move CMDQ_CONS).

Events: the translation path posts records; a clock event writes them at EVTQ_PROD
(if EVTQEN), toggling EVTQ_PROD.OVFLG when a record is lost to a full queue (once per
overflow, until software copies it into EVTQ_CONS.OVACKFLG), and raises the event
interrupt. A record write outside RAM toggles GERROR.EVTQ_ABT_ERR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.memory import BusError
from hw.regs import Register
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.entries import Op

if TYPE_CHECKING:
    from hw.smmuv3.unit import Smmuv3Unit

CMDQ_DELAY_NS = 200
"""Time from a CMDQ_PROD write (or resume) to the commands being consumed."""
EVTQ_DELAY_NS = 50
"""Time from a fault to its record being visible in the event queue."""


class _IllegalCommand(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


LAYOUTS: dict[int, tuple[type[Register], type[Register]]] = {
    Op.PREFETCH_CONFIG: (ent.CmdPrefetchCfg0, ent.CmdEmpty),
    Op.PREFETCH_ADDR: (ent.CmdPrefetchCfg0, ent.CmdPrefetchAddr1),
    Op.CFGI_STE: (ent.CmdCfgiSte0, ent.CmdCfgiLeaf1),
    Op.CFGI_STE_RANGE: (ent.CmdCfgiSte0, ent.CmdCfgiRange1),
    Op.CFGI_CD: (ent.CmdCfgiCd0, ent.CmdCfgiLeaf1),
    Op.CFGI_CD_ALL: (ent.CmdCfgiSte0, ent.CmdEmpty),
    Op.TLBI_NH_ALL: (ent.CmdTlbiVmid0, ent.CmdEmpty),
    Op.TLBI_NH_ASID: (ent.CmdTlbiAsid0, ent.CmdEmpty),
    Op.TLBI_NH_VA: (ent.CmdTlbi0, ent.CmdTlbiVa1),
    Op.TLBI_NH_VAA: (ent.CmdTlbiVaa0, ent.CmdTlbiVa1),
    Op.TLBI_NSNH_ALL: (ent.CmdOp, ent.CmdEmpty),
    Op.CMD_SYNC: (ent.CmdSync0, ent.CmdSync1),
}
"""Commands this SMMU accepts (facts C3). EL2 forms need IDR0.HYP, S2 forms IDR0.S2P,
ATC_INV IDR0.ATS, PRI_RESP IDR0.PRI, RESUME/STALL_TERM a stall model: what the
unit does not advertise is CERROR_ILL like an unknown opcode."""

PRI_LAYOUT: tuple[type[Register], type[Register]] = (ent.CmdPriResp0, ent.CmdPriResp1)

S2_LAYOUTS: dict[int, tuple[type[Register], type[Register]]] = {
    Op.TLBI_S12_VMALL: (ent.CmdTlbiVmid0, ent.CmdEmpty),
    Op.TLBI_S2_IPA: (ent.CmdTlbiVaa0, ent.CmdTlbiVa1),
}
"""The stage-2 TLB invalidations, accepted only by an SMMU with IDR0.S2P."""
"""CMD_PRI_RESP, accepted only by an SMMU with IDR0.PRI."""


def _index_mask(log2size: int) -> int:
    return (1 << (log2size + 1)) - 1


def _advance(ptr: int, log2size: int) -> int:
    return (ptr + 1) & _index_mask(log2size)


def _full(prod: int, cons: int, log2size: int) -> bool:
    size = 1 << log2size
    return (prod ^ cons) == size


class CommandQueue:
    """The command-queue consumer of one SMMU."""

    def __init__(self, unit: Smmuv3Unit) -> None:
        self.unit = unit
        self._scheduled = False

    def geometry(self) -> tuple[int, int]:
        """(base address, LOG2SIZE) from CMDQ_BASE (LOG2SIZE capped at IDR1.CMDQS)."""
        base = self.unit.regs["CMDQ_BASE"]
        log2size = min(sr.QBASE.LOG2SIZE.get(base), self.unit.cfg.cmdqs)
        addr = base & sr.QBASE.ADDR.mask & ~((16 << log2size) - 1)
        return addr, log2size

    def kick(self) -> None:
        u = self.unit
        if u.cmdq_enabled and not u.gerror_active(sr.GERROR.CMDQ_ERR.mask) and not self._scheduled:
            self._scheduled = True
            u.m.clock.schedule(CMDQ_DELAY_NS, self.process, f"{u.name}:cmdq")

    def process(self) -> None:
        """Consume commands from CONS to PROD; stop at the first illegal one."""
        self._scheduled = False
        u = self.unit
        if not u.cmdq_enabled or u.gerror_active(sr.GERROR.CMDQ_ERR.mask):
            return
        base, log2size = self.geometry()
        mask = _index_mask(log2size)
        prod = u.regs["CMDQ_PROD"] & mask
        cons = u.regs["CMDQ_CONS"] & mask
        while cons != prod:
            addr = base + (cons & ((1 << log2size) - 1)) * ent.CMD_SIZE
            try:
                self._execute(addr)
            except _IllegalCommand as err:
                u.stats.cmd_errors += 1
                u.regs.field("CMDQ_CONS", sr.CMDQ_CONS.ERR, err.code)
                u.raise_gerror(sr.GERROR.CMDQ_ERR.mask)
                return
            cons = _advance(cons, log2size)
            u.regs.field("CMDQ_CONS", sr.CMDQ_CONS.RD, cons)

    def _execute(self, addr: int) -> None:
        u = self.unit
        try:
            raw = u.m.memory.read(addr, ent.CMD_SIZE)
        except BusError:
            raise _IllegalCommand(sr.CERROR_ABT) from None
        dw0 = int.from_bytes(raw[0:8], "little")
        dw1 = int.from_bytes(raw[8:16], "little")
        op = dw0 & 0xFF
        layout = LAYOUTS.get(op)
        if op == Op.PRI_RESP and u.cfg.pri:
            layout = PRI_LAYOUT
        elif u.cfg.s2p and op in S2_LAYOUTS:
            layout = S2_LAYOUTS[op]
        if layout is None or dw0 & layout[0].RSVDZ_MASK or dw1 & layout[1].RSVDZ_MASK:
            raise _IllegalCommand(sr.CERROR_ILL)
        u.stats.commands += 1
        u.emit("hw_smmuv3:command", op=Op(op).name, dw=(dw0, dw1))
        if op == Op.CMD_SYNC:
            self._sync(dw0, dw1)
        elif op == Op.PRI_RESP:
            if not u.priq.command(dw0, dw1):
                raise _IllegalCommand(sr.CERROR_ILL)
        else:
            u.invalidate(Op(op), dw0, dw1)

    def _sync(self, dw0: int, dw1: int) -> None:
        """CMD_SYNC: every earlier command has completed (they complete at once here);
        signal per CS: 1 = MSI write of MSIData to MSIAddr (when IDR0.MSI and the address
        is not 0), 2 = SEV, 3 is reserved (CERROR_ILL)."""
        u = self.unit
        cs = ent.CmdSync0.CS.get(dw0)
        if cs == 3:
            raise _IllegalCommand(sr.CERROR_ILL)
        u.stats.syncs += 1
        if cs == ent.SYNC_CS_SEV:
            u.stats.sev += 1
        elif cs == ent.SYNC_CS_IRQ:
            target = dw1 & ent.CmdSync1.MSIADDR.mask
            if u.cfg.msi and target:
                u.msi_write(target, ent.CmdSync0.MSIDATA.get(dw0))


class EventQueue:
    """The event-queue producer of one SMMU."""

    def __init__(self, unit: Smmuv3Unit) -> None:
        self.unit = unit
        self.pending: list[tuple[int, int, int, int]] = []
        self._scheduled = False

    def geometry(self) -> tuple[int, int]:
        base = self.unit.regs["EVTQ_BASE"]
        log2size = min(sr.QBASE.LOG2SIZE.get(base), self.unit.cfg.evtqs)
        addr = base & sr.QBASE.ADDR.mask & ~((32 << log2size) - 1)
        return addr, log2size

    def post(self, record: tuple[int, int, int, int]) -> None:
        u = self.unit
        if not u.evtq_enabled:
            u.stats.events_dropped += 1
            return
        self.pending.append(record)
        if not self._scheduled:
            self._scheduled = True
            u.m.clock.schedule(EVTQ_DELAY_NS, self.flush, f"{u.name}:evtq")

    def flush(self) -> None:
        """Write pending records; lose them to a full queue (OVFLG) or a disabled one."""
        self._scheduled = False
        u = self.unit
        records, self.pending = self.pending, []
        if not u.evtq_enabled:
            u.stats.events_dropped += len(records)
            return
        base, log2size = self.geometry()
        mask = _index_mask(log2size)
        written = 0
        for rec in records:
            prod_reg = u.regs["EVTQ_PROD"]
            cons_reg = u.regs["EVTQ_CONS"]
            prod, cons = prod_reg & mask, cons_reg & mask
            if _full(prod, cons, log2size):
                u.stats.events_lost += 1
                ovf = sr.EVTQ_PROD.OVFLG.get(prod_reg)
                if ovf == sr.EVTQ_CONS.OVACKFLG.get(cons_reg):
                    u.regs.field("EVTQ_PROD", sr.EVTQ_PROD.OVFLG, ovf ^ 1)
                continue
            addr = base + (prod & ((1 << log2size) - 1)) * ent.EVT_SIZE
            data = b"".join(w.to_bytes(8, "little") for w in rec)
            try:
                u.m.memory.write(addr, data)
            except BusError:
                u.stats.events_lost += 1
                u.raise_gerror(sr.GERROR.EVTQ_ABT_ERR.mask)
                return
            u.regs.field("EVTQ_PROD", sr.EVTQ_PROD.WR, _advance(prod, log2size))
            u.stats.events += 1
            written += 1
        if written:
            u.irq("EVTQ")
