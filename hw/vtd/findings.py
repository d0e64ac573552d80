"""VT-d findings (:class:`hw.bus.Finding`): a stale use and a DMA fault, decoded.

Built on the cold path only — when a stale use is reported or a fault recorded — from
what the unit already holds: the cached context/PASID/IOTLB/device-TLB entry that
answered, the table writes its tracker blamed for making it suspect
(:func:`hw.pagewatch.causes`), and a fresh walk of the tables as they are now.

A stale use names the invalidation that would have removed the entry, as the
descriptor software should have queued (VT-d spec 6.5.2): a first-stage (PASID-tagged)
IOTLB entry needs a PASID-based IOTLB invalidation (``p_iotlb_inv_dsc``, type 0x6)
with its DID, PASID, address and AM; a second-stage one an IOTLB invalidation
(``iotlb_inv_dsc``, type 0x2) with DID, address and AM; a device-TLB entry a
(PASID-based) device-TLB invalidation (type 0x3 / 0x8); a context entry a
context-cache invalidation (type 0x1), a PASID entry a PASID-cache invalidation
(type 0x7). AM is the order of the cached page (0: 4 KiB, 9: 2 MiB). A fault carries
its decoded fault record and the structures the walk read up to where it stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.bus import Entry, Finding, Invalidation, TableWrite, WalkStep, bdf, perms_text
from hw.memory import BusError
from hw.pagewatch import SlotCached, causes
from hw.translation import TlbEntry
from hw.vtd import entries as ent
from hw.vtd.caches import SL_TAG, PasidEntry
from hw.vtd.faults import FR, TranslationFault
from hw.vtd.walk import (
    KIND_FL,
    KIND_PT,
    PERM_R,
    PERM_U,
    PERM_W,
    PERM_X,
    CtxInfo,
    PasidInfo,
    Stage,
)

if TYPE_CHECKING:
    from hw.vtd.irq_remap import IecEntry, Irte
    from hw.vtd.translate import Sel
    from hw.vtd.unit import VtdUnit

PERMS = ((PERM_R, "r"), (PERM_W, "w"), (PERM_X, "x"), (PERM_U, "u"))
"""Rights letters of a VT-d leaf (the model's PERM_* bits)."""
ATS_PERMS = ((1, "r"), (2, "w"))
"""Rights letters of an ATS completion (R, W)."""

CACHE_NAMES = {
    "iotlb": "IOTLB",
    "devtlb": "device TLB",
    "context": "context cache",
    "pasid": "PASID cache",
}


def entry_of(e: TlbEntry, perms: tuple[tuple[int, str], ...] = PERMS) -> Entry:
    """A cached leaf decoded."""
    return Entry(
        e.vpn << e.shift, e.phys, 1 << e.shift, (e.shift - 12) // 9 + 1, perms_text(perms, e.perms)
    )


def _fault_text(reason: int) -> str:
    try:
        return f"fault {reason:#x} {FR(reason).name}"
    except ValueError:
        return f"fault {reason:#x}"


def _outcome(addr: int, outcome: tuple[int, ...]) -> Entry:
    """An outcome tuple (``(page, 0)`` / ``(-1, reason)``) as an entry."""
    page = addr & ~0xFFF
    if outcome[0] < 0:
        return Entry(page, None, fault=_fault_text(outcome[1]))
    return Entry(page, outcome[0], 0x1000, 1)


class _View:
    """What the unit's caches say for one request, and what the tables say now."""

    def __init__(self, unit: VtdUnit, rid: int, pasid: int | None) -> None:
        self.unit, self.rid, self.pasid = unit, rid, pasid
        caches = unit.caches
        self.ctx = caches.ctx.get(rid)
        self.eff: int | None = None
        self.pasid_e: PasidEntry | None = None
        self.sel: Sel | None = None
        if self.ctx is None:
            return
        info = self.ctx.info
        if info.scalable:
            self.eff = info.rid_pasid if pasid is None else pasid
            self.pasid_e = caches.pasid.get((rid, self.eff))

        def cached_pasid(ctx: CtxInfo, p: int) -> PasidInfo:
            e = caches.pasid.get((rid, p))
            if e is None:
                raise TranslationFault(FR.SM_PASID_NOT_PRESENT)
            return e.info

        try:
            self.sel = unit.xlate.select(pasid, False, False, info, cached_pasid)
        except TranslationFault:
            self.sel = None

    def fresh_sel(self) -> Sel | None:
        unit = self.unit
        try:
            ctx = unit.walker.context(unit.root, unit.ttm == 1, self.rid)
            return unit.xlate.select(self.pasid, False, False, ctx, unit.walker.pasid_entry)
        except TranslationFault:
            return None

    def changed(self, e: SlotCached | None, fresh: object) -> bool:
        if e is None or not e.suspect:
            return False
        return getattr(e, "info", None) != fresh


def _fresh_ctx(unit: VtdUnit, rid: int) -> object:
    try:
        return unit.walker.context(unit.root, unit.ttm == 1, rid)
    except TranslationFault:
        return None


def _fresh_pasid(unit: VtdUnit, rid: int, pasid: int) -> object:
    try:
        ctx = unit.walker.context(unit.root, unit.ttm == 1, rid)
        return unit.walker.pasid_entry(ctx, pasid)
    except TranslationFault:
        return None


def _current(unit: VtdUnit, sel: Sel | None, addr: int) -> Entry:
    """The tables' answer now for the page at ``addr`` (no A/D update)."""
    page = addr & ~0xFFF
    if sel is None:
        return Entry(page, None, fault="no context/PASID entry")
    if sel.stage.kind == KIND_PT:
        return Entry(page, page, 0x1000, 0, "pass-through")
    try:
        leaf = unit.xlate.walk(sel, addr, False, False)
    except TranslationFault as f:
        return Entry(page, None, fault=_fault_text(int(f.reason)))
    base = addr & ~((1 << leaf.shift) - 1)
    return Entry(
        base, leaf.phys, 1 << leaf.shift, (leaf.shift - 12) // 9 + 1, perms_text(PERMS, leaf.perms)
    )


def _iotlb_inval(did: int, tag: int, e: TlbEntry) -> Invalidation:
    am = e.shift - 12
    addr = e.vpn << e.shift
    if tag != SL_TAG:
        return Invalidation(
            "PASID-based IOTLB invalidation (p_iotlb_inv_dsc, type 0x6)",
            (
                ("G", "page-selective-within-PASID"),
                ("DID", str(did)),
                ("PASID", str(tag)),
                ("ADDR", hex(addr)),
                ("AM", str(am)),
            ),
        )
    return Invalidation(
        "IOTLB invalidation (iotlb_inv_dsc, type 0x2)",
        (
            ("G", "page-selective-within-domain"),
            ("DID", str(did)),
            ("ADDR", hex(addr)),
            ("AM", str(am)),
        ),
    )


def _devtlb_inval(rid: int, pasid: int | None, e: TlbEntry) -> Invalidation:
    size = 1 << e.shift
    addr = e.vpn << e.shift
    # S=1 encodes the size in the address's low bits (PCIe ATS 2.3): ones below
    # the size's bit, a zero at it.
    enc = addr | ((size >> 1) - 1) & ~0xFFF if size > 0x1000 else addr
    fields = [("SID", bdf(rid))]
    if pasid is not None:
        fields.append(("PASID", str(pasid)))
    fields += [("ADDR", hex(enc)), ("S", str(int(size > 0x1000)))]
    if pasid is None:
        return Invalidation("Device-TLB invalidation (dev_iotlb_inv_dsc, type 0x3)", tuple(fields))
    return Invalidation(
        "PASID-based device-TLB invalidation (p_dev_iotlb_inv_dsc, type 0x8)", tuple(fields)
    )


def stale_finding(
    unit: VtdUnit,
    rid: int,
    pasid: int | None,
    addr: int,
    cached: tuple[int, ...],
    current: tuple[int, ...],
    cache: str,
) -> Finding:
    """The finding for a stale use the unit just reported (see the module docstring).
    ``cache`` is what the caller knows (``iotlb`` for any request-path use, ``devtlb``
    for a translated request); a changed context or PASID entry above the IOTLB is
    named as the stale cache instead."""
    view = _View(unit, rid, pasid)
    sel = view.sel
    did = sel.did if sel is not None else None
    missing: tuple[Invalidation, ...] = ()
    writes: tuple[TableWrite, ...] = ()
    cached_e = _outcome(addr, cached)
    blamed: SlotCached | None = None
    if cache == "devtlb":
        atc = _atc_entry(unit, pasid, addr)
        if atc is not None:
            blamed = atc
            cached_e = entry_of(atc, ATS_PERMS)
            missing = (_devtlb_inval(rid, pasid, atc),)
    elif view.changed(view.ctx, _fresh_ctx(unit, rid)):
        cache, blamed = "context", view.ctx
        missing = (
            Invalidation(
                "context-cache invalidation (cc_inv_dsc, type 0x1)",
                (
                    ("G", "device-selective"),
                    ("DID", str(did if did is not None else 0)),
                    ("SID", bdf(rid)),
                    ("FM", "0"),
                ),
            ),
        )
    elif view.eff is not None and view.changed(view.pasid_e, _fresh_pasid(unit, rid, view.eff)):
        cache, blamed = "pasid", view.pasid_e
        missing = (
            Invalidation(
                "PASID-cache invalidation (pc_inv_dsc, type 0x7)",
                (
                    ("G", "PASID-selective"),
                    ("DID", str(did if did is not None else 0)),
                    ("PASID", str(view.eff)),
                ),
            ),
        )
    elif sel is not None:
        e = unit.caches.iotlb.lookup((sel.did, sel.tag), addr)
        if e is not None:
            blamed = e
            cached_e = entry_of(e)
            missing = (_iotlb_inval(sel.did, sel.tag, e),)
    if blamed is not None:
        writes = causes(blamed)
    name = CACHE_NAMES.get(cache, cache)
    who = bdf(rid)
    return Finding(
        "stale",
        f"{unit.name}: {who} PASID {pasid} IOVA {addr:#x} used a stale {name} entry",
        unit=unit.name,
        requester=who,
        pasid=pasid,
        iova=addr,
        domain="" if did is None else f"DID {did}",
        cache=name,
        cached=cached_e,
        current=_now(unit, view, addr, current),
        writes=writes,
        missing=missing,
        time_ns=unit.m.clock.now,
    )


def _now(unit: VtdUnit, view: _View, addr: int, current: tuple[int, ...]) -> Entry:
    """The current entry decoded, or the outcome the caller found when the request
    no longer selects a page table (its fault reason says why)."""
    sel = view.fresh_sel()
    if sel is None:
        return _outcome(addr, current)
    return _current(unit, sel, addr)


def _atc_entry(unit: VtdUnit, pasid: int | None, addr: int) -> TlbEntry | None:
    for e in unit.pipeline.devtlb:
        if e.tag == pasid and e.vpn == addr >> e.shift:
            return e
    return None


def iec_stale_finding(unit: VtdUnit, e: IecEntry, fresh: Irte | None) -> Finding:
    """The finding for a stale interrupt entry cache use: the cached IRTE and the
    table's, decoded, the write that changed it, and the index-selective interrupt
    entry cache invalidation (``iec_inv_dsc``, type 0x4) that would have dropped it."""
    now = "not readable / not present" if fresh is None else fresh.text()
    return Finding(
        "stale",
        f"{unit.name}: interrupt index {e.index:#x} used a stale interrupt entry cache entry",
        unit=unit.name,
        cache="interrupt entry cache",
        record=(("index", hex(e.index)),),
        detail=f"cached IRTE:  {e.irte.text()}\ncurrent IRTE: {now}",
        writes=causes(e),
        missing=(
            Invalidation(
                "interrupt entry cache invalidation (iec_inv_dsc, type 0x4)",
                (("G", "index-selective"), ("IIDX", hex(e.index)), ("IM", "0")),
            ),
        ),
        time_ns=unit.m.clock.now,
    )


# -- faults ----------------------------------------------------------------------------------
def _q(unit: VtdUnit, addr: int) -> int | None:
    try:
        return unit.m.memory.read_u64(addr)
    except BusError:
        return None


def walk_steps(unit: VtdUnit, rid: int, pasid: int | None, addr: int) -> tuple[WalkStep, ...]:
    """The structures a request for ``addr`` reads now, up to where it stops: root and
    context entry, PASID directory and table entry (scalable mode), then one entry per
    paging level until a leaf or a non-present entry."""
    steps: list[WalkStep] = []
    if unit.ttm > 1:
        return ()
    scalable = unit.ttm == 1
    bus, devfn = rid >> 8, rid & 0xFF
    raddr = unit.root + bus * ent.ROOT_ENTRY_SIZE + (8 if scalable and devfn >= 0x80 else 0)
    rent = _q(unit, raddr)
    if rent is None or not rent & 1:
        steps.append(WalkStep("root", raddr, rent or 0, "not present"))
        return tuple(steps)
    steps.append(WalkStep("root", raddr, rent, f"context table {rent & ~0xFFF:#x}"))
    try:
        ctx = unit.walker.context(unit.root, scalable, rid)
    except TranslationFault as f:
        caddr = (rent & ~0xFFF) + (
            (devfn & 0x7F) * ent.SM_CTX_SIZE if scalable else devfn * ent.LEGACY_CTX_SIZE
        )
        steps.append(WalkStep("context", caddr, _q(unit, caddr) or 0, f.reason.name))
        return tuple(steps)
    caddr = (rent & ~0xFFF) + (
        (devfn & 0x7F) * ent.SM_CTX_SIZE if scalable else devfn * ent.LEGACY_CTX_SIZE
    )
    stage: Stage | None = ctx.stage
    if not ctx.scalable:
        steps.append(WalkStep("context", caddr, _q(unit, caddr) or 0, f"DID {ctx.did}"))
    else:
        steps.append(WalkStep("context", caddr, _q(unit, caddr) or 0, f"PASID dir {ctx.dirptr:#x}"))
        eff = ctx.rid_pasid if pasid is None else pasid
        daddr = ctx.dirptr + (eff >> 6) * ent.PASID_DIR_ENTRY_SIZE
        dent = _q(unit, daddr) or 0
        if not dent & 1:
            steps.append(WalkStep("PASID dir", daddr, dent, "not present"))
            return tuple(steps)
        steps.append(WalkStep("PASID dir", daddr, dent, f"PASID table {dent & ~0xFFF:#x}"))
        paddr = (dent & ~0xFFF) + (eff & 0x3F) * ent.PASID_ENTRY_SIZE
        try:
            pe = unit.walker.pasid_entry(ctx, eff)
        except TranslationFault as f:
            steps.append(WalkStep(f"PASID {eff}", paddr, _q(unit, paddr) or 0, f.reason.name))
            return tuple(steps)
        steps.append(WalkStep(f"PASID {eff}", paddr, _q(unit, paddr) or 0, f"DID {pe.did}"))
        stage = pe.stage
    if stage is None or stage.kind == KIND_PT:
        return tuple(steps)
    fl = stage.kind == KIND_FL
    table = stage.root
    for level in range(stage.levels, 0, -1):
        shift = 12 + 9 * (level - 1)
        a = table + ((addr >> shift) & 0x1FF) * 8
        v = _q(unit, a)
        if v is None:
            steps.append(WalkStep(f"level {level}", a, 0, "unreadable"))
            break
        present = v & 1 if fl else v & 3
        if not present:
            steps.append(WalkStep(f"level {level}", a, v, "not present"))
            break
        phys = v & ((1 << 52) - 1) & ~0xFFF
        if level == 1 or v & ent.SlPte.PS.mask:
            steps.append(WalkStep(f"level {level}", a, v, f"leaf {phys:#x}"))
            break
        steps.append(WalkStep(f"level {level}", a, v, f"table {phys:#x}"))
        table = phys
    return tuple(steps)


def fault_finding(
    unit: VtdUnit,
    rid: int,
    pasid: int | None,
    priv: bool,
    exe: bool,
    addr: int,
    write: bool,
    reason: FR,
    recorded: str,
    fi: int | None = None,
) -> Finding:
    """The finding for a translation fault: the fault record's fields decoded
    (``recorded``: recorded, suppressed by FPD, or lost to overflow) and the walk.
    An interrupt-remapping fault (``fi``: the FI field it records, the interrupt
    index) walks no page tables."""
    who = bdf(rid)
    view = _View(unit, rid, pasid)
    did = view.sel.did if view.sel is not None else None
    return Finding(
        "fault",
        f"{unit.name}: DMA {'write' if write else 'read'} by {who} PASID {pasid} at "
        f"{addr:#x}: fault reason {int(reason):#x} {reason.name}",
        unit=unit.name,
        requester=who,
        pasid=pasid,
        iova=addr,
        domain="" if did is None else f"DID {did}",
        record=(
            ("SID", who),
            ("FR", f"{int(reason):#x}"),
            ("T", "read" if not write else "write"),
            ("PP", str(int(pasid is not None))),
            ("PV", str(pasid or 0)),
            ("PRIV", str(int(priv))),
            ("EXE", str(int(exe))),
            ("FI", hex(addr & ~0xFFF if fi is None else fi)),
            ("status", recorded),
        ),
        walk=walk_steps(unit, rid, pasid, addr) if fi is None else (),
        time_ns=unit.m.clock.now,
    )
