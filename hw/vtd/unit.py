"""One VT-d DMA-remapping hardware unit (a DRHD): registers, translation, caches, faults.

Behaviour follows the VT-d spec as summarised in the facts file part A, in the shape
of QEMU ``hw/i386/intel_iommu.c`` (``vtd_handle_gcmd_write``, ``vtd_do_iommu_translate``,
``vtd_report_dmar_fault``). Where it differs from QEMU: several fault records, status
bits that follow command writes after a clock event, queue processing as clock
events, caches that are never silently reset, and stale-use detection (DESIGN §6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from attrs import define

from hw.ats import ATS_R, ATS_W, AddressTranslationCache, AtcBlock, AtcEntry, AtsResult
from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult
from hw.iommu_unit import IommuUnitModel
from hw.memory import Memory
from hw.regs import RegisterFile, RegSlot
from hw.vtd import registers as vr
from hw.vtd.caches import (
    BLOCK,
    BLOCK_SHIFT,
    SL_TAG,
    Caches,
    CtxEntry,
    DevTlbShadow,
    TlbEntry,
)
from hw.vtd.config import VtdConfig
from hw.vtd.faults import FR, NON_QUALIFIED, FaultLog, TranslationFault
from hw.vtd.walk import (
    INTR_HI,
    INTR_LO,
    KIND_FL,
    KIND_PT,
    KIND_SL,
    PERM_R,
    PERM_U,
    PERM_W,
    PERM_X,
    CtxInfo,
    Leaf,
    PasidInfo,
    Stage,
    Walker,
)

if TYPE_CHECKING:
    from hw.machine import Machine
    from hw.vtd.qi import InvalidationQueue

GCMD_DELAY_NS = 100
"""Time between a GCMD write and the matching GSTS change."""
CMD_DELAY_NS = 100
"""Time a register-based invalidation (CCMD.ICC, IOTLB.IVT) stays busy."""


ATS_NO_ACCESS = frozenset(
    {
        FR.READ,
        FR.WRITE,
        FR.FS_NOT_PRESENT,
        FR.SS_PERM,
        FR.SM_US,
        FR.SM_EXEC,
        FR.SM_WRITE,
        FR.SM_READ,
    }
)
"""Page-level conditions a Translation Request answers with R=W=0 instead of a
recorded fault (VT-d spec 4.2.2 as read for the model; facts A12 codes)."""


class StaleTranslationError(Exception):
    """A cached translation that differs from the tables was used (strict_stale)."""


@define(slots=True)
class VtdStats:
    """Counters for tests, benchmarks and the CLI."""

    iotlb_hits: int = 0
    iotlb_misses: int = 0
    ctx_hits: int = 0
    ctx_misses: int = 0
    pasid_hits: int = 0
    pasid_misses: int = 0
    stale_uses: int = 0
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


@define(slots=True)
class _Sel:
    """What a request resolved to before the page walk."""

    scalable: bool
    stage: Stage
    did: int
    tag: int
    fpd: bool
    pasid: int | None
    """PASID used for the lookup (RID_PASID for requests without PASID in scalable mode)."""
    wpe: bool


class VtdUnit(IommuUnitModel):
    """A DRHD unit: ``VtdUnit(name, config)`` then ``attach(machine, base)``."""

    table = "DMAR"

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name)
        self.cfg = VtdConfig.from_mapping(config)
        self.register_size = self.cfg.register_size
        self.stats = VtdStats()
        self.root = 0
        self.ttm = 0
        self.te = False
        self.regs = self._build_regs()
        self.faults = FaultLog(self.regs, self.cfg.nfr, self._fault_event)
        self._mem: Memory | None = None
        self._walker: Walker | None = None
        self._caches: Caches | None = None
        self._qi: InvalidationQueue | None = None
        self.atcs: dict[int, AddressTranslationCache] = {}
        """ATS-enabled functions behind this unit, by source-id: where device-TLB
        invalidations go (PCIe Invalidation Requests)."""

    # -- wiring ------------------------------------------------------------------------
    def _build_regs(self) -> RegisterFile:
        cfg = self.cfg
        rf = RegisterFile(self.name, self.register_size)
        rf.add(vr.VER, vr.VER_OFF, reset=0x30 if cfg.smts else 0x10)
        rf.add(vr.CAP, vr.CAP_OFF, reset=cfg.cap())
        rf.add(vr.ECAP, vr.ECAP_OFF, reset=cfg.ecap())
        rf.add(vr.GCMD, vr.GCMD_OFF, on_write=self._gcmd_write)
        rf.add(vr.GSTS, vr.GSTS_OFF)
        rf.add(vr.RTADDR, vr.RTADDR_OFF)
        rf.add(vr.CCMD, vr.CCMD_OFF, on_write=self._ccmd_write)
        rf.add(vr.FSTS, vr.FSTS_OFF, on_write=self._fsts_write)
        rf.add(vr.EventControl, vr.FECTL_OFF, name="FECTL", on_write=self._fectl_write)
        rf.add(vr.EventData, vr.FEDATA_OFF, name="FEDATA")
        rf.add(vr.EventAddr, vr.FEADDR_OFF, name="FEADDR")
        rf.add(vr.EventUAddr, vr.FEUADDR_OFF, name="FEUADDR")
        rf.add(vr.RO64, vr.AFLOG_OFF, name="AFLOG")
        rf.add(vr.RO32, vr.PMEN_OFF, name="PMEN")
        rf.add(vr.RO32, vr.PLMBASE_OFF, name="PLMBASE")
        rf.add(vr.RO32, vr.PLMLIMIT_OFF, name="PLMLIMIT")
        rf.add(vr.RO64, vr.PHMBASE_OFF, name="PHMBASE")
        rf.add(vr.RO64, vr.PHMLIMIT_OFF, name="PHMLIMIT")
        rf.add(vr.IQH, vr.IQH_OFF)
        rf.add(vr.IQT, vr.IQT_OFF, on_write=self._iqt_write)
        rf.add(vr.IQA, vr.IQA_OFF)
        rf.add(vr.ICS, vr.ICS_OFF, on_write=self._ics_write)
        rf.add(vr.EventControl, vr.IECTL_OFF, name="IECTL", on_write=self._iectl_write)
        rf.add(vr.EventData, vr.IEDATA_OFF, name="IEDATA")
        rf.add(vr.EventAddr, vr.IEADDR_OFF, name="IEADDR")
        rf.add(vr.EventUAddr, vr.IEUADDR_OFF, name="IEUADDR")
        rf.add(vr.IQERCD, vr.IQERCD_OFF)
        iro = vr.ECAP.IRO.get(cfg.ecap()) * 16
        rf.add(vr.IVA, iro, name="IVA")
        rf.add(vr.IOTLB, iro + 8, name="IOTLB", on_write=self._iotlb_write)
        fro = vr.CAP.FRO.get(cfg.cap()) * 16
        for i in range(vr.CAP.NFR.get(cfg.cap()) + 1):
            rf.add(vr.FRCD_LO, fro + 16 * i, name=f"FRCD{i}_LO")
            rf.add(vr.FRCD_HI, fro + 16 * i + 8, name=f"FRCD{i}_HI", on_write=self._frcd_write)
        return rf

    def attach(self, machine: Machine, base: int) -> None:
        """Called once by the Machine: RAM, clock and interrupt delivery become reachable."""
        from hw.vtd.qi import InvalidationQueue

        self.machine = machine
        self.base = base
        self._mem = machine.memory
        self._walker = Walker(machine.memory, self.cfg)
        self._caches = Caches(machine.memory)
        self._walker.set_bits = self._caches.deps.own_write
        self._qi = InvalidationQueue(self)

    @property
    def walker(self) -> Walker:
        return self.attached(self._walker)

    @property
    def caches(self) -> Caches:
        return self.attached(self._caches)

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
        for bit in (vr.GCMD.SRTP.mask, vr.GCMD.WBF.mask, vr.GCMD.QIE.mask, vr.GCMD.TE.mask):
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

    # -- fault status and events (spec 7.3, 10.4.9-10.4.12) -----------------------------
    def _fault_event(self) -> None:
        self._event("FECTL", "FEADDR", "FEUADDR", "FEDATA")

    def iwc_event(self) -> None:
        self._event("IECTL", "IEADDR", "IEUADDR", "IEDATA")

    def _event(self, ctl: str, addr: str, uaddr: str, data: str) -> None:
        regs = self.regs
        if regs.field(ctl, vr.EventControl.IM):
            regs.field(ctl, vr.EventControl.IP, 1)
            return
        regs.field(ctl, vr.EventControl.IP, 0)
        self.m.msi(regs[addr] | (regs[uaddr] << 32), regs[data])

    def _unmask(self, ctl: str) -> None:
        regs = self.regs
        if not regs.field(ctl, vr.EventControl.IM) and regs.field(ctl, vr.EventControl.IP):
            if ctl == "FECTL":
                self._fault_event()
            else:
                self.iwc_event()

    def _fectl_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        self._unmask("FECTL")

    def _iectl_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        self._unmask("IECTL")

    def _fsts_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        status = vr.FSTS.PFO.mask | vr.FSTS.PPF.mask | vr.FSTS.IQE.mask
        status |= vr.FSTS.ICE.mask | vr.FSTS.ITE.mask
        if not self.regs["FSTS"] & status:
            self.regs.field("FECTL", vr.EventControl.IP, 0)
        if old & vr.FSTS.IQE.mask and not slot.value & vr.FSTS.IQE.mask:
            self.qi.kick()

    def _ics_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not slot.value & 1:
            self.regs.field("IECTL", vr.EventControl.IP, 0)

    def _frcd_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        self.faults.update()

    def set_iqe(self, code: int) -> None:
        """Report an invalidation queue error (FSTS.IQE + IQERCD.IQEI) and signal it."""
        self.stats.qi_errors += 1
        self.regs.field("IQERCD", vr.IQERCD.IQEI, code)
        if not self.regs.field("FSTS", vr.FSTS.IQE):
            self.regs.field("FSTS", vr.FSTS.IQE, 1)
            self._fault_event()

    def _iqt_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        self.qi.tail_written()

    # -- register-based invalidation (spec 6.5.1; facts A6) --------------------------------
    def _register_inval_ok(self, what: str) -> bool:
        if self.regs.field("GSTS", vr.GSTS.QIES):
            self.error(f"{what}: register-based invalidation while QI is enabled; rejected")
            return False
        if self.ttm != 0:
            self.error(f"{what}: register-based invalidation in scalable mode; rejected")
            return False
        return True

    def _ccmd_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not touched >> 63 or not written >> 63:
            return
        value = slot.value
        self._schedule(CMD_DELAY_NS, lambda: self._ccmd_done(value), "ccmd")

    def _ccmd_done(self, value: int) -> None:
        """Execute CCMD and report the actual granularity (0 = rejected)."""
        g = vr.CCMD.CIRG.get(value)
        actual = 0
        if g and self._register_inval_ok("CCMD"):
            actual = g
            self.context_invalidate(
                g, vr.CCMD.DID.get(value), vr.CCMD.SID.get(value), vr.CCMD.FM.get(value)
            )
        v = vr.CCMD.CAIG.put(value, actual)
        self.regs["CCMD"] = vr.CCMD.ICC.put(v, 0)

    def _iotlb_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        if not touched >> 63 or not written >> 63:
            return
        value, iva = slot.value, self.regs["IVA"]
        self._schedule(CMD_DELAY_NS, lambda: self._iotlb_done(value, iva), "iotlb")

    def _iotlb_done(self, value: int, iva: int) -> None:
        g = vr.IOTLB.IIRG.get(value)
        actual = 0
        if g and self._register_inval_ok("IOTLB"):
            if g == 3 and (not self.cfg.psi or vr.IVA.AM.get(iva) > self.cfg.mamv):
                g = 2
            actual = g
            did = vr.IOTLB.DID.get(value)
            self.iotlb_invalidate(g, did, iva & ~0xFFF, vr.IVA.AM.get(iva))
        v = vr.IOTLB.IAIG.put(value, actual)
        self.regs["IOTLB"] = vr.IOTLB.IVT.put(v, 0)

    # -- invalidation operations shared by registers and QI ---------------------------------
    def context_invalidate(self, g: int, did: int, sid: int, fm: int) -> int:
        self.stats.invalidations += 1
        if g == 1:
            return self.caches.flush_ctx()
        if g == 2:
            return self.caches.flush_ctx(did=did)
        return self.caches.flush_ctx(sid=sid, fm=fm)

    def iotlb_invalidate(self, g: int, did: int, addr: int, am: int) -> int:
        """Type-2 semantics: global drops everything; domain- and page-selective drop
        second-stage entries of ``did`` (first-stage ones need P_IOTLB, spec 6.5.2.4)."""
        self.stats.invalidations += 1
        if g == 1:
            return self.caches.flush_tlb()
        if g == 2:
            return self.caches.flush_tlb(did=did, tag=SL_TAG)
        return self.caches.flush_tlb(did=did, tag=SL_TAG, addr=addr, am=am)

    # -- translation (spec 3.x; facts A10.5) -------------------------------------------------
    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        return self.translate_ex(rid, pasid, priv, addr, size, write, False)

    def _untranslated(self, addr: int, size: int, write: bool) -> DmaResult:
        ram = self.m.memory.size
        if 0 <= addr and addr + size <= ram:
            return DmaResult(((addr, size),))
        good = max(0, min(size, ram - addr)) if addr >= 0 else 0
        runs = ((addr, good),) if good else ()
        return DmaResult(runs, DmaFault(addr + good, DMA_FAULT_BUS, write, "outside RAM"))

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
            res = self._ats_request(rid, pasid, priv, addr, size, write)
            ats.extend(res.entries)
            return DmaResult((), res.fault)
        if not self.te:
            return self._untranslated(addr, size, write)
        if pasid is None:
            priv = exe = False
        if size <= 0:
            return DmaResult(())
        stale_box = [False]
        try:
            ce = self._ctx_cached(rid, stale_box)
            sel = self._select(
                rid, pasid, priv, exe, ce.info, self._pasid_cached_fn(rid, stale_box)
            )
        except TranslationFault as f:
            if stale_box[0]:
                self._check_fresh(rid, pasid, priv, exe, write, addr, (-1, int(f.reason)))
            return DmaResult((), self._fault(rid, pasid, priv, exe, addr, write, f.reason, f.fpd))
        return self._pages(rid, pasid, priv, exe, addr, size, write, sel, stale_box[0])

    def _ctx_cached(self, rid: int, stale_box: list[bool]) -> CtxEntry:
        caches, walker = self.caches, self.walker
        self._check_root()
        e = caches.ctx.get(rid)
        if e is None:
            self.stats.ctx_misses += 1
            return caches.put_ctx(rid, walker.context(self.root, self.ttm == 1, rid))
        self.stats.ctx_hits += 1
        if e.suspect:
            try:
                fresh: CtxInfo | None = walker.context(self.root, self.ttm == 1, rid)
            except TranslationFault:
                fresh = None
            if fresh is not None and fresh == e.info:
                caches.deps.rebase(e, fresh.slots)
            else:
                stale_box[0] = True
        return e

    def _check_root(self) -> None:
        if self.ttm == 0b10 or self.ttm == 0b11 or (self.ttm == 1 and not self.cfg.smts):
            raise TranslationFault(FR.SM_RTADDR_INVALID)

    def _pasid_cached_fn(
        self, rid: int, stale_box: list[bool]
    ) -> Callable[[CtxInfo, int], PasidInfo]:
        def lookup(ctx: CtxInfo, pasid: int) -> PasidInfo:
            caches, walker = self.caches, self.walker
            e = caches.pasid.get((rid, pasid))
            if e is None:
                self.stats.pasid_misses += 1
                return caches.put_pasid(rid, pasid, walker.pasid_entry(ctx, pasid)).info
            self.stats.pasid_hits += 1
            if e.suspect:
                try:
                    fctx = walker.context(self.root, self.ttm == 1, rid)
                    fresh: PasidInfo | None = walker.pasid_entry(fctx, pasid)
                except TranslationFault:
                    fresh = None
                if fresh is not None and fresh == e.info:
                    caches.deps.rebase(e, fresh.slots)
                else:
                    stale_box[0] = True
            return e.info

        return lookup

    def _fresh_pasid_fn(self, ctx: CtxInfo, pasid: int) -> PasidInfo:
        return self.walker.pasid_entry(ctx, pasid)

    def _select(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        exe: bool,
        ctx: CtxInfo,
        pasid_fn: Callable[[CtxInfo, int], PasidInfo],
    ) -> _Sel:
        """Context entry -> stage selection (facts A10.5 steps 2-5)."""
        if not ctx.scalable:
            if pasid is not None:
                raise TranslationFault(FR.SM_TTM_LEGACY_PASID)
            assert ctx.stage is not None
            return _Sel(False, ctx.stage, ctx.did, SL_TAG, ctx.fpd, None, False)
        if pasid is None:
            eff = ctx.rid_pasid
        elif not ctx.paside:
            raise TranslationFault(FR.SM_CTX_PASIDE, ctx.fpd)
        else:
            eff = pasid
        pe = pasid_fn(ctx, eff)
        if priv and not pe.sre:
            raise TranslationFault(FR.SM_PASID_SRE, pe.fpd)
        if exe and not pe.ere:
            raise TranslationFault(FR.SM_PASID_ERE, pe.fpd)
        tag = eff if pe.stage.kind == KIND_FL else SL_TAG
        return _Sel(True, pe.stage, pe.did, tag, pe.fpd, eff, pe.wpe)

    @staticmethod
    def _need(sel: _Sel, write: bool, priv: bool, exe: bool) -> int:
        kind = sel.stage.kind
        if kind == KIND_PT:
            return 0
        if kind == KIND_SL:
            return PERM_W if write else PERM_R
        need = PERM_R
        if write and (not priv or sel.wpe):
            need |= PERM_W
        if not priv:
            need |= PERM_U
        if exe:
            need |= PERM_X
        return need

    @staticmethod
    def _perm_reason(sel: _Sel, perms: int, need: int) -> FR:
        missing = need & ~perms
        if not sel.scalable:
            return FR.WRITE if missing & PERM_W else FR.READ
        if missing & PERM_U:
            return FR.SM_US
        if missing & PERM_X:
            return FR.SM_EXEC
        return FR.SM_WRITE if missing & PERM_W else FR.SM_READ

    def _walk(self, sel: _Sel, addr: int, write: bool, update: bool) -> Leaf:
        st = sel.stage
        if st.kind == KIND_FL:
            return self.walker.walk_fl(st, addr, sel.fpd, update)
        return self.walker.walk_sl(st, addr, write, sel.scalable, sel.fpd, update)

    def _pages(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        exe: bool,
        addr: int,
        size: int,
        write: bool,
        sel: _Sel,
        upper_stale: bool,
    ) -> DmaResult:
        """Translate ``[addr, addr + size)`` into merged physical runs.

        Run-oriented: a 2 MiB IOVA block with a valid :class:`~hw.vtd.caches.Block`
        summary costs one dict lookup and appends its (few) runs; other blocks go page
        by page (IOTLB hit path, fills, re-checks of suspect entries, permission
        checks), and a block covered entirely that way is summarised for next time.
        Hardware looks up the IOTLB per page; the summary gives the same answer because
        it is dropped or outdated whenever one of its entries could answer differently.
        """
        stage = sel.stage
        if stage.kind == KIND_PT:
            return self._passthrough(rid, pasid, priv, exe, addr, size, write, sel, upper_stale)
        caches = self.caches
        deps = caches.deps
        need = self._need(sel, write, priv, exe)
        sizes = caches.iotlb.get((sel.did, sel.tag))
        runs: list[tuple[int, int]] = []
        run_start = run_end = -1
        a, end = addr, addr + size
        hits = 0
        ram = self.m.memory.size
        fault: DmaFault | None = None
        no_dirty = not write
        while a < end:
            bn = a >> BLOCK_SHIFT
            base = bn << BLOCK_SHIFT
            lim = base + (1 << BLOCK_SHIFT)
            whole = a == base and lim <= end
            if lim > end:
                lim = end
            if sizes is not None and not upper_stale:
                blk = sizes[BLOCK].get(bn)
                if (
                    blk is not None
                    and blk.version == deps.version
                    and blk.stage is stage
                    and blk.perms & need == need
                    and (no_dirty or blk.dirty)
                ):
                    lo, hi = a - base, lim - base
                    for off, phys, n in blk.runs:
                        if off + n <= lo:
                            continue
                        if off >= hi:
                            break
                        s = lo if lo > off else off
                        k = (off + n if off + n < hi else hi) - s
                        phys += s - off
                        if phys == run_end:
                            run_end += k
                        else:
                            if run_start >= 0:
                                runs.append((run_start, run_end - run_start))
                            run_start, run_end = phys, phys + k
                    hits += ((lim - 1) >> 12) - (a >> 12) + 1
                    a = lim
                    continue
            while a < lim:
                e: TlbEntry | None = None
                if sizes is not None:
                    e = sizes[0].get(a >> 12) or sizes[1].get(a >> 21) or sizes[2].get(a >> 30)
                    # Hot path: a clean hit that needs no check, inside RAM (RAM always
                    # ends below the interrupt range, so one comparison covers both).
                    if (
                        e is not None
                        and not e.suspect
                        and e.stage is stage
                        and not upper_stale
                        and e.perms & need == need
                        and (no_dirty or e.dirty)
                    ):
                        shift = e.shift
                        off = a & ((1 << shift) - 1)
                        chunk = (1 << shift) - off
                        if a + chunk > end:
                            chunk = end - a
                        phys = e.phys | off
                        if phys + chunk <= ram:
                            hits += 1
                            if phys == run_end:
                                run_end += chunk
                            else:
                                if run_start >= 0:
                                    runs.append((run_start, run_end - run_start))
                                run_start, run_end = phys, phys + chunk
                            a += chunk
                            continue
                check = upper_stale
                if e is not None and e.stage is not stage and e.stage == stage:
                    e.stage = stage
                    caches.entry_changed(e)
                if e is None or e.suspect or e.stage is not stage:
                    try:
                        e, check = self._slow_page(sel, e, a, write, check)
                    except TranslationFault as f:
                        if check:
                            self._check_fresh(rid, pasid, priv, exe, write, a, (-1, int(f.reason)))
                        fault = self._fault(rid, pasid, priv, exe, a, write, f.reason, f.fpd)
                        break
                    if sizes is None:
                        sizes = caches.iotlb.get((sel.did, sel.tag))
                else:
                    hits += 1
                perms = e.perms
                if perms & need != need:
                    reason = self._perm_reason(sel, perms, need)
                    if check:
                        self._check_fresh(rid, pasid, priv, exe, write, a, (-1, int(reason)))
                    fault = self._fault(rid, pasid, priv, exe, a, write, reason, sel.fpd)
                    break
                shift = e.shift
                phys = e.phys | (a & ((1 << shift) - 1))
                if check:
                    self._check_fresh(rid, pasid, priv, exe, write, a, (phys & ~0xFFF, 0))
                if write and not e.dirty:
                    e.dirty = True
                    self.walker.set_dirty(stage, e.pte_addr)
                chunk = min(end, ((a >> shift) + 1) << shift) - a
                if phys < INTR_HI and phys + chunk > INTR_LO:
                    reason = FR.SM_INTERRUPT_ADDR if sel.scalable else FR.INTERRUPT_ADDR
                    fault = self._fault(rid, pasid, priv, exe, a, write, reason, sel.fpd)
                    break
                if phys + chunk > ram:
                    chunk = max(0, ram - phys)
                    fault = DmaFault(a + chunk, DMA_FAULT_BUS, write, "outside RAM")
                if phys == run_end or not chunk:
                    run_end += chunk
                else:
                    if run_start >= 0:
                        runs.append((run_start, run_end - run_start))
                    run_start, run_end = phys, phys + chunk
                if fault is not None:
                    break
                a += chunk
            if fault is not None:
                break
            if whole and sizes is not None and not upper_stale:
                caches.build_block(sizes, bn, stage)
        if run_start >= 0:
            runs.append((run_start, run_end - run_start))
        self.stats.iotlb_hits += hits
        return DmaResult(tuple(runs), fault)

    def _slow_page(
        self, sel: _Sel, e: TlbEntry | None, a: int, write: bool, check: bool
    ) -> tuple[TlbEntry, bool]:
        """IOTLB miss (walk and fill) or a hit on an entry that needs re-checking."""
        if e is not None:
            self.stats.iotlb_hits += 1
            if e.stage != sel.stage:
                return e, True
            try:
                leaf: Leaf | None = self._walk(sel, a, write, False)
            except TranslationFault:
                leaf = None
            if leaf is not None and (leaf.phys, leaf.shift, leaf.perms) == (
                e.phys,
                e.shift,
                e.perms,
            ):
                self.caches.deps.rebase(e, leaf.slots)
                self.caches.entry_changed(e)
                return e, check
            return e, True
        self.stats.iotlb_misses += 1
        self.emit("hw_vtd:iotlb_miss", did=sel.did, tag=sel.tag, addr=a)
        leaf = self._walk(sel, a, write, True)
        e = TlbEntry(
            sel.did,
            sel.tag,
            a >> leaf.shift,
            leaf.shift,
            leaf.phys,
            leaf.perms,
            sel.stage,
            leaf.pte_addr,
            leaf.slots,
        )
        e.dirty = sel.stage.kind == KIND_SL and not sel.stage.ssade
        self.caches.put_tlb(e)
        return e, check

    def _passthrough(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        exe: bool,
        addr: int,
        size: int,
        write: bool,
        sel: _Sel,
        upper_stale: bool,
    ) -> DmaResult:
        if upper_stale:
            self._check_fresh(rid, pasid, priv, exe, write, addr, (addr & ~0xFFF, 0))
        limit = 1 << self.cfg.haw
        reason: FR | None = None
        good = size
        if addr + size > limit:
            good = max(0, limit - addr)
            reason = FR.SM_ADDR_BEYOND if sel.scalable else FR.ADDR_BEYOND_MGAW
        if addr < INTR_HI and addr + good > INTR_LO:
            good = max(0, INTR_LO - addr)
            reason = FR.SM_INTERRUPT_ADDR if sel.scalable else FR.INTERRUPT_ADDR
        ram = self.m.memory.size
        fault: DmaFault | None = None
        if reason is not None:
            fault = self._fault(rid, pasid, priv, exe, addr + good, write, reason, sel.fpd)
        in_ram = max(0, min(good, ram - addr))
        if in_ram < good:
            good = in_ram
            fault = DmaFault(addr + good, DMA_FAULT_BUS, write, "outside RAM")
        return DmaResult(((addr, good),) if good else (), fault)

    # -- stale detection (DESIGN §6) --------------------------------------------------------
    def fresh_outcome(
        self, rid: int, pasid: int | None, priv: bool, exe: bool, write: bool, addr: int
    ) -> tuple[int, int]:
        """What the tables in RAM say now for the 4 KiB page at ``addr``, with no cache:
        ``(physical page, 0)`` or ``(-1, fault reason)``. Sets no A/D bits."""
        if pasid is None:
            priv = exe = False
        try:
            self._check_root()
            ctx = self.walker.context(self.root, self.ttm == 1, rid)
            sel = self._select(rid, pasid, priv, exe, ctx, self._fresh_pasid_fn)
            if sel.stage.kind == KIND_PT:
                return addr & ~0xFFF, 0
            leaf = self._walk(sel, addr, write, False)
        except TranslationFault as f:
            return -1, int(f.reason)
        need = self._need(sel, write, priv, exe)
        if leaf.perms & need != need:
            return -1, int(self._perm_reason(sel, leaf.perms, need))
        return (leaf.phys | (addr & ((1 << leaf.shift) - 1))) & ~0xFFF, 0

    def _check_fresh(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        exe: bool,
        write: bool,
        addr: int,
        cached: tuple[int, int],
    ) -> None:
        current = self.fresh_outcome(rid, pasid, priv, exe, write, addr)
        if current == cached:
            return
        self._stale(rid, pasid, addr, cached, current, "iotlb")

    def _stale(
        self,
        rid: int,
        pasid: int | None,
        addr: int,
        cached: tuple[int, ...],
        current: tuple[int, ...],
        cache: str,
    ) -> None:
        """Report the use of a cached translation the tables no longer give."""
        self.stats.stale_uses += 1
        self.emit(
            "hw_vtd:stale_translation",
            rid=rid,
            pasid=pasid,
            addr=addr,
            cached=cached,
            current=current,
            cache=cache,
        )
        if self.cfg.strict_stale:
            raise StaleTranslationError(
                f"{self.name}: rid {rid:#06x} pasid {pasid} addr {addr:#x}: cached "
                f"{cache} translation {cached} used, tables say {current}"
            )

    # -- ATS: translation requests, translated requests, device-TLB (spec 4.2, 6.5.2.5) ------
    def ats_bind(self, rid: int, atc: AddressTranslationCache | None) -> None:
        """Device-TLB invalidations for source-id ``rid`` go to ``atc`` (None: none)."""
        if atc is None:
            self.atcs.pop(rid, None)
        else:
            self.atcs[rid] = atc

    def ats_release(self, entries: Iterable[AtcEntry]) -> None:
        """A device dropped ATC entries: forget their shadows."""
        caches = self.caches
        for e in entries:
            if isinstance(e.shadow, DevTlbShadow):
                caches.drop_devtlb(e.shadow)

    def ats_translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> AtsResult:
        """A PCIe Translation Request, through :meth:`translate_ex` like every request."""
        out: list[AtcEntry] = []
        res = self.translate_ex(rid, pasid, priv, addr, size, write, False, out)
        return AtsResult(tuple(out), res.fault)

    def _ats_request(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> AtsResult:
        """A PCIe Translation Request (VT-d spec 4.2.2; QEMU ``vtd_iommu_ats_do_translate``
        does the same walk): allowed only if the context entry says DTE (scalable) or
        TT=01 (legacy), else fault SCT.5 / LCT.5. Pages are translated through the
        IOTLB (a stale IOTLB entry answers stale, as hardware would, and is reported).
        Each completion entry is one leaf (4 KiB, 2 MiB or 1 GiB) with R, and W only
        for a write request (NW=0: D is set then), so a later write needs a new
        request. Not-present and permission conditions complete with R=W=0 and are
        not recorded as faults (the device reports them; there is no page-request
        path); every other condition is a recorded fault. With remapping off the
        completion is the identity."""
        self.stats.ats_requests += 1
        self.emit(
            "hw_vtd:ats_translate",
            rid=rid,
            pasid=pasid,
            priv=priv,
            addr=addr,
            size=size,
            write=write,
        )
        if pasid is None:
            priv = False
        if size <= 0:
            return AtsResult(())
        if not self.te:
            first, last = addr >> 12, (addr + size - 1) >> 12
            return AtsResult(
                tuple(
                    AtcEntry(pasid, priv, v, 12, v << 12, ATS_R | ATS_W)
                    for v in range(first, last + 1)
                )
            )
        stale_box = [False]
        got: list[PasidInfo] = []
        pasid_fn = self._pasid_cached_fn(rid, stale_box)

        def lookup(ctx: CtxInfo, p: int) -> PasidInfo:
            info = pasid_fn(ctx, p)
            got.append(info)
            return info

        try:
            ce = self._ctx_cached(rid, stale_box)
            if not ce.info.dte:
                reason = FR.SM_CTX_DTE if ce.info.scalable else FR.CTX_TT_BLOCKED
                raise TranslationFault(reason, ce.info.fpd)
            sel = self._select(rid, pasid, priv, False, ce.info, lookup)
        except TranslationFault as f:
            if stale_box[0]:
                self._check_fresh(rid, pasid, priv, False, write, addr, (-1, int(f.reason)))
            return AtsResult((), self._fault(rid, pasid, priv, False, addr, write, f.reason, f.fpd))
        upper = ce.info.slots | got[0].slots if got else ce.info.slots
        if sel.stage.kind == KIND_PT:
            return self._ats_passthrough(rid, pasid, priv, addr, size, write, sel, upper)
        return self._ats_pages(rid, pasid, priv, addr, size, write, sel, upper, stale_box[0])

    def _ats_pages(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        addr: int,
        size: int,
        write: bool,
        sel: _Sel,
        upper: frozenset[int],
        upper_stale: bool,
    ) -> AtsResult:
        caches = self.caches
        stage = sel.stage
        need_r = self._need(sel, False, priv, False)
        need_w = self._need(sel, True, priv, False)
        want = ATS_W if write else ATS_R
        sizes = caches.iotlb.get((sel.did, sel.tag))
        out: list[AtcEntry] = []
        fault: DmaFault | None = None
        a, end = addr, addr + size
        while a < end:
            e: TlbEntry | None = None
            if sizes is not None:
                e = sizes[0].get(a >> 12) or sizes[1].get(a >> 21) or sizes[2].get(a >> 30)
            check = upper_stale
            if e is not None and e.stage is not stage and e.stage == stage:
                e.stage = stage
                caches.entry_changed(e)
            if e is None or e.suspect or e.stage is not stage:
                try:
                    e, check = self._slow_page(sel, e, a, write, check)
                except TranslationFault as f:
                    if check:
                        self._check_fresh(rid, pasid, priv, False, write, a, (-1, int(f.reason)))
                    fault = self._ats_fault(rid, pasid, priv, a, write, f.reason, f.fpd)
                    break
                if sizes is None:
                    sizes = caches.iotlb.get((sel.did, sel.tag))
            else:
                self.stats.iotlb_hits += 1
            perms = e.perms
            rw = ATS_R if perms & need_r == need_r else 0
            if write and perms & need_w == need_w:
                rw |= ATS_W
            shift = e.shift
            if not rw & want:
                reason = self._perm_reason(sel, perms, need_w if write else need_r)
                if check:
                    self._check_fresh(rid, pasid, priv, False, write, a, (-1, int(reason)))
                fault = self._ats_fault(rid, pasid, priv, a, write, reason, sel.fpd)
                break
            phys = e.phys
            if check:
                page = (phys | (a & ((1 << shift) - 1))) & ~0xFFF
                self._check_fresh(rid, pasid, priv, False, write, a, (page, 0))
            if phys < INTR_HI and phys + (1 << shift) > INTR_LO:
                reason = FR.SM_INTERRUPT_ADDR if sel.scalable else FR.INTERRUPT_ADDR
                fault = self._fault(rid, pasid, priv, False, a, write, reason, sel.fpd)
                break
            if write and not e.dirty:
                e.dirty = True
                self.walker.set_dirty(stage, e.pte_addr)
            vpn = a >> shift
            shadow = DevTlbShadow(rid, pasid, priv, vpn, shift, phys, rw, e.slots | upper)
            caches.put_devtlb(shadow)
            out.append(AtcEntry(pasid, priv, vpn, shift, phys, rw, shadow))
            a = (vpn + 1) << shift
        return AtsResult(tuple(out), fault)

    def _ats_passthrough(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        addr: int,
        size: int,
        write: bool,
        sel: _Sel,
        upper: frozenset[int],
    ) -> AtsResult:
        """Pass-through: identity 4 KiB completions below the host address width and
        outside the interrupt range (as :meth:`_passthrough` checks untranslated ones)."""
        limit = 1 << self.cfg.haw
        out: list[AtcEntry] = []
        fault: DmaFault | None = None
        for vpn in range(addr >> 12, ((addr + size - 1) >> 12) + 1):
            page = vpn << 12
            reason: FR | None = None
            if page >= limit:
                reason = FR.SM_ADDR_BEYOND
            elif INTR_LO <= page < INTR_HI:
                reason = FR.SM_INTERRUPT_ADDR
            if reason is not None:
                a = max(page, addr)
                fault = self._fault(rid, pasid, priv, False, a, write, reason, sel.fpd)
                break
            shadow = DevTlbShadow(rid, pasid, priv, vpn, 12, page, ATS_R | ATS_W, upper)
            self.caches.put_devtlb(shadow)
            out.append(AtcEntry(pasid, priv, vpn, 12, page, ATS_R | ATS_W, shadow))
        return AtsResult(tuple(out), fault)

    def _ats_fault(
        self, rid: int, pasid: int | None, priv: bool, addr: int, write: bool, reason: FR, fpd: bool
    ) -> DmaFault:
        if reason in ATS_NO_ACCESS:
            self.stats.ats_no_access += 1
            return DmaFault(addr, int(reason), write, f"ATS completion R=W=0 ({reason.name})")
        return self._fault(rid, pasid, priv, False, addr, write, reason, fpd)

    def ats_translated(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        write: bool,
        entries: Sequence[AtcEntry],
        blocks: Sequence[AtcBlock],
    ) -> DmaFault | None:
        """Translated requests of one device access (VT-d spec 4.2.3): let through when
        the context entry allows device-TLB use (DTE / TT=01) or remapping is off,
        else blocked with fault SCT.5 / LCT.5 (the cached context entry decides, as in
        hardware). Then the shadow check (DESIGN §6): an ATC entry whose source table
        entries (context, PASID, paging) changed is re-walked and, if the tables no
        longer give it, reported as a stale ``devtlb`` use. Block summaries are
        checked in O(1) while nothing anywhere became suspect since their last check."""
        self.stats.ats_translated += 1
        if not self.te:
            return None
        first = entries[0].addr if entries else blocks[0].entries[0].addr
        stale_box = [False]
        try:
            ce = self._ctx_cached(rid, stale_box)
            info = ce.info
            if not info.dte:
                reason = FR.SM_CTX_DTE if info.scalable else FR.CTX_TT_BLOCKED
                raise TranslationFault(reason, info.fpd)
        except TranslationFault as f:
            return self._fault(rid, pasid, priv, False, first, write, f.reason, f.fpd)
        for e in entries:
            sh = e.shadow
            if sh is not None and sh.suspect:
                self._verify_devtlb(sh, write)
        deps = self.caches.deps
        for blk in blocks:
            if blk.stamp != deps.version:
                clean = True
                for e in blk.entries:
                    sh = e.shadow
                    if sh is not None and sh.suspect:
                        clean = self._verify_devtlb(sh, write) and clean
                if clean:
                    blk.stamp = deps.version
        return None

    def _verify_devtlb(self, sh: object, write: bool) -> bool:
        """Re-walk a suspect shadow: rebase it if the tables still give the same leaf
        and rights, else report the stale use. Returns whether it still matches."""
        if not isinstance(sh, DevTlbShadow):  # pragma: no cover - another agent's shadow
            return True
        addr = sh.vpn << sh.shift
        current, slots = self._fresh_view(sh.rid, sh.pasid, sh.priv, addr)
        cached = (sh.phys, sh.shift, sh.perms)
        if slots is not None and current[:2] == cached[:2] and current[2] & sh.perms == sh.perms:
            self.caches.deps.rebase(sh, slots)
            return True
        self._stale(sh.rid, sh.pasid, addr, cached, current, "devtlb")
        return False

    def _fresh_view(
        self, rid: int, pasid: int | None, priv: bool, addr: int
    ) -> tuple[tuple[int, ...], frozenset[int] | None]:
        """What a Translation Request for the page at ``addr`` would get from the
        tables now, with no cache and no A/D update: ``(phys, shift, R|W)`` and the
        granules read, or ``(-1, fault reason)`` and None."""
        got: list[PasidInfo] = []

        def lookup(ctx: CtxInfo, p: int) -> PasidInfo:
            info = self.walker.pasid_entry(ctx, p)
            got.append(info)
            return info

        try:
            self._check_root()
            ctx = self.walker.context(self.root, self.ttm == 1, rid)
            if not ctx.dte:
                raise TranslationFault(FR.SM_CTX_DTE if ctx.scalable else FR.CTX_TT_BLOCKED)
            sel = self._select(rid, pasid, priv, False, ctx, lookup)
            slots = ctx.slots | got[0].slots if got else ctx.slots
            if sel.stage.kind == KIND_PT:
                return (addr & ~0xFFF, 12, ATS_R | ATS_W), slots
            leaf = self._walk(sel, addr, False, False)
        except TranslationFault as f:
            return (-1, int(f.reason)), None
        need_r = self._need(sel, False, priv, False)
        need_w = self._need(sel, True, priv, False)
        rw = (ATS_R if leaf.perms & need_r == need_r else 0) | (
            ATS_W if leaf.perms & need_w == need_w else 0
        )
        return (leaf.phys, leaf.shift, rw), slots | frozenset(leaf.slots)

    def devtlb_invalidate(
        self, sid: int, pasid: int | None, all_pasids: bool, addr: int, size: int
    ) -> bool:
        """Send an Invalidation Request to the ATC of ``sid`` (QI types 3 and 8).
        Returns whether a device took it (and will answer with a completion)."""
        self.stats.invalidations += 1
        self.emit(
            "hw_vtd:devtlb_invalidate",
            sid=sid,
            pasid=pasid,
            all_pasids=all_pasids,
            addr=addr,
            size=size,
        )
        atc = self.atcs.get(sid)
        if atc is None:
            return False
        self.stats.devtlb_invalidations += 1
        atc.invalidate(pasid, addr, size, all_pasids)
        return True

    # -- fault recording -----------------------------------------------------------------------
    def _fault(
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
        self.stats.faults += 1
        if fpd and reason not in NON_QUALIFIED:
            self.stats.faults_suppressed += 1
        elif self.faults.record(rid, addr, int(reason), write, pasid, priv, exe):
            self.stats.faults_recorded += 1
        else:
            self.stats.faults_overflow += 1
        self.emit("hw_vtd:fault", rid=rid, pasid=pasid, addr=addr, reason=int(reason), write=write)
        return DmaFault(addr, int(reason), write, reason.name)

    # -- debug ---------------------------------------------------------------------------------
    def dump(self) -> str:
        """Render the structures reachable from the latched root pointer as text."""
        from hw.vtd.dump import dump_unit

        return dump_unit(self)
