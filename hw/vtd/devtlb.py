"""VT-d as a PCIe ATS translation agent: Translation Requests, translated requests and
device-TLB invalidation (VT-d spec 4.2, 6.5.2.5; QEMU ``vtd_iommu_ats_do_translate``).

A Translation Request goes through the same selection and the same pipeline run as
an untranslated request (:mod:`hw.vtd.translate`), collecting the IOTLB entries it
used; each becomes one ATC entry (:class:`hw.ats.AtcEntry`, a
:class:`hw.translation.TlbEntry`) that depends on the context, PASID and paging
granules it came from and is tracked by the unit while the device holds it, so a
translated request that uses it after those changed without a device-TLB
invalidation is reported as a stale ``devtlb`` use (DESIGN §6).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from hw.ats import ATS_R, ATS_W, AddressTranslationCache, AtcEntry, AtsResult
from hw.bus import DMA_FAULT_BUS, DmaFault
from hw.translation import INTR_HI, INTR_LO, NEVER, TlbEntry, translate_run
from hw.vtd.faults import FR, TranslationFault
from hw.vtd.translate import PageSlowPath, Sel, need_bits
from hw.vtd.walk import KIND_PT, CtxInfo, PasidInfo

if TYPE_CHECKING:
    from hw.pagewatch import SlotTracker
    from hw.vtd.unit import VtdUnit

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


class DeviceTlb:
    """The ATS agent side of one unit (the unit's ``ats_*`` methods land here)."""

    def __init__(self, unit: VtdUnit) -> None:
        self.unit = unit
        self.atcs: dict[int, AddressTranslationCache] = {}
        """ATS-enabled functions behind this unit, by source-id: where device-TLB
        invalidations go (PCIe Invalidation Requests)."""

    @property
    def tracker(self) -> SlotTracker:
        return self.unit.pipeline.deps

    def bind(self, rid: int, atc: AddressTranslationCache | None) -> None:
        if atc is None:
            self.atcs.pop(rid, None)
        else:
            self.atcs[rid] = atc

    def release(self, entries: Iterable[TlbEntry]) -> None:
        pipeline = self.unit.pipeline
        for e in entries:
            pipeline.drop_devtlb(e)

    # -- Translation Requests ---------------------------------------------------------------
    def request(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> AtsResult:
        """A PCIe Translation Request (VT-d spec 4.2.2): allowed only if the context
        entry says DTE (scalable) or TT=01 (legacy), else fault SCT.5 / LCT.5. Pages
        are translated through the IOTLB (a stale IOTLB entry answers stale, as
        hardware would, and is reported). Each completion entry is one leaf (4 KiB,
        2 MiB or 1 GiB) with R, and W only for a write request (NW=0: D is set then),
        so a later write needs a new request. Not-present and permission conditions
        complete with R=W=0 and are not recorded as faults (the fault the device sees
        is marked ``no_access``: a function with PRI may send a page request for it,
        :mod:`hw.pri`); every other condition is a recorded fault.
        With remapping off the completion is the identity."""
        unit = self.unit
        unit.stats.ats_requests += 1
        unit.emit(
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
        if not unit.te:
            first, last = addr >> 12, (addr + size - 1) >> 12
            return AtsResult(
                tuple(
                    AtcEntry(pasid, priv, v, 12, v << 12, ATS_R | ATS_W)
                    for v in range(first, last + 1)
                )
            )
        x = unit.xlate
        stale_box = [False]
        got: list[PasidInfo] = []
        pasid_fn = x.pasid_cached_fn(rid, stale_box)

        def lookup(ctx: CtxInfo, p: int) -> PasidInfo:
            info = pasid_fn(ctx, p)
            got.append(info)
            return info

        try:
            ce = x.ctx_cached(rid, stale_box)
            if not ce.info.dte:
                reason = FR.SM_CTX_DTE if ce.info.scalable else FR.CTX_TT_BLOCKED
                raise TranslationFault(reason, ce.info.fpd)
            sel = x.select(pasid, priv, False, ce.info, lookup)
        except TranslationFault as f:
            if stale_box[0]:
                x.check_fresh(rid, pasid, priv, False, write, addr, (-1, int(f.reason)))
            return AtsResult((), unit.fault(rid, pasid, priv, False, addr, write, f.reason, f.fpd))
        upper = ce.info.slots | got[0].slots if got else ce.info.slots
        if sel.stage.kind == KIND_PT:
            return self._passthrough(rid, pasid, priv, addr, size, write, sel, upper)
        slow = PageSlowPath(x, rid, pasid, priv, False, write, sel, stale_box[0], True)
        used: list[TlbEntry] = []
        try:
            _runs, stop, hits = translate_run(
                unit.pipeline.iotlb,
                (sel.did, sel.tag),
                NEVER if stale_box[0] else sel.stage,
                slow.need,
                not write,
                addr,
                addr + size,
                write,
                slow.page,
                used,
            )
        finally:
            slow.finish()
        unit.stats.iotlb_hits += hits
        if stop is not None and stop.reason == DMA_FAULT_BUS:
            stop = None  # a translation beyond RAM is a valid completion
        need_r = need_bits(sel, False, priv, False)
        need_w = need_bits(sel, True, priv, False)
        out: list[AtcEntry] = []
        for e in used:
            perms = e.perms
            rw = ATS_R if perms & need_r == need_r else 0
            if write and perms & need_w == need_w:
                rw |= ATS_W
            out.append(self._issue(pasid, priv, e.vpn, e.shift, e.phys, rw, upper.union(e.slots)))
        return AtsResult(tuple(out), stop)

    def _issue(
        self,
        pasid: int | None,
        priv: bool,
        vpn: int,
        shift: int,
        phys: int,
        rw: int,
        slots: Collection[int],
    ) -> AtcEntry:
        entry = AtcEntry(pasid, priv, vpn, shift, phys, rw, slots)
        self.unit.pipeline.put_devtlb(entry)
        return entry

    def _passthrough(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        addr: int,
        size: int,
        write: bool,
        sel: Sel,
        upper: frozenset[int],
    ) -> AtsResult:
        """Pass-through: identity 4 KiB completions below the host address width and
        outside the interrupt range (as untranslated pass-through requests are)."""
        unit = self.unit
        limit = 1 << unit.cfg.haw
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
                fault = unit.fault(rid, pasid, priv, False, a, write, reason, sel.fpd)
                break
            out.append(self._issue(pasid, priv, vpn, 12, page, ATS_R | ATS_W, upper))
        return AtsResult(tuple(out), fault)

    def ats_fault(
        self, rid: int, pasid: int | None, priv: bool, addr: int, write: bool, reason: FR, fpd: bool
    ) -> DmaFault:
        if reason in ATS_NO_ACCESS:
            self.unit.stats.ats_no_access += 1
            return DmaFault(
                addr, int(reason), write, f"ATS completion R=W=0 ({reason.name})", no_access=True
            )
        return self.unit.fault(rid, pasid, priv, False, addr, write, reason, fpd)

    # -- translated requests ------------------------------------------------------------------
    def translated(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        write: bool,
        addr: int,
        suspects: Sequence[TlbEntry],
    ) -> DmaFault | None:
        """Translated requests of one device access (VT-d spec 4.2.3): let through when
        the context entry allows device-TLB use (DTE / TT=01) or remapping is off,
        else blocked with fault SCT.5 / LCT.5 (the cached context entry decides, as in
        hardware). Then the shadow check (DESIGN §6): an ATC entry the access used
        whose source table entries (context, PASID, paging) changed is re-walked and,
        if the tables no longer give it, reported as a stale ``devtlb`` use."""
        unit = self.unit
        unit.stats.ats_translated += 1
        if not unit.te:
            return None
        try:
            info = unit.xlate.ctx_cached(rid, [False]).info
            if not info.dte:
                reason = FR.SM_CTX_DTE if info.scalable else FR.CTX_TT_BLOCKED
                raise TranslationFault(reason, info.fpd)
        except TranslationFault as f:
            return unit.fault(rid, pasid, priv, False, addr, write, f.reason, f.fpd)
        for e in suspects:
            if e.suspect:
                self._verify(rid, e)
        return None

    def _verify(self, rid: int, e: TlbEntry) -> bool:
        """Re-walk a suspect ATC entry: rebase it if the tables still give the same
        leaf and rights, else report the stale use. Returns whether it still matches."""
        if not isinstance(e, AtcEntry):  # pragma: no cover - another agent's entry
            return True
        addr = e.vpn << e.shift
        current, slots = self.fresh_view(rid, e.pasid, e.priv, addr)
        cached = (e.phys, e.shift, e.perms)
        if slots is not None and current[:2] == cached[:2] and current[2] & e.perms == e.perms:
            return self.unit.pipeline.revalidate(e, True, slots)
        self.unit.xlate.stale(rid, e.pasid, addr, cached, current, "devtlb")
        return False

    def fresh_view(
        self, rid: int, pasid: int | None, priv: bool, addr: int
    ) -> tuple[tuple[int, ...], frozenset[int] | None]:
        """What a Translation Request for the page at ``addr`` would get from the
        tables now, with no cache and no A/D update: ``(phys, shift, R|W)`` and the
        granules read, or ``(-1, fault reason)`` and None."""
        unit = self.unit
        x = unit.xlate
        got: list[PasidInfo] = []

        def lookup(ctx: CtxInfo, p: int) -> PasidInfo:
            info = unit.walker.pasid_entry(ctx, p)
            got.append(info)
            return info

        try:
            x.check_root()
            ctx = unit.walker.context(unit.root, unit.ttm == 1, rid)
            if not ctx.dte:
                raise TranslationFault(FR.SM_CTX_DTE if ctx.scalable else FR.CTX_TT_BLOCKED)
            sel = x.select(pasid, priv, False, ctx, lookup)
            slots = ctx.slots | got[0].slots if got else ctx.slots
            if sel.stage.kind == KIND_PT:
                return (addr & ~0xFFF, 12, ATS_R | ATS_W), slots
            leaf = x.walk(sel, addr, False, False)
        except TranslationFault as f:
            return (-1, int(f.reason)), None
        need_r = need_bits(sel, False, priv, False)
        need_w = need_bits(sel, True, priv, False)
        rw = (ATS_R if leaf.perms & need_r == need_r else 0) | (
            ATS_W if leaf.perms & need_w == need_w else 0
        )
        return (leaf.phys, leaf.shift, rw), slots | frozenset(leaf.slots)

    # -- device-TLB invalidation ------------------------------------------------------------
    def invalidate(
        self, sid: int, pasid: int | None, all_pasids: bool, addr: int, size: int
    ) -> bool:
        """Send an Invalidation Request to the ATC of ``sid`` (QI types 3 and 8).
        Returns whether a device took it (and will answer with a completion)."""
        unit = self.unit
        unit.stats.invalidations += 1
        unit.emit(
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
        unit.stats.devtlb_invalidations += 1
        atc.invalidate(pasid, addr, size, all_pasids)
        return True
