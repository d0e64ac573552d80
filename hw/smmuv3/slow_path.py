"""The SMMUv3 half of the shared pipeline (:mod:`hw.translation`): what a page the
hit path cannot answer gets (:class:`TlbSlowPath`: global entries, walk and fill,
re-checks naming the missing command, F_PERMISSION), and the fill of a request's
further pages of a last-level table from one read (:func:`fill_ahead`). The unit
(:class:`hw.smmuv3.unit.Smmuv3Unit`) selects the tables and owns the walks, faults
and stale reports these call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.bus import DmaFault
from hw.smmuv3.caches import GLOBAL, Sel
from hw.smmuv3.walk import (
    AP2,
    DBM,
    LEAF_OK,
    NG,
    OA_MASK,
    PERM_DBM,
    PERM_NU,
    PERM_R,
    PERM_U,
    PERM_WUR,
    TABLE_OK,
    CdInfo,
    SmmuFault,
    Straight,
    StreamInfo,
    straight,
)
from hw.translation import BLOCK, TlbEntry

if TYPE_CHECKING:
    from hw.smmuv3.unit import Smmuv3Unit

LOST_DIRTY = "no dirty update"
PERM_UR = PERM_U | PERM_R
BIT55 = 1 << 55
"""The VA bit that selects the TTB1 half."""
LEAF_OUT = OA_MASK | 3 << 48
"""A leaf's output address bits 47:12 and the Address Size bits 49:48 above them."""
NO_STRAIGHT: Straight = (0, 0, 0, -1, 0, 0, 0)
"""The straight parameters of a half that has none: no address passes ``a & 0 == -1``."""


class S1Leaf(TlbEntry):
    """An IOTLB entry the straight fill (:meth:`S1MissPath.fill`) builds: ``S1Leaf()``
    takes no arguments (object's constructor, the cheapest allocation) and the fill
    sets the fields :class:`~hw.translation.TlbEntry` has in line."""

    __slots__ = ()
    if TYPE_CHECKING:

        def __init__(self) -> None: ...

    else:
        __init__ = object.__init__


def tlbi_for(ste: StreamInfo, cd: CdInfo | None, e: TlbEntry) -> str:
    """The command that would have removed the stale entry ``e``."""
    if cd is None:
        return "TLBI_S2_IPA"
    name = "TLBI_NH_VA" if e.tag[1] != GLOBAL else "TLBI_NH_VAA"  # type: ignore[index]
    return name if ste.s2 is None else f"{name}/TLBI_S12_VMALL"


