"""SMMUv3 findings (:class:`hw.bus.Finding`): a stale use and a fault event, decoded.

Built on the cold path only, from what the unit holds when it reports: the cached
STE/CD/TLB entry that answered, the table writes the tracker blamed for making it
suspect (:func:`hw.pagewatch.causes`) and a fresh walk. A stale use names the
commands that would have removed the entry (IHI 0070 §4.3, §4.4): ``CMD_CFGI_STE``
(SID), ``CMD_CFGI_CD`` (SID, SSID), ``CMD_TLBI_NH_VA`` (VMID, ASID, address, range
of the cached leaf), ``CMD_TLBI_NH_VAA`` for a global (nG=0) leaf,
``CMD_TLBI_NH_ASID`` when the ASID was reused for other tables, ``CMD_TLBI_S2_IPA``
(VMID, IPA, range) for a stage-2-only entry, and for a nested entry (stage 1 through
stage 2, which no IPA-based command finds) both ways to remove it, the stage-1
``CMD_TLBI_NH_VA`` and ``CMD_TLBI_S12_VMALL`` (VMID). The current entry is a fresh
walk of every stage the STE enables. A write through a cached writable entry of a
leaf software made writable-clean again (HTTU) is stale although it translates the
same: the finding says so in its detail. A fault carries the event record's fields
and the stage-1 descriptors the walk read up to where it stopped.

The model has no ATS on SMMUv3 (``hw.smmuv3.config``: ``ats`` is refused), so there
is no device-TLB stale use and no ``CMD_ATC_INV`` to name; the PRI queue
(:mod:`hw.smmuv3.priq`) reads no cached structure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.bus import Entry, Finding, Invalidation, TableWrite, WalkStep, bdf, perms_text, size_text
from hw.memory import BusError
from hw.pagewatch import SlotCached, causes
from hw.smmuv3.caches import GLOBAL, S2_ONLY
from hw.smmuv3.entries import Evt
from hw.smmuv3.walk import PERM_U, PERM_W, CdInfo, Leaf, SmmuFault, start_level
from hw.translation import TlbEntry

if TYPE_CHECKING:
    from hw.smmuv3.unit import Smmuv3Unit

TLB_PERMS = ((PERM_W, "w"), (PERM_U, "u"))
"""Rights letters of an SMMUv3 TLB entry after the ``r`` every entry has."""

CACHE_OF = {
    "CFGI_STE": "STE cache",
    "CFGI_CD": "CD cache",
    "TLBI_NH_VA": "TLB",
    "TLBI_NH_VAA": "TLB",
    "TLBI_NH_ASID": "TLB",
    "TLBI_S2_IPA": "TLB",
    "TLBI_S12_VMALL": "TLB",
}
"""The cache each command the unit can find missing invalidates; anything else in
the unit's list is a note (:data:`NOTES`)."""

NOTES = {
    "no dirty update": "a write went through the cached writable entry of a leaf software "
    "made writable-clean again (AP[2]=1, DBM=1): same translation, no dirty update",
}
"""What the unit's notes mean (hw/smmuv3/unit.py adds them to the missing commands)."""


def tlb_entry(e: TlbEntry) -> Entry:
    """A cached stage-1 leaf decoded (level 3: 4 KiB)."""
    return Entry(
        e.vpn << e.shift,
        e.phys,
        1 << e.shift,
        3 - (e.shift - 12) // 9,
        "r" + perms_text(TLB_PERMS, e.perms),
    )


def _evt_text(evt: int) -> str:
    try:
        return f"event {evt:#x} {Evt(evt).name}"
    except ValueError:
        return f"event {evt:#x}"


def _outcome(addr: int, outcome: tuple[int, ...]) -> Entry:
    page = addr & ~0xFFF
    if outcome[0] < 0:
        return Entry(page, None, fault=_evt_text(outcome[1]))
    return Entry(page, outcome[0], 0x1000, 3)


def _fresh_leaf(unit: Smmuv3Unit, sid: int, pasid: int | None, addr: int) -> Leaf | int | None:
    """A fresh walk of every stage the STE enables (no cache, no Access flag): the
    leaf, the event id of a fault, or None when nothing translates (bypass)."""
    walker = unit._w
    try:
        ste = walker.ste(*unit._strtab(), sid)
        cd = unit._select(sid, pasid, ste, walker.cd)
        if cd is None and ste.s2 is None:
            return None
        return walker.walk_stream(ste, cd, addr, False, False)
    except SmmuFault as f:
        return int(f.evt)


