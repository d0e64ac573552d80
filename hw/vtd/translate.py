"""VT-d request translation: how a request selects its tables, and the vendor half of
the shared pipeline (:mod:`hw.translation`).

A request (requester ID, PASID, Priv, Exe) selects a context entry, then in scalable
mode a PASID entry, and from it a :class:`~hw.vtd.walk.Stage` (facts A10.5; QEMU
``vtd_do_iommu_translate``). Context and PASID entries come from the unit's caches
and are re-checked against the tables when a write touched what they were read
from. The pages then go through :func:`hw.translation.translate_run` with the IOTLB
tag ``(DID, PASID or -1)`` and the stage as source; :class:`PageSlowPath` is what a
page the hit path cannot answer gets: a walk and fill, the re-check of a suspect
entry, permission and interrupt-range faults, the D-bit update after a permitted
write, and the stale-use check (DESIGN §6) when a cached answer may differ from the
tables. Pass-through stages never reach the IOTLB.

Nested stages (PGTT=3) are a separate branch wherever the stage kind is already
dispatched on: the walk is :meth:`~hw.vtd.walk.Walker.walk_nested`, the IOTLB entry a
:class:`~hw.vtd.caches.NestTlbEntry` tagged ``(DID, PASID | NEST_TAG)`` that also
remembers the second-stage leaf of its output page for the A/D updates.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from attrs import Factory, define

from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult, Finding, dma_result
from hw.translation import (
    BLOCK,
    BLOCK_SHIFT,
    INTR_HI,
    INTR_LO,
    NEVER,
    TlbEntry,
    translate_page,
    translate_run,
)
from hw.vtd import entries as ent
from hw.vtd.caches import NEST_TAG, SL_TAG, CtxEntry, NestTlbEntry
from hw.vtd.faults import FR, TranslationFault
from hw.vtd.findings import stale_finding
from hw.vtd.walk import (
    KIND_FL,
    KIND_NEST,
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
    WalkMemo,
)

if TYPE_CHECKING:
    from hw.vtd.unit import VtdUnit

PasidLookup = Callable[[CtxInfo, int], PasidInfo]

_FL_A, _FL_D = ent.FlPte.A.mask, ent.FlPte.D.mask
_SL_A, _SL_D = ent.SlPte.A.mask, ent.SlPte.D.mask


@define(slots=True)
class Sel:
    """What a request resolved to before the page walk. Derived from one cached
    context entry (legacy) or PASID entry (scalable) alone, so the cache keeps it on
    that entry (:meth:`Translation.translate`) and a request whose entries are clean
    builds none."""

    scalable: bool
    stage: Stage
    did: int
    tag: int
    fpd: bool
    pasid: int | None
    """PASID used for the lookup (RID_PASID for requests without PASID in scalable mode)."""
    wpe: bool
    key: tuple[int, int] = (0, 0)
    """The IOTLB tag ``(did, tag)``."""
    a_bit: int = 0
    """The leaf's accessed bit when the stage keeps A/D (0: it keeps none)."""
    d_bit: int = 0
    """The leaf's dirty bit when the stage keeps A/D (0: it keeps none)."""
    entry_dirty: bool = True
    """Whether a filled IOTLB entry needs no D update (a stage without A/D)."""
    one_page: bool = False
    """A first- or second-stage table (a one-page miss may be filled in line)."""
    sl4: bool = False
    """A 4-level second stage without A/D: :meth:`Walker.walk_sl4` walks it."""
    needs: tuple[int, ...] = ()
    """:func:`need_bits` for each request kind, indexed ``write | priv << 1 | exe << 2``."""
    slows: list[PageSlowPath | None] = Factory(lambda: [None] * 16)
    """The slow path of each kind of request through this selection, indexed ``write |
    priv << 1 | exe << 2 | (pasid is None) << 3`` (a cached selection belongs to one
    requester, so that is all a request's slow path depends on); built on first use,
    reset after each request (its walk memo and fill-ahead count)."""

    def __attrs_post_init__(self) -> None:
        st = self.stage
        self.key = (self.did, self.tag)
        self.needs = tuple(need_bits(self, bool(i & 1), bool(i & 2), bool(i & 4)) for i in range(8))
        if st.kind == KIND_FL or st.kind == KIND_NEST:  # nested: the first-stage leaf's
            self.a_bit, self.d_bit = _FL_A, _FL_D
        elif st.kind == KIND_SL and st.ssade:
            self.a_bit, self.d_bit = _SL_A, _SL_D
        self.entry_dirty = not self.a_bit
        self.one_page = st.kind <= KIND_FL
        self.sl4 = st.kind == KIND_SL and st.levels == 4 and not st.ssade