class TlbSlowPath:
    """The SMMUv3 slow path of one kind of request (:class:`hw.translation.SlowPath`):
    global entries, fills, re-checks naming the missing command, F_PERMISSION. It
    keeps no state of its own between pages, so a clean selection keeps one per
    request kind (:attr:`~hw.smmuv3.caches.Sel.slows`); ``stale`` names the configuration commands a
    request found missing (non-empty only for that request's own slow path)."""

    __slots__ = ("need", "pasid", "priv", "sel", "sid", "stale", "unit", "write")

    def __init__(
        self,
        unit: Smmuv3Unit,
        sid: int,
        pasid: int | None,
        priv: bool,
        write: bool,
        sel: Sel,
        stale: tuple[str, ...],
    ) -> None:
        self.unit = unit
        self.sid = sid
        self.pasid = pasid
        self.priv = priv
        self.write = write
        self.sel = sel
        self.stale = stale
        self.need = sel.needs[write | priv << 1]

    def __call__(self, e: TlbEntry | None, a: int, end: int) -> TlbEntry | DmaFault:
        unit, sel, write = self.unit, self.sel, self.write
        cd = sel.cd
        if e is None:
            gtag = sel.gtag
            if gtag is not None:
                gt = unit._p.iotlb.tables.get(gtag)
                if gt is not None:
                    e = gt[0].get(a >> 12) or gt[1].get(a >> 21) or gt[2].get(a >> 30)
            if e is None and not self.stale:  # a miss: walk and fill
                need = self.need
                try:
                    e = unit._fill(sel, a, write, end, need)
                    if write and e.perms & PERM_DBM:
                        e = unit._fill(sel, a, True)  # the dirty update, then the write
                except SmmuFault as f:
                    return unit._fault(self.sid, self.pasid, self.priv, a, write, f, cd)
                if e.perms & need != need:
                    perm = unit._perm_fault(sel.ste, cd, a, write)
                    return unit._fault(self.sid, self.pasid, self.priv, a, write, perm, cd)
                return e
        sid, pasid, priv = self.sid, self.pasid, self.priv
        missing = list(self.stale)
        try:
            if e is None:
                e = unit._fill(sel, a, write)
            else:
                e = unit._slow_page(sel, e, a, missing, write)
            if write and e.perms & PERM_DBM and not missing:
                e = unit._fill(sel, a, True)  # the dirty update, then the write
        except SmmuFault as f:
            if missing:
                unit._check_fresh(sid, pasid, priv, write, a, (-1, int(f.evt)), missing)
            return unit._fault(sid, pasid, priv, a, write, f, cd)
        if e.perms & self.need != self.need:
            perm = unit._perm_fault(sel.ste, cd, a, write)
            if missing:
                unit._check_fresh(sid, pasid, priv, write, a, (-1, int(perm.evt)), missing)
            return unit._fault(sid, pasid, priv, a, write, perm, cd)
        if missing:
            phys = e.phys | (a & ((1 << e.shift) - 1))
            unit._check_fresh(sid, pasid, priv, write, a, (phys & ~0xFFF, 0), missing)
        return e


