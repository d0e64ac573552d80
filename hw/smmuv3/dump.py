"""Debug decoder: registers, queues, caches and the structures reachable from
STRTAB_BASE, as text.

Like Linux's SMMUv3 debugfs proposals and QEMU's ``smmuv3`` trace of decoded STEs/CDs,
but over every valid STE: STE -> CD table -> CD -> stage-1 leaves, listed as
``iova -> phys size perms``; a stage-2 STE (Config 0b110) lists its stage-2 leaves as
``s2 ipa -> phys size S2AP``, and a nested one (0b111) both: the guest's CDs and
stage-1 leaves (``va -> ipa``, its tables read through stage 2), then stage 2. Invalid
entries and fetch errors are shown inline instead of stopping the dump; listings are cut
at fixed lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from hw.memory import BusError, Memory
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.caches import GLOBAL
from hw.smmuv3.findings import tlb_entry
from hw.smmuv3.walk import PERM_U, PERM_W, CdInfo, S2Info, SmmuFault, StreamInfo, start_level
from hw.translation import TlbEntry

if TYPE_CHECKING:
    from hw.smmuv3.unit import Smmuv3Unit

MAX_LEAVES = 64
"""Leaf mappings printed per address space before the listing is cut short."""
MAX_STREAMS = 256
"""Valid STEs printed before the listing is cut short."""
MAX_CDS = 64
"""Valid CDs printed per STE."""

_CONFIG = {0: "abort", 4: "bypass", 5: "stage-1", 6: "stage-2", 7: "nested"}
_DSS = {0: "terminate", 1: "bypass", 2: "substream-0"}


def _q(mem: Memory, addr: int) -> int | None:
    try:
        return mem.read_u64(addr)
    except BusError:
        return None


def dump_unit(unit: Smmuv3Unit) -> str:
    r = unit.regs
    c = unit.caches
    active = (r["GERROR"] ^ r["GERRORN"]) & sr.GERROR_ACTIVE_MASK
    base, cfg = unit._strtab()
    fmt = "2-level" if sr.STRTAB_BASE_CFG.FMT.get(cfg) == sr.STRTAB_FMT_2LVL else "linear"
    out = [
        f"{unit.name}: CR0ACK={r['CR0ACK']:#x} SMMUEN={int(unit.smmuen)} "
        f"GBPA.ABORT={int(unit.gbpa_abort)} GERROR active={active:#x}",
        f"  strtab {base:#x} {fmt} log2size={sr.STRTAB_BASE_CFG.LOG2SIZE.get(cfg)} "
        f"split={sr.STRTAB_BASE_CFG.SPLIT.get(cfg)}",
        f"  cmdq base={unit.cmdq.geometry()[0]:#x} log2size={unit.cmdq.geometry()[1]} "
        f"prod={r['CMDQ_PROD']:#x} cons={r['CMDQ_CONS'] & 0xFFFFF:#x} "
        f"err={sr.CMDQ_CONS.ERR.get(r['CMDQ_CONS'])}",
        f"  evtq base={unit.evtq.geometry()[0]:#x} log2size={unit.evtq.geometry()[1]} "
        f"prod={r['EVTQ_PROD']:#x} cons={r['EVTQ_CONS']:#x}",
        f"  caches: ste={len(c.ste)} cd={len(c.cd)} tlb={c.tlb_size}",
    ]
    log2size = min(sr.STRTAB_BASE_CFG.LOG2SIZE.get(cfg), unit.cfg.sidsize)
    shown = 0
    for sid in _candidate_sids(unit, base, cfg, log2size):
        try:
            ste = unit.walker.ste(base, cfg, sid)
        except SmmuFault as f:
            if f.evt in (ent.Evt.C_BAD_STE, ent.Evt.C_BAD_STREAMID):
                continue
            out.append(f"  sid {sid:#x}: {f.evt.name}")
            continue
        shown += 1
        if shown > MAX_STREAMS:
            out.append("  ... more streams")
            break
        _dump_ste(unit, out, sid, ste)
    return "\n".join(out)


def _candidate_sids(unit: Smmuv3Unit, base: int, cfg: int, log2size: int) -> list[int]:
    """StreamIDs whose STE has V=1, found without decoding every entry."""
    mem = unit.m.memory
    sids: list[int] = []
    if sr.STRTAB_BASE_CFG.FMT.get(cfg) == sr.STRTAB_FMT_2LVL and unit.cfg.st_level:
        split = sr.STRTAB_BASE_CFG.SPLIT.get(cfg)
        split = 10 if split >= 10 else 8 if split >= 8 else 6
        for i in range(1 << max(0, log2size - split)):
            l1 = _q(mem, base + 8 * i)
            if l1 is None:
                break
            if ent.L1Std.SPAN.get(l1):
                sids.extend(range(i << split, (i + 1) << split))
        return [s for s in sids if s >> log2size == 0]
    for sid in range(1 << min(log2size, 16)):
        dw0 = _q(mem, base + 64 * sid)
        if dw0 is None:
            break
        if dw0 & 1:
            sids.append(sid)
    return sids


def _dump_ste(unit: Smmuv3Unit, out: list[str], sid: int, ste: StreamInfo) -> None:
    name = _CONFIG.get(ste.config, str(ste.config))
    s2 = ste.s2
    if ste.config not in (ent.STE_CFG_S1, ent.STE_CFG_NESTED):
        if s2 is None:
            out.append(f"  sid {sid:#x}: {name}")
            return
        out.append(f"  sid {sid:#x}: {name} {_s2_text(ste.vmid, s2)}")
        _dump_s2_tables(unit.m.memory, out, s2)
        return
    line = (
        f"  sid {sid:#x}: {name} vmid={ste.vmid} cdtable={ste.ctxptr:#x} "
        f"s1fmt={ste.s1fmt} s1cdmax={ste.s1cdmax} s1dss={_DSS.get(ste.s1dss, ste.s1dss)}"
    )
    out.append(line if s2 is None else f"{line} {_s2_text(None, s2)}")
    shown = 0
    for index in range(1 << ste.s1cdmax):
        try:
            cd = unit.walker.cd(ste, index)
        except SmmuFault as f:
            if f.evt in (ent.Evt.C_BAD_CD, ent.Evt.C_BAD_SUBSTREAMID):
                continue
            out.append(f"    cd {index}: {f.evt.name}")
            continue
        shown += 1
        if shown > MAX_CDS:
            out.append("    ... more context descriptors")
            break
        out.append(
            f"    cd {index}: asid={cd.asid} ttb0={cd.ttb0:#x} va_bits={cd.va0} "
            f"epd0={int(cd.epd0)} epd1={int(cd.epd1)} ips={cd.ips} r={int(cd.r)} a={int(cd.a)}"
        )
        _dump_tables(unit, out, cd, s2)
    if s2 is not None:
        _dump_s2_tables(unit.m.memory, out, s2)


def _s2_text(vmid: int | None, s2: S2Info) -> str:
    """The stage-2 controls of an STE (Config 0b110/0b111), as one line's tail."""
    head = "" if vmid is None else f"vmid={vmid} "
    return (
        f"{head}s2ttb={s2.ttb:#x} ipa_bits={s2.ia_bits} s2sl={s2.level} ps={s2.ps} "
        f"s2r={int(s2.record)} ha={int(s2.ha)} hd={int(s2.hd)}"
    )