def ctx_sel(ctx: CtxInfo) -> Sel:
    """The selection of a legacy-mode context entry (facts A10.5 step 2)."""
    assert ctx.stage is not None
    return Sel(False, ctx.stage, ctx.did, SL_TAG, ctx.fpd, None, False)


def pasid_sel(pe: PasidInfo, eff: int) -> Sel:
    """The selection of scalable-mode PASID entry ``pe`` for PASID ``eff``."""
    kind = pe.stage.kind
    tag = eff if kind == KIND_FL else SL_TAG if kind != KIND_NEST else eff | NEST_TAG
    return Sel(True, pe.stage, pe.did, tag, pe.fpd, eff, pe.wpe)


def need_bits(sel: Sel, write: bool, priv: bool, exe: bool) -> int:
    """The rights a request needs from the leaf (first stage: U/S, WPE, XD rules)."""
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


def perm_reason(sel: Sel, perms: int, need: int) -> FR:
    missing = need & ~perms
    if not sel.scalable:
        return FR.WRITE if missing & PERM_W else FR.READ
    if missing & PERM_U:
        return FR.SM_US
    if missing & PERM_X:
        return FR.SM_EXEC
    return FR.SM_WRITE if missing & PERM_W else FR.SM_READ


def _no_pasid_table(ctx: CtxInfo, pasid: int) -> PasidInfo:  # pragma: no cover - never called
    """The PASID lookup of a legacy-mode context entry (legacy selection never asks)."""
    raise TranslationFault(FR.SM_TTM_LEGACY_PASID)