class S1MissPath(TlbSlowPath):
    """:class:`TlbSlowPath` of a clean stage-1 selection (no stage 2) over RAM in one
    piece (:attr:`~hw.smmuv3.walk.Walker.flat`), for a request kind that an accessed,
    EL0-accessible leaf can serve (not privileged under CD.PAN), with the straight
    fill of one page (:meth:`fill`): the miss of a request's last page takes it here,
    and a one-page request whose page nothing is cached for takes it from the unit's
    ``translate`` directly (no pipeline call). Everything :meth:`fill` leaves takes
    the general path, which reads again (reading has no side effect): a cached entry,
    a global one under :attr:`Sel.gtag`, fewer levels, a descriptor that is not a
    clean table or leaf, a right the request lacks, an output not in RAM, a request
    going on past the page (fill-ahead), hardware tracing on."""

    __slots__ = (
        "fast0",
        "fast1",
        "gtag",
        "hd",
        "iotlb",
        "last_page",
        "machine",
        "plain0",
        "qwords",
        "stats",
        "tag",
    )

    def __init__(
        self, unit: Smmuv3Unit, sid: int, pasid: int | None, priv: bool, write: bool, sel: Sel
    ) -> None:
        super().__init__(unit, sid, pasid, priv, write, sel, ())
        cd = sel.cd
        assert cd is not None
        assert not self.need & PERM_NU, "no leaf this path serves gives PERM_NU"
        self.iotlb = unit._p.iotlb
        self.qwords = unit._w.qwords
        ram = self.iotlb.ram  # RAM in one piece from 0 (Walker.flat): all of qwords
        self.fast0 = self._params(straight(cd.half0, cd.leaf_bad), write, ram)
        self.fast1 = self._params(straight(cd.half1, cd.leaf_bad), write, ram)
        above, expect = self.fast0[2:4]
        self.plain0 = above & -above if above and not expect else 0
        """An address below this is in the lower half (TTB0) and passes its VA test:
        no bit at or above its VA size is set (0: no TTB0 half to read straight)."""
        self.hd = cd.hd
        self.tag, self.gtag = sel.tag, sel.gtag
        self.last_page = self.iotlb.ram - 4096
        """The highest page frame the straight fill gives (RAM in one piece from 0)."""
        self.machine = unit._m
        self.stats = unit.stats

    @staticmethod
    def _params(half: Straight | None, write: bool, ram: int) -> Straight:
        """The straight parameters for this kind: a write also tests AP[2]=0. When
        all of RAM (``ram`` bytes of :attr:`qwords`, one piece from 0) lies below
        the lowest high bit a test looks for (an address bit at or above the IPS,
        or in 51:48), that part of the test is dropped, as it cannot fail where
        :meth:`fill` applies it, and the tests left AND two small ints: a table
        descriptor read on the way indexed :attr:`qwords`, so it is below ``ram``;
        the leaf's output, taken with its bits 49:12 (:data:`LEAF_OUT`, which hold
        every bit ``leaf_bad`` names), is then above the last page of RAM."""
        if half is None:
            return NO_STRAIGHT
        tg, low, above, expect, table_test, leaf_test, root = half
        if write:
            leaf_test |= AP2
        high = table_test & ~0xFFF
        if ram <= high & -high:
            table_test &= 0xFFF
        high = leaf_test & ~0xFFF
        if ram <= high & -high and not high & ~LEAF_OUT:
            leaf_test &= 0xFFF
        return tg, low, above, expect, table_test, leaf_test, root

    def __call__(self, e: TlbEntry | None, a: int, end: int) -> TlbEntry | DmaFault:
        if e is None and end - a <= 4096:
            got = self.fill(a)
            if got is not None:
                return got
        return TlbSlowPath.__call__(self, e, a, end)

    def fill(self, a: int) -> TlbEntry | None:
        """Walk and fill page ``a`` (nothing cached for it under :attr:`Sel.tag`, the
        caller has checked) in one frame, or do nothing and return None. Hardware
        tracing must be off (a miss event per page), nothing global cached for the
        page, the half 4 levels; an address below :attr:`plain0` passes the VA test
        with one comparison (no AND of multi-digit ints), any other is tested as the
        walk tests it. The four descriptors are read straight from
        :attr:`~hw.memory.Memory.qwords`, each table descriptor's address taken
        unmasked (:func:`~hw.smmuv3.walk.straight` rejects every bit that would make
        it differ from the masked one, and a bit above 51 indexes outside RAM), each
        then tested with one AND (of two small ints when all of RAM lies below the
        IPS: :meth:`_params`); the leaf passes one test (a write needs AP[2]=0),
        gives one of two rights (read-only unless a dirty update is pending) and its
        page must be RAM. The entry is an :class:`S1Leaf` (object's constructor, the
        fields :class:`~hw.translation.TlbEntry` has set in line, as VT-d's
        ``walk_sl4`` does). Exactly the entry, miss and granules
        :meth:`Smmuv3Unit._fill` and :meth:`~hw.smmuv3.walk.Walker.walk_raw` give
        such a page (the tests compare the two over random tables)."""
        if a < self.plain0:  # (one comparison: no AND of multi-digit ints)
            tg, low, above, expect, table_test, leaf_test, root = self.fast0
        else:
            tg, low, above, expect, table_test, leaf_test, root = (
                self.fast1 if a & BIT55 else self.fast0
            )
            if a & above != expect:
                return None
        if self.machine.hw_trace is not None:
            return None
        vpn = a >> 12  # the indexes from the page number: small-int operations
        tables, gtag = self.iotlb.tables, self.gtag  # read each time (flush_all)
        if gtag in tables:  # (no global entry at all: usual after a flush)
            gt = tables[gtag]
            if gt[0].get(vpn) or gt[1].get(a >> 21) or gt[2].get(a >> 30):
                return None
        q = self.qwords
        try:
            p0 = q[g0 := tg + ((vpn >> 27) & low)]
            p1 = q[g1 := (p0 >> 3) + ((vpn >> 18) & 0x1FF)]
            p2 = q[g2 := (p1 >> 3) + ((vpn >> 9) & 0x1FF)]
            pte = q[g := (p2 >> 3) + (vpn & 0x1FF)]
        except IndexError:  # outside RAM (or a bit above 51): the general path
            return None
        if (  # one AND each, compared as small ints
            pte & leaf_test != LEAF_OK
            or p0 & table_test != TABLE_OK
            or p1 & table_test != TABLE_OK
            or p2 & table_test != TABLE_OK
        ):
            return None
        if not pte & AP2:
            perms = PERM_WUR
        elif self.hd and pte & DBM:
            return None  # a pending dirty update
        else:
            perms = PERM_UR
        phys = pte & LEAF_OUT  # (bits 49:48 clear unless the RAM test below fails)
        if phys > self.last_page:
            return None
        e = S1Leaf()
        e.slots = (g0, g1, g2, g)
        e.suspect = False
        e.tag = self.tag if pte & NG else gtag
        e.vpn = vpn
        e.shift = 12
        e.phys = phys
        e.perms = perms
        e.src = root
        e.pte_addr = g * 8  # (a multiplication of small ints is specialised, a shift not)
        e.dirty = True
        self.iotlb.put(e)
        self.stats.iotlb_misses += 1
        return e