def stale_finding(
    unit: Smmuv3Unit,
    sid: int,
    pasid: int | None,
    addr: int,
    cached: tuple[int, int],
    current: tuple[int, int],
    missing: list[str],
) -> Finding:
    """The finding for a stale use the unit just reported; ``missing`` names the
    commands the unit found missing (``CFGI_STE``, ``TLBI_NH_VA`` ...)."""
    c = unit.caches
    ste_e = c.ste.get(sid)
    index = 0 if pasid is None else pasid
    cd_e = c.cd.get((sid, index))
    vmid = ste_e.info.vmid if ste_e is not None else 0
    asid = cd_e.info.asid if cd_e is not None else None
    names: list[str] = []
    notes: list[str] = []
    for item in missing:
        for part in item.split("/"):  # a nested entry: either command removes it
            bucket = names if part in CACHE_OF else notes
            if part not in bucket:
                bucket.append(part)
    first = names[0] if names else "TLBI_NH_VA"
    cache = CACHE_OF[first]
    cached_e = _outcome(addr, cached)
    blamed: SlotCached | None = None
    leaf: TlbEntry | None = None
    if cache == "STE cache":
        blamed = ste_e
    elif cache == "CD cache":
        blamed = cd_e
    else:
        tags = [(vmid, S2_ONLY)] if asid is None else [(vmid, asid), (vmid, GLOBAL)]
        for tag in tags:
            leaf = c.tlb.lookup(tag, addr)
            if leaf is not None:
                blamed = leaf
                cached_e = tlb_entry(leaf)
                break
    writes: tuple[TableWrite, ...] = () if blamed is None else causes(blamed)
    page = addr & ~0xFFF if leaf is None else leaf.vpn << leaf.shift
    span = 0x1000 if leaf is None else 1 << leaf.shift
    where = (("Address", hex(page)), ("range", size_text(span)), ("Leaf", "1"))
    commands: list[Invalidation] = []
    for name in names:
        if name == "CFGI_STE":
            commands.append(Invalidation("CMD_CFGI_STE", (("SID", hex(sid)), ("Leaf", "1"))))
        elif name == "CFGI_CD":
            cfgi = (("SID", hex(sid)), ("SSID", str(index)), ("Leaf", "1"))
            commands.append(Invalidation("CMD_CFGI_CD", cfgi))
        elif name == "TLBI_NH_ASID":
            commands.append(
                Invalidation("CMD_TLBI_NH_ASID", (("VMID", str(vmid)), ("ASID", str(asid))))
            )
        elif name == "TLBI_NH_VAA":
            commands.append(Invalidation("CMD_TLBI_NH_VAA", (("VMID", str(vmid)), *where)))
        elif name == "TLBI_S2_IPA":
            commands.append(Invalidation("CMD_TLBI_S2_IPA", (("VMID", str(vmid)), *where)))
        elif name == "TLBI_S12_VMALL":
            commands.append(Invalidation("CMD_TLBI_S12_VMALL", (("VMID", str(vmid)),)))
        else:
            fields = (("VMID", str(vmid)), ("ASID", str(asid)), *where)
            commands.append(Invalidation("CMD_TLBI_NH_VA", fields))
    who = bdf(sid)
    fresh = _fresh_leaf(unit, sid, pasid, addr)
    if isinstance(fresh, Leaf):
        now = Entry(
            addr & ~((1 << fresh.shift) - 1),
            fresh.phys,
            1 << fresh.shift,
            3 - (fresh.shift - 12) // 9,
            "r" + perms_text(TLB_PERMS, fresh.perms),
        )
    elif fresh is not None:
        now = Entry(addr & ~0xFFF, None, fault=_evt_text(fresh))
    else:
        now = _outcome(addr, current)
    return Finding(
        "stale",
        f"{unit.name}: {who} SSID {pasid} IOVA {addr:#x} used a stale {cache} entry",
        unit=unit.name,
        requester=who,
        pasid=pasid,
        iova=addr,
        domain=f"VMID {vmid}" + ("" if asid is None else f" ASID {asid}"),
        cache=cache,
        cached=cached_e,
        current=now,
        writes=writes,
        missing=tuple(commands),
        detail="; ".join(NOTES.get(n, n) for n in notes),
        time_ns=unit.m.clock.now,
    )


def walk_steps(unit: Smmuv3Unit, cd: CdInfo, addr: int) -> tuple[WalkStep, ...]:
    """The stage-1 descriptors a walk of ``addr`` reads through ``cd``'s TTBx, up to
    a block/page or an invalid descriptor (4 KiB granule)."""
    upper = (addr >> 55) & 1
    table = cd.ttb1 if upper else cd.ttb0
    va_bits = cd.va1 if upper else cd.va0
    if not va_bits:
        return ()
    steps: list[WalkStep] = []
    mem = unit.m.memory
    for level in range(start_level(va_bits), 4):
        shift = 12 + 9 * (3 - level)
        a = table + ((addr >> shift) & 0x1FF) * 8
        try:
            d = mem.read_u64(a)
        except BusError:
            steps.append(WalkStep(f"level {level}", a, 0, "unreadable"))
            break
        out = d & ((1 << 48) - 1) & ~0xFFF
        if not d & 1:
            steps.append(WalkStep(f"level {level}", a, d, "invalid"))
            break
        if level == 3 or not d & 2:
            steps.append(
                WalkStep(f"level {level}", a, d, f"{'page' if level == 3 else 'block'} {out:#x}")
            )
            break
        steps.append(WalkStep(f"level {level}", a, d, f"table {out:#x}"))
        table = out
    return tuple(steps)


def fault_finding(
    unit: Smmuv3Unit,
    sid: int,
    pasid: int | None,
    priv: bool,
    addr: int,
    write: bool,
    f: SmmuFault,
    cd: CdInfo | None,
    recorded: bool,
) -> Finding:
    """The finding for a fault: the event record's fields and the stage-1 walk."""
    who = bdf(sid)
    evt = int(f.evt)
    return Finding(
        "fault",
        f"{unit.name}: DMA {'write' if write else 'read'} by {who} SSID {pasid} at "
        f"{addr:#x}: {_evt_text(evt)}",
        unit=unit.name,
        requester=who,
        pasid=pasid,
        iova=addr,
        domain="" if cd is None else f"ASID {cd.asid}",
        record=(
            ("ID", f"{evt:#x}"),
            ("SID", hex(sid)),
            ("SSV", str(int(pasid is not None))),
            ("SSID", str(pasid or 0)),
            ("RnW", str(int(not write))),
            ("PnU", str(int(priv))),
            ("InputAddr", hex(addr)),
            ("status", "recorded" if recorded else "not recorded"),
        ),
        walk=() if cd is None else walk_steps(unit, cd, addr),
        time_ns=unit.m.clock.now,
    )