Leaf = Callable[[int, int, int], str]
"""Formats one leaf: (input address, descriptor, page shift) -> the listing line."""


def _dump_tables(unit: Smmuv3Unit, out: list[str], cd: CdInfo, s2: S2Info | None) -> None:
    """The CD's TTB0 leaves as ``va -> phys``; under a nested STE the stage-1 tables
    hold IPAs, read through stage 2, and the leaves are listed as ``va -> ipa``."""
    if cd.epd0:
        return
    xlate: Callable[[int], int | None] | None = None
    target = ""
    if s2 is not None:
        target = "ipa "

        def xlate(ipa: int) -> int | None:
            try:
                return unit.walker.walk_s2(s2, ipa, False, False, [], ent.EVT_CLASS_TT)[0]
            except SmmuFault:
                return None

    def leaf(va: int, pte: int, shift: int) -> str:
        out_addr = pte & ent.LpaeLeaf.OA.mask & ~((1 << shift) - 1)
        return f"      {va:#x} -> {target}{out_addr:#x} {1 << shift:#x} {_perms(pte)}"

    level = start_level(cd.va0)
    _listing(unit.m.memory, out, cd.ttb0, level, cd.va0, leaf, xlate)


def _dump_s2_tables(mem: Memory, out: list[str], s2: S2Info) -> None:
    """The stage-2 leaves as ``ipa -> phys`` (concatenated start-level tables included)."""

    def leaf(ipa: int, pte: int, shift: int) -> str:
        phys = pte & ent.LpaeS2Leaf.OA.mask & ~((1 << shift) - 1)
        return f"      s2 {ipa:#x} -> {phys:#x} {1 << shift:#x} {_s2_perms(pte)}"

    _listing(mem, out, s2.ttb, s2.level, s2.ia_bits, leaf, None)