class Translation:
    """The translation side of one unit (the unit's ``translate`` lands here)."""

    def __init__(self, unit: VtdUnit) -> None:
        self.unit = unit
        self.stats = unit.stats

    def attach(self) -> None:
        """The unit was attached: bind its RAM-side parts (no lookups per request)."""
        unit = self.unit
        self.walker = unit.walker
        self.caches = unit.caches
        self.sels = unit.caches.sels
        self.pipeline = unit.pipeline
        self.iotlb = unit.pipeline.iotlb
        self.machine = unit.m
        self.one_page_fills = True
        """Whether :meth:`translate` fills a one-page plain miss itself (off: every
        miss through :class:`PageSlowPath`, the reference its tests compare with)."""

    # -- table selection ------------------------------------------------------------
    def check_root(self) -> None:
        unit = self.unit
        if unit.ttm == 0b10 or unit.ttm == 0b11 or (unit.ttm == 1 and not unit.cfg.smts):
            raise TranslationFault(FR.SM_RTADDR_INVALID)

    def ctx_cached(self, rid: int, stale_box: list[bool]) -> CtxEntry:
        unit = self.unit
        caches, walker = self.caches, self.walker
        if unit.ttm > 1 or (unit.ttm == 1 and not unit.cfg.smts):
            raise TranslationFault(FR.SM_RTADDR_INVALID)
        e = caches.ctx.get(rid)
        if e is None:
            self.stats.ctx_misses += 1
            return caches.put_ctx(rid, walker.context(unit.root, unit.ttm == 1, rid))
        self.stats.ctx_hits += 1
        if e.suspect:
            try:
                fresh: CtxInfo | None = walker.context(unit.root, unit.ttm == 1, rid)
            except TranslationFault:
                fresh = None
            if fresh is None or not unit.pipeline.revalidate(e, fresh == e.info, fresh.slots):
                stale_box[0] = True
        return e

    def pasid_cached_fn(self, rid: int, stale_box: list[bool]) -> PasidLookup:
        unit = self.unit

        caches, walker, stats = self.caches, self.walker, self.stats

        def lookup(ctx: CtxInfo, pasid: int) -> PasidInfo:
            e = caches.pasid.get((rid, pasid))
            if e is None:
                stats.pasid_misses += 1
                return caches.put_pasid(rid, pasid, walker.pasid_entry(ctx, pasid)).info
            stats.pasid_hits += 1
            if e.suspect:
                try:
                    fctx = walker.context(unit.root, unit.ttm == 1, rid)
                    fresh: PasidInfo | None = walker.pasid_entry(fctx, pasid)
                except TranslationFault:
                    fresh = None
                if fresh is None or not unit.pipeline.revalidate(e, fresh == e.info, fresh.slots):
                    stale_box[0] = True
            return e.info

        return lookup

    @staticmethod
    def select(
        pasid: int | None, priv: bool, exe: bool, ctx: CtxInfo, pasid_fn: PasidLookup
    ) -> Sel:
        """Context entry -> stage selection (facts A10.5 steps 2-5)."""
        if not ctx.scalable:
            if pasid is not None:
                raise TranslationFault(FR.SM_TTM_LEGACY_PASID)
            return ctx_sel(ctx)
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
        return pasid_sel(pe, eff)

    def walk(self, sel: Sel, addr: int, write: bool, update: bool) -> Leaf:
        st = sel.stage
        walker = self.walker
        if st.kind == KIND_FL:
            return walker.walk_fl(st, addr, sel.fpd, update)
        if st.kind == KIND_NEST:
            return walker.walk_nested(st, addr, write, sel.fpd, update)
        return walker.walk_sl(st, addr, write, sel.scalable, sel.fpd, update)

    # -- requests ------------------------------------------------------------------------
    def translate(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        addr: int,
        size: int,
        write: bool,
        exe: bool = False,
    ) -> DmaResult:
        """An untranslated request with remapping on: select, then the pipeline
        (:meth:`VtdUnit.translate` itself while no protected range is enabled).

        The selection of a request whose context entry (and PASID entry) are cached
        and clean is the one kept on that entry (derived from it alone), counting the
        cache hits; otherwise the general way (:meth:`ctx_cached`, :meth:`select`)
        re-checks suspect entries and raises the faults."""
        key: Hashable
        if pasid is None:
            priv = exe = False
            key = rid
            kind: int = write  # the request kind (Sel.needs): priv and exe are clear
        else:
            key = (rid, pasid, priv, exe)
            kind = write | priv << 1 | exe << 2
        if size <= 0:
            return DmaResult(())
        stats = self.stats
        sel = self.sels.get(key)
        upper_stale = False
        if sel is not None:
            stats.ctx_hits += 1
            if sel.scalable:
                stats.pasid_hits += 1
        else:
            caches = self.caches
            ce = caches.ctx.get(rid)
            # A clean entry was read (or re-checked) under the current RTADDR: latching
            # a new one (SRTP) marks every entry suspect, and :meth:`ctx_cached` refuses
            # a reserved TTM before it re-checks one.
            if ce is not None and not ce.suspect:
                ctx = ce.info
                if not ctx.scalable:
                    if pasid is None:
                        sel = ce.sel
                        if sel is None:
                            sel = ce.sel = ctx_sel(ctx)
                        stats.ctx_hits += 1
                elif pasid is None or ctx.paside:
                    eff = ctx.rid_pasid if pasid is None else pasid
                    pe = caches.pasid.get((rid, eff))
                    if (
                        pe is not None
                        and not pe.suspect
                        and (not priv or pe.info.sre)
                        and (not exe or pe.info.ere)
                    ):
                        sel = pe.sel
                        if sel is None:
                            sel = pe.sel = pasid_sel(pe.info, eff)
                        stats.ctx_hits += 1
                        stats.pasid_hits += 1
            if sel is not None:
                self.sels[key] = sel
            else:
                stale_box = [False]
                try:
                    ctx = self.ctx_cached(rid, stale_box).info
                    lookup = (
                        self.pasid_cached_fn(rid, stale_box) if ctx.scalable else _no_pasid_table
                    )
                    sel = self.select(pasid, priv, exe, ctx, lookup)
                except TranslationFault as f:
                    if stale_box[0]:
                        self.check_fresh(rid, pasid, priv, exe, write, addr, (-1, int(f.reason)))
                    return DmaResult(
                        (), self.unit.fault(rid, pasid, priv, exe, addr, write, f.reason, f.fpd)
                    )
                upper_stale = stale_box[0]
        stage = sel.stage
        if (
            sel.one_page
            and (off := addr & 0xFFF) + size <= 0x1000
            and not upper_stale
            and self.one_page_fills
            and self.machine.hw_trace is None
        ):
            # One page of a first- or second-stage table, a clean selection: a plain
            # miss (nothing cached for the page) that walks to a leaf granting the
            # request, in RAM (so outside the interrupt range), is filled and answered
            # here, as the slow path would (:meth:`PageSlowPath.page`: the miss, the
            # fill, the leaf's A/D update). Any other outcome goes the general way
            # below, which walks again (the first walk's only side effect, A flags
            # above the leaf, is what that walk sets too).
            iotlb = self.iotlb
            t = iotlb.tables.get(sel.key)
            if t is None or not (  # lookups by page number: small-int shifts
                t[0].get(v := addr >> 12) or t[1].get(v >> 9) or t[2].get(v >> 18)
            ):
                # The straight walk without walk_sl's call (a 4 KiB leaf, tagged and
                # clean: a stage without A/D); anything else walk_sl's or walk_fl's.
                e = (
                    self.walker.walk_sl4(stage, addr, sel.scalable, None, sel.key)
                    if sel.sl4
                    else None
                )
                if e is not None:
                    phys = e.phys | off
                else:
                    try:
                        if stage.kind == KIND_SL:
                            e = self.walker.walk_sl(
                                stage, addr, write, sel.scalable, sel.fpd, True, None, False
                            )
                        else:
                            e = self.walker.walk_fl(stage, addr, sel.fpd, True, None, False)
                    except TranslationFault:
                        pass
                    else:
                        e.tag = sel.key
                        e.dirty = sel.entry_dirty or write
                        phys = e.phys | (addr & ((1 << e.shift) - 1))
                if e is not None:
                    need = sel.needs[kind]
                    # No RAM overlaps the interrupt range (hw.machine.PCI_HOLE).
                    if e.perms & need == need and phys + size <= iotlb.ram:
                        stats.iotlb_misses += 1
                        iotlb.put(e)
                        if sel.a_bit:
                            self.walker.set_bits(
                                e.pte_addr, sel.a_bit | sel.d_bit if write else sel.a_bit
                            )
                        return dma_result((((phys, size),), None))
        if stage.kind == KIND_PT:
            return self.passthrough(rid, pasid, priv, exe, addr, size, write, sel, upper_stale)
        end = addr + size
        if upper_stale:
            slow = PageSlowPath(self, rid, pasid, priv, exe, write, sel, True, False)
        else:  # the selection's slow path for this kind of request, built once
            kind |= (pasid is None) << 3
            cached = sel.slows[kind]
            if cached is None:
                slow = sel.slows[kind] = PageSlowPath(
                    self, rid, pasid, priv, exe, write, sel, False, False
                )
            elif cached.busy:  # a request made while another of its kind runs
                slow = PageSlowPath(self, rid, pasid, priv, exe, write, sel, False, False)
            else:
                slow = cached
        slow.busy = True
        try:
            request = (
                self.iotlb,
                sel.key,
                NEVER if upper_stale else stage,
                slow.need,
                not write,
                addr,
                end,
                write,
                slow.page,
            )
            if addr >> 12 == (end - 1) >> 12:  # one page: the pipeline without its loops
                runs, fault, hits = translate_page(*request)
            else:
                run_list, fault, hits = translate_run(*request)
                runs = tuple(run_list)
        finally:
            slow.busy = False
            if slow.ad:
                slow.finish()
            if slow.memo is not None:  # valid within its request only
                slow.memo = None
        if hits:  # a request that hit nothing filled nothing ahead either
            stats.iotlb_hits += hits - slow.ahead
        if slow.ahead:
            slow.ahead = 0
        return dma_result((runs, fault))

    def fill_ahead(self, slow: PageSlowPath, memo: WalkMemo, a: int, lim: int) -> None:
        """Fill the IOTLB for the pages ``[a, lim)`` of the request, all in the
        last-level table the walk of the page before ``a`` reached (``memo``), with
        one read of that table (:meth:`Walker.leaf_run`) instead of one walk each.
        Exactly what the per-page fills would give: each page is a miss with the
        same leaf, rights, A/D update and granules; it stops before the first page
        those would not fill-and-use (not a present 4 KiB leaf, a right missing,
        outside RAM or in the interrupt range, an entry already cached), which the
        per-page path then takes. Not used with hardware tracing on (one miss event
        per page), when an upper-level entry must be re-checked, or for a nested
        stage (:meth:`fill_nested` walks page by page)."""
        unit = self.unit
        if unit.machine is not None and unit.machine.hw_trace is not None:
            return
        sel = slow.sel
        t = self.iotlb.tables[sel.key]
        d4 = t[0]  # the walk before missed in all sizes: no 2 MiB/1 GiB entry covers a
        run = self.walker.leaf_run(sel.stage, memo, a, (lim - a) >> 12, sel.scalable)
        need, write, ram = slow.need, slow.write, self.iotlb.ram
        key, st, upper = sel.key, sel.stage, memo.slots
        dirty = sel.entry_dirty or write
        bits = sel.a_bit | sel.d_bit if write else sel.a_bit
        ad = slow.ad
        if ad is None:
            ad = slow.ad = {}
        vpn = a >> 12
        pte_addr = memo.table + (vpn & 0x1FF) * 8
        added: list[TlbEntry] = []
        first_pte = pte_addr
        for phys, perms in run:
            if (
                perms & need != need
                or phys + 4096 > ram
                or (phys < INTR_HI and phys + 4096 > INTR_LO)
                or vpn in d4
            ):
                break
            e = TlbEntry(key, vpn, 12, phys, perms, st, pte_addr, (*upper, pte_addr >> 3), dirty)
            d4[vpn] = e
            added.append(e)
            if bits:
                ad[pte_addr] = bits
            vpn += 1
            pte_addr += 8
        if added:
            t[BLOCK].pop(a >> BLOCK_SHIFT, None)
            n = len(added)
            self.pipeline.deps.add_run(added, upper, range(first_pte >> 3, (first_pte >> 3) + n))
            self.stats.iotlb_misses += n
            slow.ahead += n
            if not (vpn & 0x1FF):  # filled to the end of the block: summarise it now,
                # so the hit path serves these pages from the summary, not one by one
                self.iotlb.summarise(t, a >> BLOCK_SHIFT, st)

    def recheck(self, sel: Sel, e: TlbEntry, a: int, write: bool, check: bool) -> bool:
        """A hit on an entry that needs re-checking (suspect, or filled from another
        stage): whether its use must be compared with the tables."""
        self.stats.iotlb_hits += 1
        if e.src != sel.stage:
            return True
        try:
            leaf: Leaf | None = self.walk(sel, a, write, False)
        except TranslationFault:
            leaf = None
        if leaf is not None and self.pipeline.revalidate(
            e, e.same(leaf.phys, leaf.shift, leaf.perms), leaf.slots
        ):
            return check
        return True

    def passthrough(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        exe: bool,
        addr: int,
        size: int,
        write: bool,
        sel: Sel,
        upper_stale: bool,
    ) -> DmaResult:
        """Pass-through: the identity below the host address width, outside the
        interrupt range; nothing is cached beyond the context/PASID entries."""
        unit = self.unit
        if upper_stale:
            self.check_fresh(rid, pasid, priv, exe, write, addr, (addr & ~0xFFF, 0))
        limit = 1 << unit.cfg.haw
        reason: FR | None = None
        good = size
        if addr + size > limit:
            good = max(0, limit - addr)
            reason = FR.SM_ADDR_BEYOND if sel.scalable else FR.ADDR_BEYOND_MGAW
        if addr < INTR_HI and addr + good > INTR_LO:
            good = max(0, INTR_LO - addr)
            reason = FR.SM_INTERRUPT_ADDR if sel.scalable else FR.INTERRUPT_ADDR
        ram = unit.m.memory.size
        fault: DmaFault | None = None
        if reason is not None:
            fault = unit.fault(rid, pasid, priv, exe, addr + good, write, reason, sel.fpd)
        in_ram = max(0, min(good, ram - addr))
        if in_ram < good:
            good = in_ram
            fault = DmaFault(addr + good, DMA_FAULT_BUS, write, "outside RAM")
        return DmaResult(((addr, good),) if good else (), fault)

    # -- stale detection (DESIGN §6) ------------------------------------------------------
    def fresh_outcome(
        self, rid: int, pasid: int | None, priv: bool, exe: bool, write: bool, addr: int
    ) -> tuple[int, int]:
        """What the tables in RAM say now for the 4 KiB page at ``addr``, with no cache:
        ``(physical page, 0)`` or ``(-1, fault reason)``. Sets no A/D bits."""
        unit = self.unit
        if pasid is None:
            priv = exe = False
        try:
            self.check_root()
            ctx = unit.walker.context(unit.root, unit.ttm == 1, rid)
            sel = self.select(pasid, priv, exe, ctx, unit.walker.pasid_entry)
            if sel.stage.kind == KIND_PT:
                return addr & ~0xFFF, 0
            leaf = self.walk(sel, addr, write, False)
        except TranslationFault as f:
            return -1, int(f.reason)
        need = need_bits(sel, write, priv, exe)
        if leaf.perms & need != need:
            return -1, int(perm_reason(sel, leaf.perms, need))
        return (leaf.phys | (addr & ((1 << leaf.shift) - 1))) & ~0xFFF, 0

    def check_fresh(
        self,
        rid: int,
        pasid: int | None,
        priv: bool,
        exe: bool,
        write: bool,
        addr: int,
        cached: tuple[int, int],
    ) -> None:
        current = self.unit.fresh_outcome(rid, pasid, priv, exe, write, addr)
        if current != cached:
            self.stale(rid, pasid, addr, cached, current, "iotlb")

    def stale(
        self,
        rid: int,
        pasid: int | None,
        addr: int,
        cached: tuple[int, ...],
        current: tuple[int, ...],
        cache: str,
    ) -> None:
        """Report the use of a cached translation the tables no longer give: the
        trace event, and the finding with its cause (:mod:`hw.vtd.findings`)."""
        unit = self.unit
        what = (
            f"{unit.name}: rid {rid:#06x} pasid {pasid} addr {addr:#x}: cached "
            f"{cache} translation {cached} used, tables say {current}"
        )

        def report() -> Finding:
            found = stale_finding(unit, rid, pasid, addr, cached, current, cache)
            unit.emit(
                "hw_vtd:stale_translation",
                rid=rid,
                pasid=pasid,
                addr=addr,
                cached=cached,
                current=current,
                cache=cache,
                write_ns=[w.time_ns for w in found.writes],
                missing=[i.text() for i in found.missing],
            )
            unit.report(found)
            return found

        unit.pipeline.stale(what, report)


