"""One VT-d DMA-remapping hardware unit (a DRHD): the register file, the global
command state machine, and the dispatch to the unit's concerns.

Behaviour follows the VT-d spec as summarised in the facts file part A, in the shape
of QEMU ``hw/i386/intel_iommu.c`` (``vtd_handle_gcmd_write``, ``vtd_do_iommu_translate``,
``vtd_report_dmar_fault``). Where it differs from QEMU: several fault records, status
bits that follow command writes after a clock event, queue processing as clock
events, caches that are never silently reset, and stale-use detection (DESIGN §6).

The unit owns the state the spec keeps in registers (root pointer, TTM, TE) and hands
every other concern to its own module, so a new one (interrupt remapping, the page
request queue) lands beside them with its registers wired here:

- :mod:`hw.vtd.faults` — fault records, FSTS, fault and invalidation-completion events;
- :mod:`hw.vtd.invalidation` — CCMD and IOTLB registers, the invalidation operations;
- :mod:`hw.vtd.qi` — the invalidation queue;
- :mod:`hw.vtd.translate` — table selection and the vendor half of :mod:`hw.translation`;
- :mod:`hw.vtd.devtlb` — ATS translation requests, translated requests, device-TLB
  invalidation;
- :mod:`hw.vtd.irq_remap` — interrupt requests (DWORD writes without PASID to the
  interrupt window), the remapping table at IRTA, the interrupt entry cache.

Writes to the registers that configure the unit are reported as ``hw_vtd:reg_write``
hardware trace events (register name and the value written).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from attrs import define

from hw.ats import AddressTranslationCache, AtcEntry, AtsResult
from hw.bus import DmaFault, DmaResult
from hw.iommu_unit import AttachedPart, IommuUnitModel
from hw.pagewatch import SlotTracker
from hw.pri import PageRequest
from hw.regs import RegisterFile, RegSlot
from hw.translation import Pipeline, PipelineStats, StaleTranslationError
from hw.vtd import registers as vr
from hw.vtd.caches import Caches
from hw.vtd.config import VtdConfig
from hw.vtd.devtlb import DeviceTlb
from hw.vtd.faults import FR, FaultLog, FaultReporting
from hw.vtd.invalidation import RegisterInvalidation
from hw.vtd.irq_remap import IrqRemapping
from hw.vtd.pmr import PHM, PLM, PMEN, ProtectedMemory
from hw.vtd.prq import PageRequestQueue
from hw.vtd.translate import Translation
from hw.vtd.walk import Walker

if TYPE_CHECKING:
    from hw.machine import Machine
    from hw.vtd.qi import InvalidationQueue

__all__ = ["GCMD_DELAY_NS", "StaleTranslationError", "VtdStats", "VtdUnit"]

GCMD_DELAY_NS = 100
"""Time between a GCMD write and the matching GSTS change."""

TRACED_REGS = frozenset(
    {
        "GCMD", "RTADDR", "CCMD", "IVA", "IOTLB", "IQA", "IRTA", "FECTL", "FEDATA", "FEADDR",
        "FEUADDR", "IECTL", "IEDATA", "IEADDR", "IEUADDR", "PMEN", "PLMBASE", "PLMLIMIT",
        "PHMBASE", "PHMLIMIT",
    }
)  # fmt: skip
"""Registers whose writes configure the unit (``hw_vtd:reg_write``); the queue tail,
status and fault-record writes are reported by the events of what they cause."""


@define(slots=True)
class VtdStats(PipelineStats):
    """Counters for tests, benchmarks and the CLI (IOTLB hits/misses and stale uses
    are the shared pipeline's)."""

    ctx_hits: int = 0
    ctx_misses: int = 0
    pasid_hits: int = 0
    pasid_misses: int = 0
    faults: int = 0
    faults_recorded: int = 0
    faults_suppressed: int = 0
    faults_overflow: int = 0
    qi_descriptors: int = 0
    qi_errors: int = 0
    invalidations: int = 0
    gcmd_writes: int = 0
    ats_requests: int = 0
    """Translation Requests answered (device ATC misses)."""
    ats_no_access: int = 0
    """Translation Completions with R=W=0 (not present / no permission; not faults)."""
    ats_translated: int = 0
    """Translated-request checks (one per device DMA access through its ATC)."""
    devtlb_invalidations: int = 0
    """Device-TLB invalidation requests delivered to a device's ATC."""


class VtdUnit(IommuUnitModel):
    """A DRHD unit: ``VtdUnit(name, config)`` then ``attach(machine, base)``."""

    table = "DMAR"
    pipeline = AttachedPart[Pipeline]()
    walker = AttachedPart[Walker]()
    caches = AttachedPart[Caches]()

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name)
        self.cfg = VtdConfig.from_mapping(config)
        self.register_size = self.cfg.register_size
        self.stats = VtdStats()
        self.root = 0
        self.ttm = 0
        self.te = False
        self.reporting = FaultReporting(self)
        self.reginv = RegisterInvalidation(self)
        self.xlate = Translation(self)
        self.devtlb = DeviceTlb(self)
        self.irq = IrqRemapping(self)
        self.pmr = ProtectedMemory(self)
        self.prq = PageRequestQueue(self)
        self.regs = self._build_regs()
        self._traced = {
            dw: slot.name
            for slot in self.regs.slots()
            if slot.name in TRACED_REGS
            for dw in range(slot.offset, slot.offset + slot.nbytes, 4)
        }
        self.faults = FaultLog(self.regs, self.cfg.nfr, self.reporting.fault_event)
        self._qi: InvalidationQueue | None = None

    # -- wiring ------------------------------------------------------------------------
    def _build_regs(self) -> RegisterFile:
        cfg = self.cfg
        rep, inv = self.reporting, self.reginv
        rf = RegisterFile(self.name, self.register_size)
        rf.add(vr.VER, vr.VER_OFF, reset=cfg.ver)
        rf.add(vr.CAP, vr.CAP_OFF, reset=cfg.cap())
        rf.add(vr.ECAP, vr.ECAP_OFF, reset=cfg.ecap())
        rf.add(vr.GCMD, vr.GCMD_OFF, on_write=self._gcmd_write)
        rf.add(vr.GSTS, vr.GSTS_OFF)
        rf.add(vr.RTADDR, vr.RTADDR_OFF)
        rf.add(vr.CCMD, vr.CCMD_OFF, on_write=inv.ccmd_write)
        rf.add(vr.FSTS, vr.FSTS_OFF, on_write=rep.fsts_write)
        rf.add(vr.EventControl, vr.FECTL_OFF, name="FECTL", on_write=rep.fectl_write)
        rf.add(vr.EventData, vr.FEDATA_OFF, name="FEDATA")
        rf.add(vr.EventAddr, vr.FEADDR_OFF, name="FEADDR")
        rf.add(vr.EventUAddr, vr.FEUADDR_OFF, name="FEUADDR")
        rf.add(vr.RO64, vr.AFLOG_OFF, name="AFLOG")
        pmr = cfg.plmr or cfg.phmr
        rf.add(PMEN if pmr else vr.RO32, vr.PMEN_OFF, name="PMEN", on_write=self.pmr.pmen_write)
        rf.add(PLM if cfg.plmr else vr.RO32, vr.PLMBASE_OFF, name="PLMBASE")
        rf.add(PLM if cfg.plmr else vr.RO32, vr.PLMLIMIT_OFF, name="PLMLIMIT")
        rf.add(PHM if cfg.phmr else vr.RO64, vr.PHMBASE_OFF, name="PHMBASE")
        rf.add(PHM if cfg.phmr else vr.RO64, vr.PHMLIMIT_OFF, name="PHMLIMIT")
        rf.add(vr.IQH, vr.IQH_OFF)
        rf.add(vr.IQT, vr.IQT_OFF, on_write=self._iqt_write)
        rf.add(vr.IQA, vr.IQA_OFF)
        rf.add(vr.ICS, vr.ICS_OFF, on_write=rep.ics_write)
        rf.add(vr.EventControl, vr.IECTL_OFF, name="IECTL", on_write=rep.iectl_write)
        rf.add(vr.EventData, vr.IEDATA_OFF, name="IEDATA")
        rf.add(vr.EventAddr, vr.IEADDR_OFF, name="IEADDR")
        rf.add(vr.EventUAddr, vr.IEUADDR_OFF, name="IEUADDR")
        rf.add(vr.IQERCD, vr.IQERCD_OFF)
        rf.add(vr.IRTA, vr.IRTA_OFF)
        prq = self.prq
        rf.add(vr.PQH, vr.PQH_OFF)
        rf.add(vr.PQT, vr.PQT_OFF)
        rf.add(vr.PQA, vr.PQA_OFF)
        rf.add(vr.PRS, vr.PRS_OFF, on_write=prq.prs_write)
        rf.add(vr.EventControl, vr.PECTL_OFF, name="PECTL", on_write=prq.pectl_write)
        rf.add(vr.EventData, vr.PEDATA_OFF, name="PEDATA")
        rf.add(vr.EventAddr, vr.PEADDR_OFF, name="PEADDR")
        rf.add(vr.EventUAddr, vr.PEUADDR_OFF, name="PEUADDR")
        iro = cfg.iro * 16
        rf.add(vr.IVA, iro, name="IVA")
        rf.add(vr.IOTLB, iro + 8, name="IOTLB", on_write=inv.iotlb_write)
        fro = cfg.fro * 16
        for i in range(cfg.nfr):
            rf.add(vr.FRCD_LO, fro + 16 * i, name=f"FRCD{i}_LO")
            rf.add(vr.FRCD_HI, fro + 16 * i + 8, name=f"FRCD{i}_HI", on_write=rep.frcd_write)
        return rf

    def attach(self, machine: Machine, base: int) -> None:
        """Called once by the Machine: RAM, clock and interrupt delivery become reachable."""
        from hw.vtd.qi import InvalidationQueue

        self.machine = machine
        self.base = base
        pipeline = Pipeline(
            machine.memory, self.stats, self.cfg.strict_stale, lambda: machine.clock.now
        )
        walker = Walker(machine.memory, self.cfg)
        walker.set_bits = pipeline.deps.own_write
        walker.set_bits_many = pipeline.deps.own_write_many
        self.set_part("pipeline", pipeline)
        self.set_part("walker", walker)
        self.set_part("caches", Caches(pipeline))
        self._qi = InvalidationQueue(self)
        self.xlate.attach()

    @property
    def qi(self) -> InvalidationQueue:
        return self.attached(self._qi)

    # -- GCMD/GSTS (spec 10.4.4/10.4.5; facts A4) ----------------------------------------
    def _gcmd_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        """Act on every bit that changes state, like QEMU ``vtd_handle_gcmd_write``.

        The spec asks software to change one control at a time. A write that changes
        more than one is still carried out bit by bit, in the order SRTP, WBF, QIE, TE,
        and is recorded in :attr:`errors` so a driver that batches commands shows up.
        """
        self.stats.gcmd_writes += 1
        gsts = self.regs["GSTS"]
        acts: list[int] = [b for b in vr.ONESHOT_BITS if written & b]
        acts += [b for b in vr.LEVEL_BITS if (written ^ gsts) & b]
        if len(acts) > 1:
            self.error(f"GCMD write {written:#x} changes {len(acts)} controls at once")
        order = (
            vr.GCMD.SRTP.mask,
            vr.GCMD.WBF.mask,
            vr.GCMD.QIE.mask,
            vr.GCMD.SIRTP.mask,
            vr.GCMD.IRE.mask,
            vr.GCMD.CFI.mask,
            vr.GCMD.TE.mask,
        )
        for bit in order:
            if bit in acts:
                acts.remove(bit)
                self._gcmd_act(bit, bool(written & bit))
        for bit in acts:
            self.error(f"GCMD bit {bit:#x} not supported by this unit; ignored")

    def _set_gsts(self, bit: int, on: bool) -> None:
        self.regs["GSTS"] = (self.regs["GSTS"] & ~bit) | (bit if on else 0)

    def _gcmd_act(self, bit: int, on: bool) -> None:
        if bit == vr.GCMD.SRTP.mask:
            value = self.regs["RTADDR"]
            self._set_gsts(vr.GSTS.RTPS.mask, False)
            self._schedule(GCMD_DELAY_NS, lambda: self._srtp_done(value), "srtp")
        elif bit == vr.GCMD.WBF.mask:
            self._set_gsts(vr.GSTS.WBFS.mask, True)
            self._schedule(GCMD_DELAY_NS, lambda: self._set_gsts(vr.GSTS.WBFS.mask, False), "wbf")
        elif bit == vr.GCMD.QIE.mask:
            if not self.cfg.qi:
                self.error("GCMD.QIE set but ECAP.QI is 0; ignored")
                return
            self._schedule(GCMD_DELAY_NS, lambda: self.qi.enable(on), "qie")
        elif bit in (vr.GCMD.SIRTP.mask, vr.GCMD.IRE.mask, vr.GCMD.CFI.mask):
            if not self.cfg.ir:
                self.error(f"GCMD bit {bit:#x} (interrupt remapping) set but ECAP.IR is 0; ignored")
            elif bit == vr.GCMD.SIRTP.mask:
                self.irq.sirtp()
            elif bit == vr.GCMD.IRE.mask:
                self.irq.set_enable(on)
            else:
                self.irq.set_cfi(on)
        else:
            self._schedule(GCMD_DELAY_NS, lambda: self._te_done(on), "te")

    def _srtp_done(self, value: int) -> None:
        """Latch RTADDR (root pointer and TTM). Caches are kept (CAP.ESRTPS is 0): every
        cached entry is re-checked against the new tables on its next use."""
        self.root = value & ~0xFFF
        self.ttm = vr.RTADDR.TTM.get(value)
        self.caches.deps.mark_all(self.caches.all_entries())
        self._set_gsts(vr.GSTS.RTPS.mask, True)

    def _te_done(self, on: bool) -> None:
        self.te = on
        self._set_gsts(vr.GSTS.TES.mask, on)
        self.route()

    def route(self) -> None:
        """Where :meth:`translate` goes: with translation on and no protected range
        enabled, straight to :meth:`Translation.translate` (an instance attribute
        shadowing the method, so a request costs no call of its own here); otherwise
        the method, which decides. Called whenever TE or PMEN.PRS changes."""
        if self.te and not self.pmr.active:
            self.__dict__["translate"] = self.xlate.translate
        else:
            self.__dict__.pop("translate", None)

    def _iqt_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        (self._qi or self.qi).tail_written()  # the property only to raise before attach

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.regs.write(offset, size, value)
        m = self.machine
        if m is not None and m.hw_trace is not None:
            name = self._traced.get(offset & ~3)
            if name is not None:
                self.emit("hw_vtd:reg_write", reg=name, offset=offset, value=value)

    # -- interrupt requests (hw.vtd.irq_remap) -------------------------------------------
    def interrupt_request(self, rid: int, addr: int, data: int) -> DmaFault | None:
        """A DWORD write without PASID to the interrupt window from ``rid``."""
        return self.irq.request(rid, addr, data)

    def interrupt_window_fault(self, rid: int, addr: int, write: bool) -> DmaFault:
        """A request without PASID to the window that is not an interrupt request."""
        return self.irq.window_fault(rid, addr, write)

    # -- faults and events (hw.vtd.faults) ---------------------------------------------------
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
    ) -> DmaFault:
        """Record a translation fault (spec 7.2) unless FPD suppresses a qualified one."""
        return self.reporting.fault(rid, pasid, priv, exe, addr, write, reason, fpd)

    def iwc_event(self) -> None:
        self.reporting.iwc_event()

    def set_iqe(self, code: int) -> None:
        """Report an invalidation queue error (FSTS.IQE + IQERCD.IQEI) and signal it."""
        self.reporting.set_iqe(code)

    # -- invalidation operations shared by registers and QI (hw.vtd.invalidation) ----------
    def context_invalidate(self, g: int, did: int, sid: int, fm: int) -> int:
        return self.reginv.context_invalidate(g, did, sid, fm)

    def iotlb_invalidate(self, g: int, did: int, addr: int, am: int) -> int:
        """Type-2 semantics: global drops everything; domain- and page-selective drop
        second-stage entries of ``did`` (first-stage ones need P_IOTLB, spec 6.5.2.4)."""
        return self.reginv.iotlb_invalidate(g, did, addr, am)

    def devtlb_invalidate(
        self, sid: int, pasid: int | None, all_pasids: bool, addr: int, size: int
    ) -> bool:
        """Send an Invalidation Request to the ATC of ``sid`` (QI types 3 and 8)."""
        return self.devtlb.invalidate(sid, pasid, all_pasids, addr, size)

    # -- translation (hw.vtd.translate) -----------------------------------------------------
    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        if not self.te:
            res = self._untranslated(addr, size, write)
        else:
            res = self.xlate.translate(rid, pasid, priv, addr, size, write, False)
        return self.pmr.clip(addr, res, write) if self.pmr.active else res

    def translate_ex(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        addr: int,
        size: int,
        write: bool,
        exe: bool,
        ats: list[AtcEntry] | None = None,
    ) -> DmaResult:
        """Translate a DMA request; returns the RAM runs of the translated prefix and the
        fault that stopped it (``reason`` = VT-d fault reason).

        Every request of a device enters here. ``ats`` (a list) makes it a PCIe
        Translation Request (AT = translation request): the completion entries are
        appended to it and the result carries only the fault (:meth:`ats_translate`)."""
        if ats is not None:
            answer = self.devtlb.request(rid, pasid, priv, addr, size, write)
            ats.extend(answer.entries)
            return DmaResult((), answer.fault)
        if not self.te:
            res = self._untranslated(addr, size, write)
        else:
            res = self.xlate.translate(rid, pasid, priv, addr, size, write, exe)
        return self.pmr.clip(addr, res, write) if self.pmr.active else res

    def fresh_outcome(
        self, rid: int, pasid: int | None, priv: bool, exe: bool, write: bool, addr: int
    ) -> tuple[int, int]:
        """What the tables in RAM say now for the 4 KiB page at ``addr``, with no cache:
        ``(physical page, 0)`` or ``(-1, fault reason)``. Sets no A/D bits."""
        return self.xlate.fresh_outcome(rid, pasid, priv, exe, write, addr)

    # -- ATS agent (hw.vtd.devtlb; the hw.ats.AtsAgent protocol) ----------------------------
    @property
    def atcs(self) -> dict[int, AddressTranslationCache]:
        """ATS-enabled functions behind this unit, by source-id."""
        return self.devtlb.atcs

    @property
    def ats_tracker(self) -> SlotTracker:
        return self.pipeline.deps

    def ats_bind(self, rid: int, atc: AddressTranslationCache | None) -> None:
        """Device-TLB invalidations for source-id ``rid`` go to ``atc`` (None: none)."""
        self.devtlb.bind(rid, atc)

    def ats_release(self, entries: Iterable[AtcEntry]) -> None:
        """A device dropped ATC entries: stop tracking them."""
        self.devtlb.release(entries)

    def ats_translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> AtsResult:
        """A PCIe Translation Request, through :meth:`translate_ex` like every request."""
        out: list[AtcEntry] = []
        res = self.translate_ex(rid, pasid, priv, addr, size, write, False, out)
        return AtsResult(tuple(out), res.fault)

    def ats_translated(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        write: bool,
        addr: int,
        suspects: Sequence[AtcEntry],
    ) -> DmaFault | None:
        """Translated requests of one device access (VT-d spec 4.2.3)."""
        return self.devtlb.translated(rid, pasid, priv, write, addr, suspects)

    # -- page requests (hw.vtd.prq; the hw.pri.PriAgent protocol) ---------------------------
    def page_request(self, req: PageRequest) -> None:
        """A Page Request message from a function behind this unit."""
        self.prq.receive(req)

    # -- debug ---------------------------------------------------------------------------------
    def dump(self) -> str:
        """Render the structures reachable from the latched root pointer as text."""
        from hw.vtd.dump import dump_unit

        return dump_unit(self)
