"""Debug decoder: the structures reachable from the latched root pointer, as text.

Like Linux ``dmar_fault_dump_ptes``/the ``domain_translation_struct`` debugfs file,
but over every present entry: root -> context -> (PASID directory -> PASID entry) ->
page tables, with leaf mappings listed as ``iova -> phys size perms``. Read errors
and reserved bits are shown inline instead of stopping the dump.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from hw.bus import bdf
from hw.memory import BusError, Memory
from hw.pagewatch import SlotCached
from hw.translation import TlbEntry
from hw.vtd import entries as ent
from hw.vtd.caches import SL_TAG
from hw.vtd.faults import TranslationFault
from hw.vtd.findings import ATS_PERMS, entry_of
from hw.vtd.walk import KIND_FL, KIND_PT, Stage

if TYPE_CHECKING:
    from hw.vtd.unit import VtdUnit

MAX_LEAVES = 64
"""Leaf mappings printed per address space before the listing is cut short."""


def _q(mem: Memory, addr: int) -> int | None:
    try:
        return mem.read_u64(addr)
    except BusError:
        return None


def dump_unit(unit: VtdUnit) -> str:
    mem = unit.m.memory
    mode = {0: "legacy", 1: "scalable"}.get(unit.ttm, f"invalid TTM {unit.ttm}")
    out = [
        f"{unit.name}: TE={int(unit.te)} root={unit.root:#x} mode={mode}",
        f"  caches: ctx={len(unit.caches.ctx)} pasid={len(unit.caches.pasid)} "
        f"iotlb={unit.caches.iotlb_size}",
    ]
    if unit.ttm > 1:
        return "\n".join(out)
    for bus in range(256):
        for half in (0, 1) if unit.ttm == 1 else (0,):
            rent = _q(mem, unit.root + bus * 16 + 8 * half)
            if rent is None:
                out.append(f"  bus {bus:02x}: root entry unreadable")
                return "\n".join(out)
            if not rent & 1:
                continue
            out.append(f"  bus {bus:02x}{'/upper' if half else ''}: ctx table {rent & ~0xFFF:#x}")
            for dfn in range(128 * half, 128 * half + (128 if unit.ttm == 1 else 256)):
                _dump_ctx(unit, out, bus, dfn)
    return "\n".join(out)


def _dump_ctx(unit: VtdUnit, out: list[str], bus: int, devfn: int) -> None:
    rid = (bus << 8) | devfn
    mem = unit.m.memory
    try:
        ctx = unit.walker.context(unit.root, unit.ttm == 1, rid)
    except TranslationFault as f:
        if f.reason.name.endswith("NOT_PRESENT"):
            return
        out.append(
            f"    {bus:02x}:{devfn >> 3:02x}.{devfn & 7}: {f.reason.name} ({int(f.reason):#x})"
        )
        return
    name = f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"
    if not ctx.scalable:
        assert ctx.stage is not None
        out.append(f"    {name}: legacy did={ctx.did} fpd={int(ctx.fpd)} {_stage(ctx.stage)}")
        _dump_tables(unit, out, ctx.stage, "      ")
        return
    out.append(
        f"    {name}: scalable dir={ctx.dirptr:#x} pdts={ctx.pdts} paside={int(ctx.paside)} "
        f"dte={int(ctx.dte)} fpd={int(ctx.fpd)}"
    )
    for d in range(1 << (ctx.pdts + 7)):
        dent = _q(mem, ctx.dirptr + 8 * d)
        if dent is None:
            out.append(f"      dir[{d}]: unreadable")
            return
        if not dent & 1:
            continue
        for i in range(64):
            pasid = (d << 6) | i
            qw0 = _q(mem, (dent & ~0xFFF) + 64 * i)
            if qw0 is None:
                out.append(f"      dir[{d}]: PASID table {dent & ~0xFFF:#x} unreadable")
                break
            if not qw0 & 1:
                continue
            try:
                pe = unit.walker.pasid_entry(ctx, pasid)
            except TranslationFault as f:
                out.append(f"      pasid {pasid}: {f.reason.name} ({int(f.reason):#x})")
                continue
            out.append(
                f"      pasid {pasid}: did={pe.did} pgtt={pe.pgtt} sre={int(pe.sre)} "
                f"fpd={int(pe.fpd)} {_stage(pe.stage)}"
            )
            _dump_tables(unit, out, pe.stage, "        ")


def _stage(st: Stage) -> str:
    if st.kind == KIND_PT:
        return "pass-through"
    kind = "first-stage" if st.kind == KIND_FL else "second-stage"
    return f"{kind} {st.levels}-level root={st.root:#x}"


def _dump_tables(unit: VtdUnit, out: list[str], st: Stage, indent: str) -> None:
    if st.kind == KIND_PT:
        return
    leaves: list[str] = []
    _walk_table(unit.m.memory, st, st.root, st.levels, 0, leaves, indent)
    out.extend(leaves[:MAX_LEAVES])
    if len(leaves) > MAX_LEAVES:
        out.append(f"{indent}... {len(leaves) - MAX_LEAVES} more")


def _walk_table(
    mem: Memory, st: Stage, table: int, level: int, va: int, out: list[str], indent: str
) -> None:
    fl = st.kind == KIND_FL
    for idx in range(512):
        if len(out) > MAX_LEAVES:
            return
        pte = _q(mem, table + 8 * idx)
        if pte is None:
            out.append(f"{indent}table {table:#x}: unreadable")
            return
        present = pte & 1 if fl else pte & 3
        if not present:
            continue
        shift = 12 + 9 * (level - 1)
        iova = va | (idx << shift)
        if fl and level == st.levels and shift == 47 - 8:
            iova = iova if not iova >> 47 else iova | ~((1 << 48) - 1) & ((1 << 64) - 1)
        if level == 1 or pte & ent.SlPte.PS.mask:
            phys = pte & ((1 << 52) - 1) & ~((1 << shift) - 1)
            out.append(f"{indent}{iova:#x} -> {phys:#x} {1 << shift:#x} {_perms(pte, fl)}")
        else:
            _walk_table(mem, st, pte & ((1 << 52) - 1) & ~0xFFF, level - 1, iova, out, indent)


def _perms(pte: int, fl: bool) -> str:
    if fl:
        return (
            "r"
            + ("w" if pte & 2 else "-")
            + ("u" if pte & 4 else "s")
            + ("-" if pte >> 63 else "x")
        )
    return ("r" if pte & 1 else "-") + ("w" if pte & 2 else "-") + ("x" if pte & 4 else "-")


# -- caches ------------------------------------------------------------------------------------
CACHES = ("context", "pasid", "iotlb", "devtlb", "iec")
"""The caches :func:`dump_caches` lists, by the name ``--caches`` takes."""


def _flag(e: SlotCached) -> str:
    return " suspect" if e.suspect else ""


def dump_caches(unit: VtdUnit, which: str | None = None) -> str:
    """Every entry of the unit's caches (or of cache ``which``, one of :data:`CACHES`)
    with its tags: context entries by source-id, PASID entries by (source-id, PASID),
    IOTLB entries by (DID, PASID or ``-`` for second-stage tags), the device TLB
    entries the unit's ATS agent handed out, by PASID, and the interrupt entry cache's
    IRTEs by interrupt index. ``suspect`` marks an entry whose source tables were
    written since it was filled."""
    c = unit.caches
    out = [f"{unit.name}: caches"]
    if which in (None, "context"):
        out.append(f"  context cache: {len(c.ctx)} entries")
        for rid, e in sorted(c.ctx.items()):
            i = e.info
            if i.scalable:
                what = (
                    f"scalable dir={i.dirptr:#x} pdts={i.pdts} paside={int(i.paside)} "
                    f"dte={int(i.dte)}"
                )
            else:
                assert i.stage is not None
                what = f"legacy did={i.did} {_stage(i.stage)}"
            out.append(f"    sid={bdf(rid)} {what} fpd={int(i.fpd)}{_flag(e)}")
    if which in (None, "pasid"):
        out.append(f"  PASID cache: {len(c.pasid)} entries")
        for (rid, pasid), pe in sorted(c.pasid.items()):
            p = pe.info
            out.append(
                f"    sid={bdf(rid)} pasid={pasid} did={p.did} pgtt={p.pgtt} "
                f"{_stage(p.stage)}{_flag(pe)}"
            )
    if which in (None, "iotlb"):
        entries = c.iotlb.entries()
        out.append(f"  IOTLB: {len(entries)} entries")
        for t in sorted(entries, key=lambda t: (*_tag(t), t.vpn << t.shift)):
            did, tag = _tag(t)
            shown = "-" if tag == SL_TAG else str(tag)
            out.append(f"    did={did} pasid={shown} {entry_of(t).text()}{_flag(t)}")
    if which in (None, "devtlb"):
        held = [(rid, e) for rid, atc in sorted(unit.devtlb.atcs.items()) for e in atc.entries()]
        out.append(f"  device TLB: {len(held)} entries")
        for rid, a in sorted(held, key=lambda i: (i[0], str(i[1].tag), i[1].vpn << i[1].shift)):
            shown = "-" if a.tag is None else str(a.tag)
            leaf = entry_of(a, ATS_PERMS).text()
            out.append(f"    sid={bdf(rid)} pasid={shown} {leaf}{_flag(a)}")
    if which in (None, "iec"):
        iec = unit.irq.iec
        out.append(f"  interrupt entry cache: {len(iec)} entries")
        for index, ie in sorted(iec.items()):
            out.append(f"    index={index:#x} {ie.irte.text()}{_flag(ie)}")
    return "\n".join(out)


def _tag(e: TlbEntry) -> tuple[int, int]:
    did, tag = cast(tuple[int, int], e.tag)
    return did, tag