class PageSlowPath:
    """The VT-d slow path of one request (:class:`hw.translation.SlowPath`). With
    ``ats`` the request is a Translation Request: not-present and permission
    conditions end it with an R=W=0 completion instead of a recorded fault."""

    __slots__ = (
        "ad",
        "ahead",
        "ats",
        "busy",
        "exe",
        "memo",
        "need",
        "pasid",
        "priv",
        "rid",
        "sel",
        "upper_stale",
        "write",
        "x",
    )

    def __init__(
        self,
        x: Translation,
        rid: int,
        pasid: int | None,
        priv: bool,
        exe: bool,
        write: bool,
        sel: Sel,
        upper_stale: bool,
        ats: bool,
    ) -> None:
        self.x = x
        self.rid = rid
        self.pasid = pasid
        self.priv = priv
        self.exe = exe
        self.write = write
        self.sel = sel
        self.upper_stale = upper_stale
        self.ats = ats
        self.need = sel.needs[write | priv << 1 | exe << 2]
        self.memo: WalkMemo | None = None
        self.ad: dict[int, int] | None = None
        self.busy = False
        """A request is using it (one made meanwhile builds its own)."""
        self.ahead = 0
        """Pages :meth:`Translation.fill_ahead` filled: counted as misses there, so
        the hit path that then serves them does not count them as hits."""

    def _fault(self, a: int, reason: FR, fpd: bool) -> DmaFault:
        unit = self.x.unit
        if self.ats:
            return unit.devtlb.ats_fault(
                self.rid, self.pasid, self.priv, a, self.write, reason, fpd
            )
        return unit.fault(self.rid, self.pasid, self.priv, self.exe, a, self.write, reason, fpd)

    def _accessed(self, e: TlbEntry, dirty: bool) -> None:
        """A filled leaf's A (and D) update, applied when the request ends
        (:meth:`finish`) in one write per table page; a nested entry's second-stage
        output leaf gets its own."""
        sel = self.sel
        bits = sel.a_bit | sel.d_bit if dirty else sel.a_bit
        if bits:
            ad = self.ad
            if ad is None:
                ad = self.ad = {}
            ad[e.pte_addr] = bits
            stage = sel.stage
            if stage.kind == KIND_NEST:
                assert isinstance(e, NestTlbEntry)
                s2_bits = self.x.walker.s2_accessed_bits(stage, dirty)
                if s2_bits:
                    ad[e.s2_pte] = ad.get(e.s2_pte, 0) | s2_bits

    def finish(self) -> None:
        """Apply the deferred A/D updates of the request."""
        if self.ad:
            self.x.walker.set_bits_many(self.ad)
            self.ad = None

    def page(self, e: TlbEntry | None, a: int, end: int) -> TlbEntry | DmaFault:
        """The slow path of the page at ``a`` (:class:`hw.translation.SlowPath`; passed
        to the pipeline as this bound method, which Python calls without the C-level
        recursion an object's ``__call__`` costs)."""
        x = self.x
        sel = self.sel
        stage = sel.stage
        write = self.write
        check = self.upper_stale
        if e is None:
            # A miss: walk (setting the A flags above the leaf) and fill the IOTLB with
            # the leaf; its A flag, with D when the write is permitted, is set below in
            # one deferred update. A nested stage's entry is the combined (first- then
            # second-stage) translation, cached under the nested tag with both stages'
            # entries as its slots (its walk keeps no memo).
            filled = True
            memo = self.memo
            if memo is None and end - a > 0x1000:  # more pages may follow
                memo = self.memo = WalkMemo()
            x.stats.iotlb_misses += 1
            if x.machine.hw_trace is not None:
                x.unit.emit("hw_vtd:iotlb_miss", did=sel.did, tag=sel.tag, addr=a)
            try:
                if stage.kind == KIND_SL:
                    e = x.walker.walk_sl(stage, a, write, sel.scalable, sel.fpd, True, memo, False)
                elif stage.kind == KIND_FL:
                    e = x.walker.walk_fl(stage, a, sel.fpd, True, memo, False)
                else:
                    e = x.walker.walk_nested(stage, a, write, sel.fpd, True, False)
            except TranslationFault as f:
                if check:
                    x.check_fresh(
                        self.rid, self.pasid, self.priv, self.exe, write, a, (-1, int(f.reason))
                    )
                return self._fault(a, f.reason, f.fpd)
            e.tag = sel.key
            e.dirty = sel.entry_dirty  # a stage with A/D: False until a write sets D
            x.iotlb.put(e)
        else:
            filled = False
            if e.src is not stage and e.src == stage:
                x.pipeline.rebind(e, stage)
            if e.suspect or e.src is not stage:
                check = x.recheck(sel, e, a, write, check)  # faults of the re-walk: none
            else:
                x.stats.iotlb_hits += 1
        perms = e.perms
        need = self.need
        if perms & need != need:
            if filled:
                self._accessed(e, False)
            reason = perm_reason(sel, perms, need)
            if check:
                x.check_fresh(
                    self.rid, self.pasid, self.priv, self.exe, write, a, (-1, int(reason))
                )
            return self._fault(a, reason, sel.fpd)
        shift = e.shift
        phys = e.phys | (a & ((1 << shift) - 1))
        if check:
            x.check_fresh(self.rid, self.pasid, self.priv, self.exe, write, a, (phys & ~0xFFF, 0))
        if filled:
            if sel.a_bit:
                if write and not e.dirty:
                    e.dirty = True
                    self._accessed(e, True)
                else:
                    self._accessed(e, False)
        elif write and not e.dirty:
            e.dirty = True
            x.walker.set_dirty(stage, e.pte_addr)
            if stage.kind == KIND_NEST and stage.ssade:
                assert isinstance(e, NestTlbEntry)
                x.walker.set_bits(e.s2_pte, x.walker.s2_accessed_bits(stage, True))
        chunk = ((a >> shift) + 1 << shift) - a
        if a + chunk > end:
            chunk = end - a
        if phys < INTR_HI and phys + chunk > INTR_LO:
            reason = FR.SM_INTERRUPT_ADDR if sel.scalable else FR.INTERRUPT_ADDR
            return x.unit.fault(
                self.rid, self.pasid, self.priv, self.exe, a, write, reason, sel.fpd
            )
        if (
            filled
            and a + 4096 < end
            and shift == 12
            and not check
            and not self.ats
            and phys + 4096 <= x.iotlb.ram  # else the request stops at this page
            and stage.kind != KIND_NEST  # its walk keeps no memo: one fill per page
        ):
            memo = self.memo
            if memo is not None and memo.region == a >> 21:
                x.fill_ahead(self, memo, a + 4096, min(end, ((a >> 21) + 1) << 21))
        return e