def fill_ahead(unit: Smmuv3Unit, sel: Sel, first: TlbEntry, need: int, end: int) -> None:
    """Fill the TLB for the request's pages after ``first`` (a 4 KiB stage-1 leaf
    just filled) up to ``end`` or the end of its last-level table, from one read of
    that table (:meth:`~hw.smmuv3.walk.Walker.leaf_run`, under the rights the table
    descriptors above it leave, read again) instead of one walk each. Exactly what
    the per-page fills would give: each page a miss, with the same leaf, rights, tag
    and granules; it stops before the first page those would not fill and use (not
    a plain 4 KiB leaf with AF set, a right missing, outside RAM, a page already
    cached under either tag), which the per-page path then takes. The pages are
    counted as misses here, and taken back from the hits the request then counts
    when it serves them."""
    a = first.vpn << 12
    lim = min(end, ((a >> 21) + 1) << 21)
    count = ((lim - 1) >> 12) - (a >> 12)
    if count <= 0:
        return
    cd = sel.cd
    assert cd is not None
    pte_addr = first.pte_addr + 8
    shared = first.slots[:-1]  # type: ignore[index]
    upper = unit._w.upper_rights(cd, a, shared)
    run = unit._w.leaf_run(cd, pte_addr, count, upper, need)
    iotlb = unit._p.iotlb
    tables, ram, root = iotlb.tables, iotlb.ram, first.src
    tag, gtag = sel.tag, sel.gtag
    empty: dict[int, TlbEntry] = {}
    t4 = tables[tag][0] if tag in tables else empty
    g4 = tables[gtag][0] if gtag in tables else empty
    vpn = first.vpn + 1
    added: list[TlbEntry] = []
    for phys, perms, ng in run:
        if phys + 4096 > ram or vpn in t4 or vpn in g4:
            break
        added.append(
            TlbEntry(
                tag if ng else gtag,
                vpn,
                12,
                phys,
                perms,
                root,
                pte_addr,
                [*shared, pte_addr >> 3],
            )
        )
        vpn += 1
        pte_addr += 8
    if not added:
        return
    for e in added:
        t = iotlb.table(e.tag)
        t[0][e.vpn] = e
        t[BLOCK].pop(e.vpn >> 9, None)
    n = len(added)
    first_own = (first.pte_addr + 8) >> 3
    unit._p.deps.add_run(added, shared, range(first_own, first_own + n))
    unit.stats.iotlb_misses += n
    unit.stats.iotlb_hits -= n
    if not vpn & 0x1FF and tag in tables:  # filled to the end of the block: summarise
        # it now, so the request's hit path serves the rest from the summary
        iotlb.summarise(tables[tag], (vpn - 1) >> 9, root)
