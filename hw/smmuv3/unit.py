"""One ARM SMMUv3 (an IORT SMMUv3 node): registers, translation, caches, queues.

Behaviour follows IHI 0070 as summarised in the facts file part A, in the shape of
QEMU ``hw/arm/smmuv3.c`` (``smmuv3_translate``, ``smmuv3_cmdq_consume``,
``smmuv3_write_eventq``) and of what Linux ``arm-smmu-v3.c`` expects
(``arm_smmu_device_reset``, ``arm_smmu_cmdq_issue_cmdlist``, ``arm_smmu_evtq_thread``,
``arm_smmu_gerror_handler``). Where it differs from QEMU: substreams (CD tables,
S1DSS), queue processing and register acknowledgements as clock events, caches that
are never silently reset, and stale-use detection naming the missing command.

Facts the facts file left unverified, settled from the IHI 0070 text (§5.2 STE, §5.3
L1CD, §5.4 CD, §4.3 CFGI):

- S1DSS=0b00 (terminate) aborts non-substream traffic with F_STREAM_DISABLED;
  S1DSS=0b10 makes SubstreamID 0 unavailable: SSV=1/SSID=0 is aborted with
  F_STREAM_DISABLED (neither C_BAD_SUBSTREAMID nor success). 0b11 behaves as 0b00.
- CFGI_STE (and CFGI_STE_RANGE/CFGI_ALL) also invalidates every CD and L1CD cached
  through that StreamID.
- An L1CD with V=0 gives C_BAD_SUBSTREAMID (not C_BAD_CD).
- CD bits 35-40 are AFFD, WXN, UWXN, TBI0, TBI1, PAN. AFFD=1 suppresses F_ACCESS;
  PAN=1 makes privileged access to an EL0-accessible page an F_PERMISSION; WXN/UWXN
  only affect instruction fetches, which DMA never is.
- CD.A=0 (with IDR0.TERM_MODEL=0) terminates a faulting transaction RAZ/WI instead of
  aborting it; CD.R=0 suppresses the record. Both only for translation-related faults.
- F_ADDR_SIZE: a table or output address at or above the effective IPS
  (min(CD.IPS, IDR5.OAS)), or descriptor bits 51:48 set with a 48-bit output; a TTBx
  outside the effective IPS makes the CD ILLEGAL (C_BAD_CD).
- STE.Config 0b000 (and the reserved 0b0xx) aborts without recording an event.

Stage 2 and nesting (IDR0.S2P; IHI 0070 §3.3, §5.2, §7.3; QEMU 9.x ``smmuv3_translate``
with ``SMMU_NESTED``): Config 0b110 translates the input as an IPA through stage 2
alone (no SubstreamID: C_BAD_SUBSTREAMID), 0b111 walks the CD and stage-1 tables at
IPAs through stage 2 and the stage-1 output through stage 2. A stage-2 fault is
recorded with S2=1, its class (CD fetch, table walk, input) and the IPA, when
STE.S2R=1. The TLB holds the combined translation (tag (VMID, ASID)) or the stage-2
one (tag (VMID, S2_ONLY)); TLBI_S2_IPA removes only the latter, TLBI_S12_VMALL both.
A write to a DBM page under CD.HD/STE.S2HD re-walks and makes it writable (dirty)
instead of faulting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from attrs import define

from hw.bus import DmaFault, DmaResult, Finding, dma_result
from hw.iommu_unit import AttachedPart, IommuUnitModel
from hw.pri import PageRequest
from hw.regs import RegisterFile, RegSlot
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.caches import GLOBAL, S2_ONLY, Caches, CdEntry, Sel, SteEntry
from hw.smmuv3.config import REGISTER_SIZE, Smmuv3Config
from hw.smmuv3.entries import TRANSLATION_FAULTS, Evt, Op
from hw.smmuv3.findings import fault_finding, stale_finding
from hw.smmuv3.priq import PriQueue
from hw.smmuv3.queues import CommandQueue, EventQueue
from hw.smmuv3.slow_path import LOST_DIRTY, S1MissPath, TlbSlowPath, fill_ahead, tlbi_for
from hw.smmuv3.walk import (
    PERM_DBM,
    PERM_NU,
    PERM_R,
    PERM_W,
    CdInfo,
    NestedLeaf,
    SmmuFault,
    StreamInfo,
    Walker,
    permission_ok,
)
from hw.translation import (
    NEVER,
    Pipeline,
    PipelineStats,
    TagCache,
    TlbEntry,
    translate_page,
    translate_run,
)

if TYPE_CHECKING:
    from hw.machine import Machine

SSID_MASK = (1 << 20) - 1
"""An event record's SSID field is 20 bits (the widest SubstreamID, IDR1.SSIDSIZE);
a transaction tagged wider (only a model can make one) is recorded with its low bits."""

ACK_DELAY_NS = 100
"""Time between a CR0/IRQ_CTRL/GBPA write and its acknowledgement."""


@define(slots=True)
class Smmuv3Stats(PipelineStats):
    """Counters for tests, benchmarks and the CLI (TLB hits/misses and stale uses are
    the shared pipeline's; :attr:`tlb_hits`/:attr:`tlb_misses` name them as the SMMU
    does)."""

    ste_hits: int = 0
    ste_misses: int = 0
    cd_hits: int = 0
    cd_misses: int = 0
    stale_uses: int = 0
    faults: int = 0
    faults_suppressed: int = 0
    events: int = 0
    events_lost: int = 0
    events_dropped: int = 0
    commands: int = 0
    cmd_errors: int = 0
    syncs: int = 0
    sev: int = 0
    invalidations: int = 0

    @property
    def tlb_hits(self) -> int:
        return self.iotlb_hits

    @property
    def tlb_misses(self) -> int:
        return self.iotlb_misses


class Smmuv3Unit(IommuUnitModel):
    """An SMMUv3: ``Smmuv3Unit(name, config)`` then ``attach(machine, base)``.

    The StreamID of a transaction is its requester ID and the SubstreamID its PASID
    (SSV=1 when a PASID is given), as with an identity IORT ID mapping.
    """

    table = "IORT"
    register_size = REGISTER_SIZE
    _w: Walker
    _c: Caches
    _p: Pipeline
    _m: Machine
    _stes: dict[int, SteEntry]
    _iotlb: TagCache
    """Bound at attach for the translation path (the public parts raise before)."""
    pipeline = AttachedPart[Pipeline]()
    walker = AttachedPart[Walker]()
    caches = AttachedPart[Caches]()

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name)
        self.cfg = Smmuv3Config.from_mapping(config)
        self.stats = Smmuv3Stats()
        self.wired_irqs: dict[str, int] = {"EVTQ": 0, "GERROR": 0, "PRIQ": 0}
        """Pulses of the wired interrupt lines, used when MSIs are off or unprogrammed."""
        self.smmuen = False
        self.cmdq_enabled = False
        self.evtq_enabled = False
        self.priq_enabled = False
        self.gbpa_abort = False
        self.regs = self._build_regs()
        self.cmdq = CommandQueue(self)
        self.evtq = EventQueue(self)
        self.priq = PriQueue(self)

    # -- wiring ------------------------------------------------------------------------
    def _build_regs(self) -> RegisterFile:
        cfg = self.cfg
        rf = RegisterFile(self.name, REGISTER_SIZE)
        rf.add(sr.IDR0, sr.IDR0_OFF, reset=cfg.idr0())
        rf.add(sr.IDR1, sr.IDR1_OFF, reset=cfg.idr1())
        rf.add(sr.ReadOnly32, sr.IDR2_OFF, name="IDR2")
        rf.add(sr.IDR3, sr.IDR3_OFF, reset=cfg.idr3())
        rf.add(sr.ReadOnly32, sr.IDR4_OFF, name="IDR4")
        rf.add(sr.IDR5, sr.IDR5_OFF, reset=cfg.idr5())
        rf.add(sr.ReadOnly32, sr.IIDR_OFF, name="IIDR", reset=cfg.iidr)
        rf.add(sr.ReadOnly32, sr.AIDR_OFF, name="AIDR", reset=cfg.aidr)
        rf.add(sr.CR0, sr.CR0_OFF, on_write=self._cr0_write)
        rf.add(sr.CR0ACK, sr.CR0ACK_OFF)
        rf.add(sr.CR1, sr.CR1_OFF)
        rf.add(sr.CR2, sr.CR2_OFF)
        rf.add(sr.ReadOnly32, sr.STATUSR_OFF, name="STATUSR")
        rf.add(sr.GBPA, sr.GBPA_OFF, on_write=self._gbpa_write)
        rf.add(sr.ReadOnly32, sr.AGBPA_OFF, name="AGBPA")
        rf.add(sr.IRQ_CTRL, sr.IRQ_CTRL_OFF, on_write=self._irq_ctrl_write)
        rf.add(sr.IRQ_CTRLACK, sr.IRQ_CTRLACK_OFF)
        rf.add(sr.GERROR, sr.GERROR_OFF)
        rf.add(sr.GERRORN, sr.GERRORN_OFF, on_write=self._gerrorn_write)
        rf.add(sr.IrqCfg0, sr.GERROR_IRQ_CFG0_OFF, name="GERROR_IRQ_CFG0")
        rf.add(sr.IrqCfg1, sr.GERROR_IRQ_CFG1_OFF, name="GERROR_IRQ_CFG1")
        rf.add(sr.IrqCfg2, sr.GERROR_IRQ_CFG2_OFF, name="GERROR_IRQ_CFG2")
        rf.add(sr.STRTAB_BASE, sr.STRTAB_BASE_OFF, on_write=self._table_write)
        rf.add(sr.STRTAB_BASE_CFG, sr.STRTAB_BASE_CFG_OFF, on_write=self._table_write)
        rf.add(sr.QBASE, sr.CMDQ_BASE_OFF, name="CMDQ_BASE", on_write=self._cmdq_reg_write)
        rf.add(sr.CMDQ_PROD, sr.CMDQ_PROD_OFF, on_write=self._cmdq_prod_write)
        rf.add(sr.CMDQ_CONS, sr.CMDQ_CONS_OFF, on_write=self._cmdq_reg_write)
        rf.add(sr.QBASE, sr.EVTQ_BASE_OFF, name="EVTQ_BASE", on_write=self._evtq_reg_write)
        rf.add(sr.IrqCfg0, sr.EVTQ_IRQ_CFG0_OFF, name="EVTQ_IRQ_CFG0")
        rf.add(sr.IrqCfg1, sr.EVTQ_IRQ_CFG1_OFF, name="EVTQ_IRQ_CFG1")
        rf.add(sr.IrqCfg2, sr.EVTQ_IRQ_CFG2_OFF, name="EVTQ_IRQ_CFG2")
        rf.add(sr.EVTQ_PROD, sr.EVTQ_PROD_OFF, on_write=self._evtq_reg_write)
        rf.add(sr.EVTQ_CONS, sr.EVTQ_CONS_OFF)
        if cfg.pri:
            rf.add(sr.QBASE, sr.PRIQ_BASE_OFF, name="PRIQ_BASE", on_write=self._priq_reg_write)
            rf.add(sr.IrqCfg0, sr.PRIQ_IRQ_CFG0_OFF, name="PRIQ_IRQ_CFG0")
            rf.add(sr.IrqCfg1, sr.PRIQ_IRQ_CFG1_OFF, name="PRIQ_IRQ_CFG1")
            rf.add(sr.IrqCfg2, sr.PRIQ_IRQ_CFG2_OFF, name="PRIQ_IRQ_CFG2")
            rf.add(sr.PRIQ_PROD, sr.PRIQ_PROD_OFF, on_write=self._priq_reg_write)
            rf.add(sr.PRIQ_CONS, sr.PRIQ_CONS_OFF)
        return rf

    def attach(self, machine: Machine, base: int) -> None:
        """Called once by the Machine: RAM, clock and interrupt delivery become reachable."""
        self.machine = machine
        self.base = base
        p = Pipeline(machine.memory, self.stats, self.cfg.strict_stale, lambda: machine.clock.now)
        w = Walker(machine.memory, self.cfg)
        w.set_bits = p.deps.own_write
        c = Caches(p)
        self._w, self._c, self._p, self._m = w, c, p, machine
        self._stes, self._iotlb = c.ste, p.iotlb
        self.set_part("pipeline", p)
        self.set_part("walker", w)
        self.set_part("caches", c)

    # -- CR0/CR0ACK, IRQ_CTRL/ACK, GBPA (IHI 0070 §6.3.9-6.3.14; facts A3) -------------------
    def _cr0_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        value = slot.value
        unsupported = value & sr.CR0.ATSCHK.mask
        if not self.cfg.pri:
            unsupported |= value & sr.CR0.PRIQEN.mask
        if unsupported:
            self.error(f"CR0 write {value:#x}: PRIQEN/ATSCHK without PRI/ATS; ignored")
        self._schedule(ACK_DELAY_NS, lambda: self._cr0_done(value & ~unsupported), "cr0")

    def _cr0_done(self, value: int) -> None:
        """The enables take effect: queues start or stop, translation turns on or off.
        Caches are kept across SMMUEN changes; software invalidates them (CFGI_ALL,
        TLBI_NSNH_ALL) as Linux ``arm_smmu_device_reset`` does."""
        self.regs["CR0ACK"] = value
        self.smmuen = bool(value & sr.CR0.SMMUEN.mask)
        self.evtq_enabled = bool(value & sr.CR0.EVTQEN.mask)
        self.priq_enabled = bool(value & sr.CR0.PRIQEN.mask)
        was = self.cmdq_enabled
        self.cmdq_enabled = bool(value & sr.CR0.CMDQEN.mask)
        if self.cmdq_enabled and not was:
            self.cmdq.kick()

    def _irq_ctrl_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        mask = sr.IRQ_CTRL.GERROR_IRQEN.mask | sr.IRQ_CTRL.EVTQ_IRQEN.mask
        if self.cfg.pri:
            mask |= sr.IRQ_CTRL.PRIQ_IRQEN.mask
        value = slot.value & mask
        self._schedule(ACK_DELAY_NS, lambda: self.regs.__setitem__("IRQ_CTRLACK", value), "irq")

    def _gbpa_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        """GBPA takes a new value only through Update=1; it reads 1 until applied."""
        if not written & sr.GBPA.UPDATE.mask or old & sr.GBPA.UPDATE.mask:
            slot.value = old
            self.error(f"GBPA write {written:#x} without Update (or while updating); ignored")
            return

        def done() -> None:
            slot.value &= ~sr.GBPA.UPDATE.mask
            self.gbpa_abort = bool(slot.value & sr.GBPA.ABORT.mask)

        self._schedule(ACK_DELAY_NS, done, "gbpa")

    def _table_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if self.smmuen:
            slot.value = old
            self.error(f"{slot.name} written while SMMUEN=1; ignored")

    def _cmdq_reg_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if self.cmdq_enabled:
            slot.value = old
            self.error(f"{slot.name} written while CMDQEN=1; ignored")

    def _evtq_reg_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if self.evtq_enabled:
            slot.value = old
            self.error(f"{slot.name} written while EVTQEN=1; ignored")

    def _priq_reg_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if self.priq_enabled:
            slot.value = old
            self.error(f"{slot.name} written while PRIQEN=1; ignored")

    def _cmdq_prod_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        self.cmdq.kick()

    # -- global errors and interrupts (IHI 0070 §6.3.15-6.3.17, §3.18) -----------------------
    def gerror_active(self, bit: int) -> bool:
        return bool((self.regs["GERROR"] ^ self.regs["GERRORN"]) & bit)

    def raise_gerror(self, bit: int) -> None:
        """Toggle GERROR[bit] unless that error is already active, and interrupt."""
        if self.gerror_active(bit):
            return
        self.regs["GERROR"] = self.regs["GERROR"] ^ bit
        self.emit("hw_smmuv3:gerror", gerror=self.regs["GERROR"])
        self.irq("GERROR")

    def _gerrorn_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not self.gerror_active(sr.GERROR.CMDQ_ERR.mask):
            self.cmdq.kick()

    def irq(self, which: str) -> None:
        """Signal the EVTQ, PRIQ or GERROR interrupt if enabled (IRQ_CTRLACK): an MSI to
        ``*_IRQ_CFG0``/``CFG1`` when IDR0.MSI and the address is set, else a wired pulse."""
        en = {
            "EVTQ": sr.IRQ_CTRLACK.EVTQ_IRQEN,
            "PRIQ": sr.IRQ_CTRLACK.PRIQ_IRQEN,
        }.get(which, sr.IRQ_CTRLACK.GERROR_IRQEN)
        if not self.regs.field("IRQ_CTRLACK", en):
            return
        addr = self.regs[f"{which}_IRQ_CFG0"] & sr.IrqCfg0.ADDR.mask
        if self.cfg.msi and addr:
            self.m.msi(addr, self.regs[f"{which}_IRQ_CFG1"])
        else:
            self.wired_irqs[which] += 1

    def msi_write(self, addr: int, data: int) -> None:
        """A 32-bit MSI write: into RAM when it targets RAM (Linux's MSI-based CMD_SYNC
        polling), otherwise delivered as an interrupt message."""
        mem = self.m.memory
        if mem.contains(addr, 4):
            mem.write_u32(addr, data)
        else:
            self.m.msi(addr, data)

    def page_request(self, req: PageRequest) -> None:
        """A Page Request message from a function behind this SMMU (the PRI queue)."""
        self.priq.receive(req)

    # -- invalidation commands (IHI 0070 §4.3, §4.4) -----------------------------------------
    def invalidate(self, op: Op, dw0: int, dw1: int) -> int:
        """Execute one configuration or TLB invalidation (prefetches do nothing)."""
        c = self.caches
        if op in (Op.PREFETCH_CONFIG, Op.PREFETCH_ADDR):
            return 0
        self.stats.invalidations += 1
        if op == Op.CFGI_STE:
            return c.flush_ste(ent.CmdCfgiSte0.SID.get(dw0), 1)
        if op == Op.CFGI_STE_RANGE:
            span = 1 << (ent.CmdCfgiRange1.RANGE.get(dw1) + 1)
            first = ent.CmdCfgiSte0.SID.get(dw0) & ~(span - 1)
            return c.flush_ste(first, span)
        if op == Op.CFGI_CD:
            return c.flush_cd(ent.CmdCfgiCd0.SID.get(dw0), ent.CmdCfgiCd0.SSID.get(dw0))
        if op == Op.CFGI_CD_ALL:
            return c.flush_cd(ent.CmdCfgiSte0.SID.get(dw0), None)
        if op == Op.TLBI_NSNH_ALL:
            return c.flush_tlb(s2=True)
        vmid = ent.CmdTlbiVmid0.VMID.get(dw0)
        if op == Op.TLBI_NH_ALL:
            return c.flush_tlb(vmid=vmid)
        if op == Op.TLBI_S12_VMALL:
            return c.flush_tlb(vmid=vmid, s2=True)
        if op == Op.TLBI_NH_ASID:
            return c.flush_tlb(vmid=vmid, asid=ent.CmdTlbi0.ASID.get(dw0), global_too=False)
        addr, pages = self._tlbi_range(dw0, dw1)
        if op == Op.TLBI_NH_VA:
            return c.flush_tlb(vmid=vmid, asid=ent.CmdTlbi0.ASID.get(dw0), addr=addr, pages=pages)
        if op == Op.TLBI_S2_IPA:
            return c.flush_tlb(vmid=vmid, addr=addr, pages=pages, s1=False, s2=True)
        return c.flush_tlb(vmid=vmid, addr=addr, pages=pages)  # TLBI_NH_VAA

    def _tlbi_range(self, dw0: int, dw1: int) -> tuple[int, int]:
        """VA and 4 KiB page count: one page, or with IDR3.RIL and TG != 0 the range
        (NUM+1) * 2^SCALE pages of the TG granule (facts A8)."""
        addr = dw1 & ent.CmdTlbiVa1.ADDR.mask
        tg = ent.CmdTlbiVa1.TG.get(dw1)
        if not self.cfg.ril or tg == 0:
            return addr, 1
        num, scale = ent.CmdTlbi0.NUM.get(dw0), ent.CmdTlbi0.SCALE.get(dw0)
        granule_pages = 1 << (2 * (tg - 1))
        return addr, ((num + 1) << scale) * granule_pages

    # -- translation ---------------------------------------------------------------------
    def _strtab(self) -> tuple[int, int]:
        return self.regs["STRTAB_BASE"] & sr.STRTAB_BASE.ADDR.mask, self.regs["STRTAB_BASE_CFG"]

    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        """Translate a DMA request from StreamID ``rid`` (SubstreamID ``pasid``); returns
        the RAM runs of the translated prefix and the fault that stopped it
        (``reason`` = SMMU event id, :attr:`Evt.ABORT` for an abort without event).

        A request whose STE (and CD) entries are cached and clean takes the selection
        kept on the STE entry (:class:`~hw.smmuv3.caches.Sel`) straight to the
        pipeline; any other goes through :meth:`_translate_select`."""
        if size <= 0 or not self.smmuen:
            return self._translate_off(addr, size, write)
        se: SteEntry | None
        try:  # subscripts, not get calls: a miss takes the long way anyway
            se = self._stes[rid]
            sel = se.sels[pasid]
        except KeyError:
            se = None
        if se is None or se.suspect:
            return self._translate_select(rid, pasid, priv, addr, size, write)
        stats = self.stats
        cde = sel.cde
        if cde is not None:
            if cde.suspect:
                return self._translate_select(rid, pasid, priv, addr, size, write)
            stats.cd_hits += 1
        stats.ste_hits += 1
        slow = sel.slows[priv][write]  # (indexed by the bools: no integer operation)
        if slow is None:
            slow = sel.slows[priv][write] = self._slow_path(rid, pasid, priv, write, sel)
        one = (off := addr & 0xFFF) + size <= 4096  # (addr is often a two-digit int)
        if one and slow.__class__ is S1MissPath:
            # One page with nothing cached for it under the selection's tag: walked
            # and filled straight (S1MissPath.fill) as the pipeline's miss would be;
            # anything fill leaves goes the general way below.
            tables, tag = self._iotlb.tables, sel.tag
            if tag not in tables or not (
                (t := tables[tag])[0].get(addr >> 12)
                or t[1].get(addr >> 21)
                or t[2].get(addr >> 30)
            ):
                e = slow.fill(addr)
                if e is not None:
                    return dma_result((((e.phys | off, size),), None))
        runs, fault, hits = (translate_page if one else translate_run)(
            self._iotlb,
            sel.tag,
            sel.root1 if (addr >> 55) & 1 else sel.root0,
            slow.need,
            True,
            addr,
            addr + size,
            write,
            slow,
        )
        stats.iotlb_hits += hits
        return dma_result((tuple(runs), fault))

    def _translate_off(self, addr: int, size: int, write: bool) -> DmaResult:
        """An empty request, or SMMUEN=0: nothing, a GBPA abort or bypass."""
        if size <= 0:
            return DmaResult(())
        if self.gbpa_abort:
            return DmaResult((), DmaFault(addr, int(Evt.ABORT), write, "GBPA.ABORT"))
        return self._untranslated(addr, size, write)

    def _slow_path(
        self, rid: int, pasid: int | None, priv: bool, write: bool, sel: Sel
    ) -> TlbSlowPath:
        """The slow path of a clean selection for one request kind: a stage-1 one over
        RAM in one piece walks a request's last page straight (:class:`S1MissPath`)."""
        if (
            sel.cd is not None
            and sel.ste.s2 is None
            and self._w.flat
            and not sel.needs[write | priv << 1] & PERM_NU
        ):
            return S1MissPath(self, rid, pasid, priv, write, sel)
        return TlbSlowPath(self, rid, pasid, priv, write, sel, ())

    def _translate_select(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        """The request's selection through the STE and CD caches (a miss fills them, a
        suspect entry is re-checked), then its pages; a clean selection is kept for
        the next request."""
        stale: list[str] = []
        used: list[CdEntry] = []
        try:
            se = self._ste_cached(rid, stale)
            ste = se.info
            cd = self._select(rid, pasid, ste, self._cd_cached_fn(rid, stale, used))
        except SmmuFault as f:
            if stale:
                self._check_fresh(rid, pasid, priv, write, addr, (-1, int(f.evt)), stale)
            return DmaResult((), self._fault(rid, pasid, priv, addr, write, f, None))
        if cd is None and ste.s2 is None:
            if stale:
                self._check_fresh(rid, pasid, priv, write, addr, (addr & ~0xFFF, 0), stale)
            return self._untranslated(addr, size, write)
        cde = used[0] if cd is not None else None
        sel = Sel(ste, cd, cde)
        if cd is None:
            self._c.s2_only = True
        if not stale:  # both entries clean (filled or re-checked just now)
            se.sels[pasid] = sel
        slow = (
            TlbSlowPath(self, rid, pasid, priv, write, sel, tuple(stale))
            if stale
            else self._slow_path(rid, pasid, priv, write, sel)
        )
        kind = write | priv << 1
        runs, fault, hits = translate_run(
            self._iotlb,
            sel.tag,
            NEVER if stale else sel.root1 if (addr >> 55) & 1 else sel.root0,
            sel.needs[kind],
            True,
            addr,
            addr + size,
            write,
            slow,
        )
        self.stats.iotlb_hits += hits
        return DmaResult(tuple(runs), fault)

    def _ste_cached(self, sid: int, stale: list[str]) -> SteEntry:
        caches, walker = self._c, self._w
        e = caches.ste.get(sid)
        if e is None:
            self.stats.ste_misses += 1
            return caches.put_ste(sid, walker.ste(*self._strtab(), sid))
        self.stats.ste_hits += 1
        if e.suspect:
            self._recheck_ste(sid, e, stale)
        return e

    def _recheck_ste(self, sid: int, e: SteEntry, stale: list[str]) -> None:
        try:
            fresh: StreamInfo | None = self._w.ste(*self._strtab(), sid)
        except SmmuFault:
            fresh = None
        if fresh is None or not self._p.revalidate(e, fresh == e.info, fresh.slots):
            stale.append("CFGI_STE")

    def _cd_cached_fn(
        self, sid: int, stale: list[str], used: list[CdEntry]
    ) -> Callable[[StreamInfo, int], CdInfo]:
        """The CD lookup through the cache for :meth:`_select`; the entry used is
        appended to ``used``."""

        def lookup(ste: StreamInfo, index: int) -> CdInfo:
            caches, walker = self._c, self._w
            e = caches.cd.get((sid, index))
            if e is None:
                self.stats.cd_misses += 1
                e = caches.put_cd(sid, index, walker.cd(ste, index))
                used.append(e)
                return e.info
            self.stats.cd_hits += 1
            used.append(e)
            if e.suspect:
                try:
                    fste = walker.ste(*self._strtab(), sid)
                    fresh: CdInfo | None = walker.cd(fste, index)
                except SmmuFault:
                    fresh = None
                if fresh is None or not self._p.revalidate(e, fresh == e.info, fresh.slots):
                    stale.append("CFGI_CD")
            return e.info

        return lookup

    @staticmethod
    def _select(
        sid: int,
        pasid: int | None,
        ste: StreamInfo,
        cd_fn: Callable[[StreamInfo, int], CdInfo],
    ) -> CdInfo | None:
        """STE -> CD selection (IHI 0070 §5.2 Config, S1CDMax, S1DSS; facts A7.3).
        Returns None when stage 1 is bypassed."""
        if ste.config == ent.STE_CFG_ABORT:
            raise SmmuFault(Evt.ABORT)
        if ste.config == ent.STE_CFG_BYPASS or ste.config == ent.STE_CFG_S2:
            if pasid is not None:
                raise SmmuFault(Evt.C_BAD_SUBSTREAMID)
            return None
        if pasid is not None:
            if not ste.s1cdmax or pasid >> ste.s1cdmax:
                raise SmmuFault(Evt.C_BAD_SUBSTREAMID)
            if pasid == 0 and ste.s1dss == ent.S1DSS_SSID0:
                raise SmmuFault(Evt.F_STREAM_DISABLED)
            return cd_fn(ste, pasid)
        if ste.s1cdmax:
            if ste.s1dss == ent.S1DSS_TERMINATE:
                raise SmmuFault(Evt.F_STREAM_DISABLED)
            if ste.s1dss == ent.S1DSS_BYPASS:
                return None
        return cd_fn(ste, 0)

    def _slow_page(
        self,
        sel: Sel,
        e: TlbEntry,
        a: int,
        missing: list[str],
        write: bool,
    ) -> TlbEntry:
        """A hit that must be re-checked: its tables were written since it was
        filled, or it was filled from other tables under the same ASID (ASID reuse
        without TLBI_NH_ASID)."""
        ste, cd = sel.ste, sel.cd
        root = sel.root1 if (a >> 55) & 1 else sel.root0
        pipeline = self._p
        self.stats.iotlb_hits += 1
        if e.src != root:
            missing.append("TLBI_NH_ASID")
            return e
        if e.src is not root:
            pipeline.rebind(e, root)
        if not e.suspect:
            return e
        try:
            leaf = self._w.walk_stream(ste, cd, a, False, False)
        except SmmuFault:
            leaf = None
        if cd is None:
            asid = S2_ONLY
        else:
            asid = GLOBAL if leaf is None or not leaf.ng else cd.asid
        if leaf is None or not pipeline.revalidate(
            e,
            e.same(leaf.phys, leaf.shift, leaf.perms) and e.tag == (ste.vmid, asid),
            leaf.slots,
        ):
            missing.append(tlbi_for(ste, cd, e))
            if write and leaf is not None and e.perms & PERM_W and leaf.perms & PERM_DBM:
                missing.append(LOST_DIRTY)
        return e

    def _fill(self, sel: Sel, a: int, write: bool, end: int = 0, need: int = 0) -> TlbEntry:
        """Walk and cache ``a`` (a ``write`` makes DBM pages dirty on the way). With
        ``end`` (where the request ends), a stage-1 4 KiB leaf whose rights cover
        ``need`` also fills the request's further pages in its table
        (:func:`~hw.smmuv3.slow_path.fill_ahead`)."""
        self.stats.iotlb_misses += 1
        tracing = self._m.hw_trace is not None
        ste, cd = sel.ste, sel.cd
        if tracing:
            self.emit("hw_smmuv3:tlb_miss", vmid=ste.vmid, asid=sel.tag[1], addr=a)
        iotlb = self._p.iotlb
        if cd is not None and ste.s2 is None:
            e = self._w.walk_raw(cd, a, True, write, None, sel.tag, sel.gtag)
            iotlb.put(e)
            if (
                end - a > 4096
                and e.shift == 12
                and e.perms & need == need
                and e.phys + 4096 <= iotlb.ram
                and not tracing
            ):
                fill_ahead(self, sel, e, need, end)
            return e
        leaf = self._w.walk_stream(ste, cd, a, True, write)
        e = TlbEntry(
            sel.tag if cd is None or leaf.ng else sel.gtag,
            a >> leaf.shift,
            leaf.shift,
            leaf.phys,
            leaf.perms,
            leaf.root,
            leaf.pte_addr,
            leaf.slots,
        )
        iotlb.put(e)
        return e

    def _perm_fault(self, ste: StreamInfo, cd: CdInfo | None, a: int, write: bool) -> SmmuFault:
        """F_PERMISSION for an entry lacking a right, at the stage that denies it: with
        stage 2 the tables are walked again (without updates) to see whether stage 2
        alone refuses, which makes it a stage-2 fault carrying the IPA."""
        s2 = ste.s2
        if s2 is not None:
            try:
                leaf = self._w.walk_stream(ste, cd, a, False, False)
            except SmmuFault as f:
                return f
            if isinstance(leaf, NestedLeaf):
                rights = leaf.s2perms
                if rights & PERM_DBM:
                    rights |= PERM_W
                need = PERM_R | PERM_W if write else PERM_R
                if rights & need != need:
                    cls = ent.EVT_CLASS_IN
                    return SmmuFault(Evt.F_PERMISSION, 0, True, leaf.ipa, cls, s2.record)
        return SmmuFault(Evt.F_PERMISSION)

    # -- stale detection (DESIGN §6) --------------------------------------------------------
    def fresh_outcome(
        self, sid: int, pasid: int | None, priv: bool, write: bool, addr: int
    ) -> tuple[int, int]:
        """What the structures in RAM say now for the 4 KiB page at ``addr``, with no
        cache: ``(physical page, 0)`` or ``(-1, event id)``. Sets no Access flags."""
        if not self.smmuen:
            return (-1, int(Evt.ABORT)) if self.gbpa_abort else (addr & ~0xFFF, 0)
        walker = self._w
        try:
            ste = walker.ste(*self._strtab(), sid)
            cd = self._select(sid, pasid, ste, walker.cd)
            if cd is None and ste.s2 is None:
                return addr & ~0xFFF, 0
            leaf = walker.walk_stream(ste, cd, addr, False, False)
        except SmmuFault as f:
            return -1, int(f.evt)
        perms = leaf.perms | (PERM_W if leaf.perms & PERM_DBM else 0)
        if not permission_ok(perms, write, priv, cd.pan if cd else False):
            return -1, int(Evt.F_PERMISSION)
        return (leaf.phys | (addr & ((1 << leaf.shift) - 1))) & ~0xFFF, 0

    def _check_fresh(
        self,
        sid: int,
        pasid: int | None,
        priv: bool,
        write: bool,
        addr: int,
        cached: tuple[int, int],
        missing: list[str],
    ) -> None:
        current = self.fresh_outcome(sid, pasid, priv, write, addr)
        lost_dirty = LOST_DIRTY in missing
        if current == cached and not lost_dirty:
            return
        # A write through a cached writable entry of a leaf software made writable-clean
        # again: the same translation, but the write marks nothing dirty.
        name = "/".join(m for m in dict.fromkeys(missing) if m != LOST_DIRTY)
        if lost_dirty:
            name += " (a write made no dirty update)"

        def report() -> Finding:
            found = stale_finding(self, sid, pasid, addr, cached, current, missing)
            self.emit(
                "hw_smmuv3:stale_translation",
                sid=sid,
                ssid=pasid,
                addr=addr,
                cached=cached,
                current=current,
                missing=name,
            )
            self.report(found)
            return found

        self._p.stale(
            f"{self.name}: sid {sid:#x} ssid {pasid} addr {addr:#x}: cached result "
            f"{cached} used, tables say {current}; missing {name}",
            report,
        )

    # -- fault events (IHI 0070 chapter 7) ------------------------------------------------------
    def _fault(
        self,
        sid: int,
        pasid: int | None,
        priv: bool,
        addr: int,
        write: bool,
        f: SmmuFault,
        cd: CdInfo | None,
    ) -> DmaFault:
        """Terminate the transaction and record the event unless CD.R=0 suppresses a
        translation-related one, the STE aborts silently, or CR2.RECINVSID is clear
        for C_BAD_STREAMID."""
        evt = f.evt
        self.stats.faults += 1
        detail = evt.name
        record = evt != Evt.ABORT
        if f.s2:
            record = f.record
            detail += f" (stage 2, IPA {f.ipa:#x})"
        elif evt in TRANSLATION_FAULTS and cd is not None:
            record = cd.r
            if not cd.a:
                detail += " (RAZ/WI)"
        if evt == Evt.C_BAD_STREAMID and not self.regs.field("CR2", sr.CR2.RECINVSID):
            record = False
        if record:
            self.evtq.post(self._record(sid, pasid, priv, addr, write, f))
        else:
            self.stats.faults_suppressed += 1
        self.report(fault_finding(self, sid, pasid, priv, addr, write, f, cd, record))
        self.emit("hw_smmuv3:fault", sid=sid, ssid=pasid, addr=addr, evt=int(evt), write=write)
        return DmaFault(addr, int(evt), write, detail)

    @staticmethod
    def _record(
        sid: int, pasid: int | None, priv: bool, addr: int, write: bool, f: SmmuFault
    ) -> tuple[int, int, int, int]:
        dw0 = ent.EvtDw0.encode(
            ID=int(f.evt),
            SSV=int(pasid is not None),
            SSID=(pasid or 0) & SSID_MASK,
            SID=sid & 0xFFFF_FFFF,
        )
        if f.s2:
            cls = f.cls
        else:
            cls = ent.EVT_CLASS_TT if f.evt == Evt.F_WALK_EABT else ent.EVT_CLASS_IN
        dw1 = ent.EvtDw1.encode(
            PNU=int(priv),
            RNW=int(not write),
            S2=int(f.s2),
            CLASS=cls if f.evt in TRANSLATION_FAULTS else 0,
            TT_READ=int(f.evt == Evt.F_WALK_EABT),
        )
        if f.s2 and f.evt != Evt.F_WALK_EABT:
            dw3 = f.ipa & ent.EvtDw3S2.IPA.mask
        else:
            dw3 = f.fetch & ent.EvtDw3.FETCH_ADDR.mask
        return dw0, dw1, addr & ((1 << 64) - 1), dw3

    # -- debug ---------------------------------------------------------------------------------
    def dump(self) -> str:
        """Render registers, queues, caches and the structures reachable from
        STRTAB_BASE as text."""
        from hw.smmuv3.dump import dump_unit

        return dump_unit(self)
