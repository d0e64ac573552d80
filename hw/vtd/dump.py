"""Debug decoder: the structures reachable from the latched root pointer, as text.

Like Linux ``dmar_fault_dump_ptes``/the ``domain_translation_struct`` debugfs file,
but over every present entry: root -> context -> (PASID directory -> PASID entry) ->
page tables, with leaf mappings listed as ``iova -> phys size perms``. Read errors
and reserved bits are shown inline instead of stopping the dump.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.memory import BusError, Memory
from hw.vtd import entries as ent
from hw.vtd.faults import TranslationFault
from hw.vtd.walk import KIND_FL, KIND_NEST, KIND_PT, Stage

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
    if st.s2 is not None and st.kind == KIND_NEST:
        guest = f"nested first-stage {st.levels}-level root={st.root:#x} (guest)"
        return f"{guest} over {_stage(st.s2)}"
    kind = "first-stage" if st.kind == KIND_FL else "second-stage"
    return f"{kind} {st.levels}-level root={st.root:#x}"


def _dump_tables(unit: VtdUnit, out: list[str], st: Stage, indent: str) -> None:
    if st.kind == KIND_PT:
        return
    if st.s2 is not None:  # nested: the first stage lives in guest memory; dump the host's
        st = st.s2
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