def _listing(
    mem: Memory,
    out: list[str],
    root: int,
    level: int,
    va_bits: int,
    leaf: Leaf,
    xlate: Callable[[int], int | None] | None,
) -> None:
    leaves: list[str] = []
    _walk_table(mem, root, level, 1 << (va_bits - (39 - 9 * level)), 0, leaves, leaf, xlate)
    out.extend(leaves[:MAX_LEAVES])
    if len(leaves) > MAX_LEAVES:
        out.append(f"      ... {len(leaves) - MAX_LEAVES} more")


def _walk_table(
    mem: Memory,
    table: int,
    level: int,
    count: int,
    va: int,
    out: list[str],
    leaf: Leaf,
    xlate: Callable[[int], int | None] | None,
) -> None:
    """``count`` descriptors of the level-``level`` table at ``table`` (an IPA when
    ``xlate`` maps table addresses through stage 2), leaves formatted by ``leaf``."""
    shift = 39 - 9 * level
    for idx in range(count):
        if len(out) > MAX_LEAVES:
            return
        addr = table + 8 * idx
        pa = addr if xlate is None else xlate(addr)
        pte = None if pa is None else _q(mem, pa)
        if pte is None:
            out.append(f"      table {table:#x}: unreadable")
            return
        if not pte & 1:
            continue
        iova = va | (idx << shift)
        if pte & 2 and level < 3:
            nxt = pte & ent.LpaeLeaf.OA.mask
            _walk_table(mem, nxt, level + 1, 512, iova, out, leaf, xlate)
        elif level in (1, 2) or pte & 2:
            out.append(leaf(iova, pte, shift))


def _perms(pte: int) -> str:
    perms = PERM_U if pte & ent.LpaeLeaf.AP1.mask else 0
    perms |= 0 if pte & ent.LpaeLeaf.AP2.mask else PERM_W
    return (
        "r"
        + ("w" if perms & PERM_W else "-")
        + ("u" if perms & PERM_U else "p")
        + (" af" if pte & ent.LpaeLeaf.AF.mask else " !af")
        + (" ng" if pte & ent.LpaeLeaf.NG.mask else " g")
    )


def _s2_perms(pte: int) -> str:
    """S2AP as ``r``/``w`` (``-`` for a missing right), then AF and DBM."""
    return (
        ("r" if pte & ent.LpaeS2Leaf.S2AP_R.mask else "-")
        + ("w" if pte & ent.LpaeS2Leaf.S2AP_W.mask else "-")
        + (" af" if pte & ent.LpaeS2Leaf.AF.mask else " !af")
        + (" dbm" if pte & ent.LpaeS2Leaf.DBM.mask else "")
    )


# -- caches ------------------------------------------------------------------------------------
CACHES = ("ste", "cd", "tlb")
"""The caches :func:`dump_caches` lists, by the name ``--caches`` takes."""


def dump_caches(unit: Smmuv3Unit, which: str | None = None) -> str:
    """Every entry of the unit's caches (or of cache ``which``, one of :data:`CACHES`)
    with its tags: STEs by StreamID, CDs by (StreamID, SubstreamID), TLB entries by
    (VMID, ASID; ``global`` for nG=0 leaves). ``suspect`` marks an entry whose source
    structures were written since it was filled."""
    c = unit.caches
    out = [f"{unit.name}: caches"]
    if which in (None, "ste"):
        out.append(f"  STE cache: {len(c.ste)} entries")
        for sid, e in sorted(c.ste.items()):
            s = e.info
            out.append(
                f"    sid={sid:#x} config={_CONFIG.get(s.config, hex(s.config))} "
                f"s1ctxptr={s.ctxptr:#x} s1cdmax={s.s1cdmax} vmid={s.vmid}"
                f"{' suspect' if e.suspect else ''}"
            )
    if which in (None, "cd"):
        out.append(f"  CD cache: {len(c.cd)} entries")
        for (sid, ssid), cd in sorted(c.cd.items()):
            i = cd.info
            out.append(
                f"    sid={sid:#x} ssid={ssid} asid={i.asid} ttb0={i.ttb0:#x} "
                f"t0sz={64 - i.va0} epd0={int(i.epd0)}{' suspect' if cd.suspect else ''}"
            )
    if which in (None, "tlb"):
        entries = c.tlb.entries()
        out.append(f"  TLB: {len(entries)} entries")
        for t in sorted(entries, key=lambda t: (*_tlb_tag(t), t.vpn << t.shift)):
            vmid, asid = _tlb_tag(t)
            shown = "global" if asid == GLOBAL else str(asid)
            leaf = tlb_entry(t)
            out.append(
                f"    vmid={vmid} asid={shown} {leaf.text()}{' suspect' if t.suspect else ''}"
            )
    return "\n".join(out)


def _tlb_tag(e: TlbEntry) -> tuple[int, int]:
    vmid, asid = cast(tuple[int, int], e.tag)
    return vmid, asid
