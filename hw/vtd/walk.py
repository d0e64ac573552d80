"""Table walks: root -> context -> PASID directory -> PASID entry -> paging structures.

Mirrors the lookup order of VT-d spec 3.4/3.6/9.x (facts A10.5) and QEMU
``vtd_dev_to_context_entry``/``vtd_ce_get_rid2pasid_entry``/``vtd_iova_to_slpte``/
``vtd_iova_to_flpte``. Differences from QEMU: every walk reports the 8-byte table
entry words it read (``slots``, for the stale detector; its own A/D updates go through
:attr:`Walker.set_bits`), first-stage walks check U/S, R/W and XD over all levels,
and nested translation (PGTT=3, with ECAP.NEST) is walked (:meth:`Walker.walk_nested`)
where QEMU's emulated unit rejects it as invalid programming.

Walks raise :class:`~hw.vtd.faults.TranslationFault`; they never return a partial result.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from attrs import field, frozen

from hw.memory import BusError, Memory
from hw.translation import TlbEntry, ram_limits
from hw.vtd import entries as ent
from hw.vtd.config import VtdConfig
from hw.vtd.faults import FR, TranslationFault

PERM_R = 1
PERM_W = 2
PERM_X = 4
PERM_U = 8

KIND_SL = 0
KIND_FL = 1
KIND_PT = 2
KIND_NEST = 3

INTR_LO = 0xFEE0_0000
INTR_HI = 0xFEF0_0000

_SL_PRESENT = ent.SlPte.R.mask | ent.SlPte.W.mask
_SL_A = ent.SlPte.A.mask
_SL_SNP = ent.SlPte.SNP.mask
_FL_A = ent.FlPte.A.mask
_PS = ent.SlPte.PS.mask
assert _PS == ent.FlPte.PS.mask
_ADDR = (1 << 52) - 1
_ADDR_4K = _ADDR & ~0xFFF
_SL_PERM_FR = ((FR.READ, FR.WRITE), (FR.SM_READ, FR.SM_WRITE))
"""Non-present second-stage entry: [scalable][write]."""
_SL_RSVD_FR = (FR.PAGING_ENTRY_RSVD, FR.SS_RSVD)
_U64 = struct.Struct("<Q").unpack_from
_UPPER_SHIFTS: tuple[tuple[int, ...], ...] = tuple(
    tuple(9 * i for i in range(n - 1, 0, -1)) for n in range(7)
)
"""The page-number shifts (address shift - 12) of the levels above the last one, for
each level count."""
_NONE = _UPPER_SHIFTS[1]
"""No level above the last one (a walk that starts from a :class:`WalkMemo`)."""
_FL_ALL = PERM_R | PERM_W | PERM_X | PERM_U
_FL_RIGHTS = tuple(1 | (i & 2) | ((i & 4) << 1) | (0 if i & 1 else PERM_X) for i in range(8))
"""A first-stage entry's rights indexed by ``(pte & 6) | XD``: R always, W from bit 1,
U from bit 2, X unless XD (bit 63)."""


@frozen
class Stage:
    """Which tables a request walks: ``kind`` (SL/FL/PT), table root and level count.

    Two requests whose stages compare equal walk the same tables, so an IOTLB entry
    filled for one is exact for the other as long as no table page changed.
    """

    kind: int
    root: int
    levels: int
    ssade: bool = False
    s2: Stage | None = None
    """Nested (``KIND_NEST``): the second stage every first-stage table address and
    the first-stage output go through; ``root``/``levels`` are then the first
    stage's (a guest-physical root)."""


@frozen
class CtxInfo:
    """A decoded context entry (legacy or scalable), as the context cache holds it."""

    scalable: bool
    fpd: bool
    did: int = 0
    stage: Stage | None = None
    dte: bool = False
    """Device-TLB allowed: scalable DTE, or legacy TT=01 (translation requests and
    translated requests are blocked otherwise, VT-d spec 9.3/9.4)."""
    paside: bool = False
    pre: bool = False
    """Page requests allowed (scalable-mode PRE)."""
    pdts: int = 0
    dirptr: int = 0
    rid_pasid: int = 0
    slots: frozenset[int] = field(default=frozenset(), eq=False)
    """8-byte granules (``address >> 3``) of the root and context entry words read."""


@frozen
class PasidInfo:
    """A decoded PASID table entry with the FPD of its directory entry folded in."""

    did: int
    pgtt: int
    fpd: bool
    stage: Stage
    sre: bool
    ere: bool
    wpe: bool
    slots: frozenset[int] = field(default=frozenset(), eq=False)
    """Granules read: the context's, the PASID directory entry and the 64-byte entry."""


class Leaf(TlbEntry):
    """The leaf of a page walk, built as the IOTLB entry it becomes on a fill (one
    object per walk; a fill sets its tag and dirty state): page frame ``phys``, size
    ``1 << shift``, the access rights of all levels (``perms``), the leaf entry's
    address and the 8-byte granules of the entries read on the way (``slots``).

    ``Leaf()`` takes no arguments (object's constructor, the cheapest allocation):
    :meth:`Walker.walk_sl4` sets the fields in line, the other walks through
    :meth:`TlbEntry.__init__ <hw.translation.TlbEntry>`."""

    __slots__ = ()
    if TYPE_CHECKING:

        def __init__(self) -> None: ...

    else:
        __init__ = object.__init__


class NestLeaf(Leaf):
    """The leaf of a nested walk: ``pte_addr`` is the first-stage leaf (host
    address), ``s2_pte`` the second-stage leaf of the output page, whose A/D a use
    through the cached entry updates."""

    __slots__ = ("s2_pte",)

    def __init__(
        self,
        vpn: int,
        shift: int,
        phys: int,
        perms: int,
        src: Stage,
        pte_addr: int,
        slots: list[int],
        s2_pte: int,
    ) -> None:
        TlbEntry.__init__(self, None, vpn, shift, phys, perms, src, pte_addr, slots)
        self.s2_pte = s2_pte


class WalkMemo:
    """The upper levels of the last walk that reached a last-level table, for the
    next page of the same 2 MiB region in the same request: the table, the rights
    of the levels above and their granules. Valid within one request only (nothing
    but the walk's own A/D updates writes RAM during one), where it gives exactly
    what re-reading those levels would."""

    __slots__ = ("perms", "region", "slots", "table")

    def __init__(self) -> None:
        self.region = -1
        self.table = 0
        self.perms = 0
        self.slots: tuple[int, ...] = ()


def _set_bits(mem: Memory) -> Callable[[int, int], None]:
    def set_bits(addr: int, bits: int) -> None:
        pte = mem.read_u64(addr)
        if pte & bits != bits:
            mem.write_u64(addr, pte | bits)

    return set_bits


class Walker:
    """Reads tables from RAM for one unit; stateless apart from configuration.

    A/D updates go through :attr:`set_bits` (``set_bits(addr, bits)``, a read-modify-
    write of one u64); the unit points it at its dependency tracker so the model's own
    A/D writes do not make its cached entries suspect.
    """

    def __init__(self, memory: Memory, cfg: VtdConfig) -> None:
        self.mem = memory
        self.cfg = cfg
        self.ram8 = ram_limits(memory)[0] - 8
        """A table entry at or below this address is RAM: :meth:`leaf_run` reads it
        in line; above it :meth:`Memory.read_u64` decides."""
        little = sys.byteorder == "little"
        self.qwords = memory.view.cast("Q") if little else memoryview(b"").cast("Q")
        """RAM as native quadwords: the walks read table entry ``g`` (granule, address
        >> 3) as ``qwords[g]`` with no call (a little-endian host's native order is
        the tables' order; elsewhere :attr:`last_q` is -1 and every read is a call)."""
        self.last_q = (self.ram8 >> 3) if little else -1
        """The last granule the walks read through :attr:`qwords`."""
        self.addr_rsvd = ent.addr_rsvd(cfg.haw)
        self.upper_bad = self.addr_rsvd | _PS
        """The bits an entry pointing to a table has clear (then checked one by one)."""
        self.sl_leaf_rsvd = (self.addr_rsvd | (0 if cfg.sc else _SL_SNP), self.addr_rsvd)
        """Reserved bits of a second-stage leaf, [scalable]: SNP (bit 11) too in legacy
        mode without snoop control (ECAP.SC)."""
        self.flat = little and not memory.holes
        """RAM is one piece from 0 and :attr:`qwords` is all of it: an entry's granule
        is RAM exactly when indexing :attr:`qwords` with it does not raise."""
        self.sl_leaf_low = ((0 if cfg.sc else _SL_SNP) | _PS, _PS)
        """The bits below HAW a 4 KiB second-stage leaf has clear, [scalable]: PS, and
        SNP in legacy mode without snoop control (its reserved bits below bit 12)."""
        self.haw_top = 1 << cfg.haw
        """Every entry :meth:`walk_sl4` follows or gives is below this: its reserved
        address bits and bits 63:52 are clear (0 switches that walk off)."""
        self.sl4_leaf = tuple(low | 3 for low in self.sl_leaf_low)
        """A 4 KiB leaf below :attr:`haw_top` ANDed with this is 1, 2 or 3 exactly when
        it is present (R or W) with :attr:`sl_leaf_low` clear, [scalable]."""
        self.sl_bits = tuple(min(30 + 9 * (n - 2), cfg.mgaw) for n in range(6))
        """Second-stage input address width for each level count (MGAW caps it)."""
        self.sl4_top = 1 << self.sl_bits[4] if self.flat else 0
        """Where :meth:`walk_sl4` gives up at once: the 4-level input width, or
        everything when RAM is not in one piece."""
        self.set_bits: Callable[[int, int], None] = _set_bits(memory)
        self.set_bits_many: Callable[[dict[int, int]], None] = self._set_bits_many

    def _set_bits_many(self, updates: dict[int, int]) -> None:
        for addr, bits in updates.items():
            self.set_bits(addr, bits)

    def _read(self, addr: int, reason: FR, fpd: bool = False) -> int:
        try:
            return self.mem.read_u64(addr)
        except BusError:
            raise TranslationFault(reason, fpd) from None

    # -- context ------------------------------------------------------------------
    def context(self, root: int, scalable: bool, rid: int) -> CtxInfo:
        """Root entry then context entry for ``rid`` (facts A5, A10.1, A10.2)."""
        bus, devfn = rid >> 8, rid & 0xFF
        cfg = self.cfg
        if scalable:
            r_acc, r_np, r_rsvd = FR.SM_ROOT_ACCESS, FR.SM_ROOT_NOT_PRESENT, FR.SM_ROOT_RSVD
        else:
            r_acc, r_np, r_rsvd = FR.ROOT_ACCESS, FR.ROOT_NOT_PRESENT, FR.ROOT_RSVD
        raddr = root + bus * ent.ROOT_ENTRY_SIZE
        if scalable:
            half = raddr + (8 if devfn >= 0x80 else 0)
            rent = self._read(half, r_acc)
            rsvd = ent.RootLo.RSVDZ_MASK | self.addr_rsvd
            slots = {half >> 3}
        else:
            rent = self._read(raddr, r_acc)
            if self._read(raddr + 8, r_acc):
                raise TranslationFault(r_rsvd)
            rsvd = ent.RootLo.RSVDZ_MASK | self.addr_rsvd
            slots = {raddr >> 3, (raddr >> 3) + 1}
        if not rent & 1:
            raise TranslationFault(r_np)
        if rent & rsvd:
            raise TranslationFault(r_rsvd)
        table = rent & ~0xFFF
        if scalable:
            return self._sm_context(table + (devfn & 0x7F) * ent.SM_CTX_SIZE, slots)
        caddr = table + devfn * ent.LEGACY_CTX_SIZE
        slots |= {caddr >> 3, (caddr >> 3) + 1}
        lo = self._read(caddr, FR.CTX_ACCESS)
        hi = self._read(caddr + 8, FR.CTX_ACCESS)
        fpd = bool(lo & 2)
        if not lo & 1:
            raise TranslationFault(FR.CTX_NOT_PRESENT, fpd)
        did = ent.LegacyCtxHi.DID.get(hi)
        if (
            lo & (ent.LegacyCtxLo.RSVDZ_MASK | self.addr_rsvd)
            or hi & ent.LegacyCtxHi.RSVDZ_MASK
            or did >= cfg.ndoms
        ):
            raise TranslationFault(FR.CTX_RSVD, fpd)
        tt = ent.LegacyCtxLo.TT.get(lo)
        aw = ent.LegacyCtxHi.AW.get(hi)
        if tt == 3 or (tt == ent.TT_SL_ATS and not cfg.dt) or (tt == ent.TT_PT and not cfg.pt):
            raise TranslationFault(FR.CTX_INVALID, fpd)
        if tt == ent.TT_PT:
            stage = Stage(KIND_PT, 0, 0)
        else:
            if not (cfg.sagaw >> aw) & 1:
                raise TranslationFault(FR.CTX_INVALID, fpd)
            stage = Stage(KIND_SL, lo & ~0xFFF & ((1 << 64) - 1), aw + 2)
        return CtxInfo(
            False, fpd, did=did, stage=stage, dte=tt == ent.TT_SL_ATS, slots=frozenset(slots)
        )

    def _sm_context(self, caddr: int, slots: set[int]) -> CtxInfo:
        cfg = self.cfg
        words = [self._read(caddr + 8 * i, FR.SM_CTX_ACCESS) for i in range(4)]
        lo, hi = words[0], words[1]
        fpd = bool(lo & 2)
        if not lo & 1:
            raise TranslationFault(FR.SM_CTX_NOT_PRESENT, fpd)
        rsvd_lo = ent.SmCtxLo.RSVDZ_MASK | self.addr_rsvd
        if not cfg.dt:
            rsvd_lo |= ent.SmCtxLo.DTE.mask
        if not cfg.prs:
            rsvd_lo |= ent.SmCtxLo.PRE.mask
        if not cfg.pasid:
            rsvd_lo |= ent.SmCtxLo.PASIDE.mask
        # RPS/RPRIVS are not advertised: RID_PASID must be 0 and RID_PRIV clear.
        if lo & rsvd_lo or hi or words[2] or words[3]:
            raise TranslationFault(FR.SM_CTX_RSVD, fpd)
        return CtxInfo(
            True,
            fpd,
            dte=bool(lo & 4),
            paside=bool(lo & 8),
            pre=bool(lo & ent.SmCtxLo.PRE.mask),
            pdts=ent.SmCtxLo.PDTS.get(lo),
            dirptr=lo & ~0xFFF,
            rid_pasid=0,
            slots=frozenset(slots | {(caddr >> 3) + i for i in range(4)}),
        )

    # -- PASID ------------------------------------------------------------------
    def pasid_entry(self, ctx: CtxInfo, pasid: int) -> PasidInfo:
        """PASID directory entry then PASID table entry (facts A10.3, A10.4)."""
        cfg = self.cfg
        fpd = ctx.fpd
        if pasid >> (ctx.pdts + 7 + 6):
            raise TranslationFault(FR.SM_PASID_TOO_LARGE, fpd)
        daddr = ctx.dirptr + (pasid >> 6) * ent.PASID_DIR_ENTRY_SIZE
        dent = self._read(daddr, FR.SM_PASID_DIR_ACCESS, fpd)
        fpd = fpd or bool(dent & 2)
        if not dent & 1:
            raise TranslationFault(FR.SM_PASID_DIR_NOT_PRESENT, fpd)
        if dent & (ent.PasidDirEntry.RSVDZ_MASK | self.addr_rsvd):
            raise TranslationFault(FR.SM_PASID_DIR_RSVD, fpd)
        table = dent & ~0xFFF
        paddr = table + (pasid & 0x3F) * ent.PASID_ENTRY_SIZE
        try:
            raw = self.mem.read(paddr, ent.PASID_ENTRY_SIZE)
        except BusError:
            raise TranslationFault(FR.SM_PASID_ACCESS, fpd) from None
        q = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, 64, 8)]
        fpd = fpd or bool(q[0] & 2)
        if not q[0] & 1:
            raise TranslationFault(FR.SM_PASID_NOT_PRESENT, fpd)
        rsvd0 = ent.PasidQw0.RSVDZ_MASK | self.addr_rsvd
        rsvd1 = ent.PasidQw1.RSVDZ_MASK
        rsvd2 = ent.PasidQw2.RSVDZ_MASK | (self.addr_rsvd << 0)
        if not cfg.srs:
            rsvd2 |= ent.PasidQw2.SRE.mask
        if not cfg.ers:
            rsvd2 |= ent.PasidQw2.ERE.mask
        if q[0] & rsvd0 or q[1] & rsvd1 or q[2] & rsvd2 or any(q[3:]):
            raise TranslationFault(FR.SM_PASID_RSVD, fpd)
        pgtt = ent.PasidQw0.PGTT.get(q[0])
        aw = ent.PasidQw0.AW.get(q[0])
        did = ent.PasidQw1.DID.get(q[1])
        stage = self._pasid_stage(q, pgtt, aw, fpd)
        if did >= cfg.ndoms:
            raise TranslationFault(FR.SM_PASID_INVALID, fpd)
        return PasidInfo(
            did,
            pgtt,
            fpd,
            stage,
            sre=bool(q[2] & 1),
            ere=bool(q[2] & 2),
            wpe=bool(q[2] & 0x10),
            slots=ctx.slots | {daddr >> 3} | {(paddr >> 3) + i for i in range(8)},
        )

    def _pasid_stage(self, q: list[int], pgtt: int, aw: int, fpd: bool) -> Stage:
        cfg = self.cfg
        if pgtt == ent.PGTT_FL and cfg.flts:
            fspm = ent.PasidQw2.FSPM.get(q[2])
            if fspm > 1 or (fspm == 1 and not cfg.fl5lp):
                raise TranslationFault(FR.SM_PASID_INVALID, fpd)
            return Stage(KIND_FL, q[2] & ~0xFFF, 4 + fspm)
        if pgtt == ent.PGTT_SL and cfg.slts:
            if not (cfg.sagaw >> aw) & 1:
                raise TranslationFault(FR.SM_PASID_INVALID, fpd)
            return Stage(KIND_SL, q[0] & ~0xFFF, aw + 2, bool(q[0] & ent.PasidQw0.SSADE.mask))
        if pgtt == ent.PGTT_PT and cfg.pt:
            return Stage(KIND_PT, 0, 0)
        if pgtt == ent.PGTT_NESTED and cfg.nest:
            fspm = ent.PasidQw2.FSPM.get(q[2])
            if fspm > 1 or (fspm == 1 and not cfg.fl5lp) or not (cfg.sagaw >> aw) & 1:
                raise TranslationFault(FR.SM_PASID_INVALID, fpd)
            ssade = bool(q[0] & ent.PasidQw0.SSADE.mask)
            s2 = Stage(KIND_SL, q[0] & ~0xFFF, aw + 2, ssade)
            return Stage(KIND_NEST, q[2] & ~0xFFF, 4 + fspm, ssade, s2)
        raise TranslationFault(FR.SM_PASID_INVALID, fpd)

    # -- paging structures ------------------------------------------------------------
    def walk_sl4(
        self,
        st: Stage,
        addr: int,
        scalable: bool,
        memo: WalkMemo | None,
        tag: Hashable = None,
    ) -> Leaf | None:
        """The usual 4-level second-stage walk, straight (:meth:`walk_sl`'s first
        branch, and a one-page fill's walk): three table pointers and a 4 KiB leaf, all
        in RAM, every entry below 2**HAW (:attr:`haw_top`: its reserved address bits
        and bits 63:52 are clear), the table pointers with bits 11:3 clear too (so a
        pointer >> 3 is its table's first granule, as Linux writes them: the address
        and R/W), all four levels read first, then tested together. None for
        anything else (beyond the input width, a fault, a large page, a table outside
        RAM, a high or an ignored bit set): :meth:`walk_sl` reads the levels again and
        decides. For a stage of 4 levels without A/D updates, RAM in one piece
        (:attr:`flat`) and ``memo`` None or of another region. The leaf is built
        without a constructor call (the fields :class:`~hw.translation.TlbEntry`
        sets, in line), with ``tag`` as its IOTLB tag."""
        if addr >= self.sl4_top:
            return None
        qwords = self.qwords
        vpn = addr >> 12  # below 2**36: the top index needs no mask
        try:  # each level read before any is tested: a broken entry's next index
            # reads harmless RAM or raises (all are tested before anything is used)
            g1 = (st.root >> 3) + (vpn >> 27)
            p1 = qwords[g1]
            g2 = (p1 >> 3) + ((vpn >> 18) & 0x1FF)
            p2 = qwords[g2]
            g3 = (p2 >> 3) + ((vpn >> 9) & 0x1FF)
            p3 = qwords[g3]
            g = (p3 >> 3) + (vpn & 0x1FF)
            pte = qwords[g]
        except IndexError:  # beyond RAM: the loop decides (a table there faults)
            return None
        if (
            p1 & 3
            and p2 & 3
            and p3 & 3
            and not (up := p1 | p2 | p3) & 0xFF8
            and up | pte < self.haw_top
            and pte & self.sl4_leaf[scalable] in {1, 2, 3}
        ):
            perms = p1 & 7 & p2 & p3
            if memo is not None:
                memo.region, memo.table = addr >> 21, p3 & -4096
                memo.perms, memo.slots = perms, (g1, g2, g3)
            e = Leaf()
            e.slots = (g1, g2, g3, g)
            e.suspect = False
            e.tag = tag
            e.vpn = vpn
            e.shift = 12
            e.phys = pte & -4096
            e.perms = perms & pte
            e.src = st
            e.pte_addr = g << 3
            e.dirty = True
            return e
        return None

    def walk_sl(
        self,
        st: Stage,
        addr: int,
        write: bool,
        scalable: bool,
        fpd: bool,
        update: bool,
        memo: WalkMemo | None = None,
        leaf_a: bool = True,
    ) -> Leaf:
        """Second-stage walk (facts A11.2); QEMU ``vtd_iova_to_slpte``.

        A non-present entry (R=W=0) faults as a read/write permission fault, the way
        the spec and QEMU report it (0x05/0x06 legacy, 0x85/0x86 scalable). One loop
        over the levels above the last one with the entry decoded in place (no
        objects per level, entries read as RAM quadwords by granule, one test for
        the usual table pointer); the access rights of a level are its bits 2:0
        (R, W, X), ANDed over the levels. The leaf is the IOTLB entry a fill caches
        (:class:`Leaf`).
        """
        levels = st.levels
        if addr >> self.sl_bits[levels]:
            raise TranslationFault(FR.SM_ADDR_BEYOND if scalable else FR.ADDR_BEYOND_MGAW, fpd)
        qwords, last_q = self.qwords, self.last_q
        ad = update and st.ssade
        if levels == 4 and not ad and self.flat and (memo is None or memo.region != addr >> 21):
            leaf = self.walk_sl4(st, addr, scalable, memo)
            if leaf is not None:
                return leaf
        if memo is not None and memo.region == addr >> 21:
            table, perms, slots, uppers = memo.table, memo.perms, [*memo.slots], _NONE
            memo = None  # it holds this walk's upper levels already
        else:
            table, perms, slots, uppers = st.root, 7, [], _UPPER_SHIFTS[levels]
        vpn = addr >> 12  # the level indices from it: smaller ints, fewer digits
        try:
            for vs in uppers:
                g = (table >> 3) + ((vpn >> vs) & 0x1FF)
                pte = qwords[g] if g <= last_q else self.mem.read_u64(g << 3)
                slots.append(g)
                if not pte & _SL_PRESENT or pte & self.upper_bad:
                    if not pte & _SL_PRESENT:
                        raise TranslationFault(_SL_PERM_FR[scalable][write], fpd)
                    shift = vs + 12
                    level = vs // 9 + 1
                    if (
                        not pte & _PS
                        or level > 3
                        or level == levels
                        or not (self.cfg.sllps >> (level - 2)) & 1
                        or pte & (self.sl_leaf_rsvd[scalable] | (((1 << shift) - 1) & ~0xFFF))
                    ):
                        raise TranslationFault(_SL_RSVD_FR[scalable], fpd)
                    break  # a 2 MiB or 1 GiB leaf
                perms &= pte
                if ad and not pte & _SL_A:
                    self.set_bits(g << 3, _SL_A)
                table = pte & _ADDR_4K
            else:
                shift = 12
                g = (table >> 3) + (vpn & 0x1FF)
                pte = qwords[g] if g <= last_q else self.mem.read_u64(g << 3)
                slots.append(g)
                if not pte & _SL_PRESENT:
                    raise TranslationFault(_SL_PERM_FR[scalable][write], fpd)
                if pte & (_PS | self.sl_leaf_rsvd[scalable]):
                    raise TranslationFault(_SL_RSVD_FR[scalable], fpd)
                if memo is not None:
                    memo.region, memo.table, memo.perms = addr >> 21, table, perms
                    memo.slots = (*slots[:-1],)
        except BusError:
            raise TranslationFault(
                FR.SS_ACCESS if scalable else FR.PAGING_ENTRY_ACCESS, fpd
            ) from None
        if ad and leaf_a and not pte & _SL_A:
            self.set_bits(g << 3, _SL_A)
        leaf = Leaf()
        TlbEntry.__init__(
            leaf,
            None,
            addr >> shift,
            shift,
            pte & _ADDR & -(1 << shift),
            perms & pte & 7,
            st,
            g << 3,
            slots,
        )
        return leaf

    def walk_fl(
        self,
        st: Stage,
        addr: int,
        fpd: bool,
        update: bool,
        memo: WalkMemo | None = None,
        leaf_a: bool = True,
    ) -> Leaf:
        """First-stage (x86-64) walk (facts A11.1); QEMU ``vtd_iova_to_flpte``.

        XD is honoured whatever PASID-entry NXE says (Linux stopped setting NXE).
        Accessed flags are set on the way down when ``update``; D is set by the caller
        once the write passed its permission check. One loop over the levels above
        the last one, entries decoded in place and read as RAM quadwords by granule:
        R always, W from bit 1, U from bit 2, X unless bit 63. The leaf is the IOTLB
        entry a fill caches.
        """
        levels = st.levels
        sign = 47 if levels == 4 else 56
        top = addr >> sign
        if top and top != (1 << (64 - sign)) - 1:
            raise TranslationFault(FR.SM_NON_CANONICAL, fpd)
        qwords, last_q = self.qwords, self.last_q
        if memo is not None and memo.region == addr >> 21:
            table, perms, slots, uppers = memo.table, memo.perms, [*memo.slots], _NONE
            memo = None  # it holds this walk's upper levels already
        else:
            table, perms, slots, uppers = st.root, _FL_ALL, [], _UPPER_SHIFTS[levels]
        vpn = addr >> 12  # the level indices from it: smaller ints, fewer digits
        try:
            for vs in uppers:
                g = (table >> 3) + ((vpn >> vs) & 0x1FF)
                pte = qwords[g] if g <= last_q else self.mem.read_u64(g << 3)
                slots.append(g)
                if not pte & 1 or pte & self.upper_bad:
                    if not pte & 1:
                        raise TranslationFault(FR.FS_NOT_PRESENT, fpd)
                    shift = vs + 12
                    level = vs // 9 + 1
                    if (
                        not pte & _PS
                        or level > 3
                        or (level == 3 and not self.cfg.fl1gp)
                        or pte & (self.addr_rsvd | (((1 << shift) - 1) & ~0x1FFF))
                    ):
                        raise TranslationFault(FR.FS_RSVD, fpd)
                    break  # a 2 MiB or 1 GiB page
                perms &= _FL_RIGHTS[(pte & 6) | (pte >> 63)]
                if update and not pte & _FL_A:
                    self.set_bits(g << 3, _FL_A)
                table = pte & _ADDR_4K
            else:
                shift, vs = 12, 0
                g = (table >> 3) + (vpn & 0x1FF)
                pte = qwords[g] if g <= last_q else self.mem.read_u64(g << 3)
                slots.append(g)
                if not pte & 1:
                    raise TranslationFault(FR.FS_NOT_PRESENT, fpd)
                if pte & self.addr_rsvd:
                    raise TranslationFault(FR.FS_RSVD, fpd)
                if memo is not None:
                    memo.region, memo.table, memo.perms = addr >> 21, table, perms
                    memo.slots = (*slots[:-1],)
        except BusError:
            raise TranslationFault(
                FR.FS_PTR_INVALID if vs == 9 * (levels - 1) else FR.FS_ACCESS, fpd
            ) from None
        perms &= _FL_RIGHTS[(pte & 6) | (pte >> 63)]
        if update and leaf_a and not pte & _FL_A:
            self.set_bits(g << 3, _FL_A)
        leaf = Leaf()
        TlbEntry.__init__(
            leaf, None, addr >> shift, shift, pte & _ADDR & -(1 << shift), perms, st, g << 3, slots
        )
        return leaf

    # -- nested translation (PGTT=3) ---------------------------------------------------
    def _nest_fetch(self, s2: Stage, gpa: int, top: bool, fpd: bool, slots: list[int]) -> Leaf:
        """The second-stage translation of a first-stage table entry's guest-physical
        address (a read by the walk). Its faults are the nested first-stage ones
        (spec 3.8, table "Nested"): beyond the second stage's width 0x74, not
        present or not readable 0x75 for the top-level table, 0x76 below; reserved
        bits and access errors keep their second-stage codes (0x7A, 0x78)."""
        try:
            lf = self.walk_sl(s2, gpa, False, True, fpd, s2.ssade)
        except TranslationFault as f:
            reason = f.reason
            if reason == FR.SM_ADDR_BEYOND:
                reason = FR.FS_NEST_BEYOND
            elif reason in (FR.SM_READ, FR.SM_WRITE):
                reason = FR.FS_NEST_TOP_READ if top else FR.FS_NEST_READ
            raise TranslationFault(reason, fpd) from None
        if not lf.perms & PERM_R:
            raise TranslationFault(FR.FS_NEST_TOP_READ if top else FR.FS_NEST_READ, fpd)
        slots.extend(lf.slots)
        return lf

    def walk_nested(
        self,
        st: Stage,
        addr: int,
        write: bool,
        fpd: bool,
        update: bool,
        leaf_a: bool = True,
    ) -> NestLeaf:
        """Nested walk (VT-d spec 3.8; facts A10.5 step 4): a first-stage walk from
        the PASID entry's FSPTPTR whose every table address is a guest-physical
        address translated by the second stage, then the second-stage translation
        of the first-stage output. No QEMU counterpart (its emulated unit refuses
        PGTT=3).

        The leaf's rights are the first stage's (R, W, U/S, XD over all levels) with
        R and W cut to what the second stage allows for the output page (its X is
        not consulted: SSEE is not modelled); its size is the smaller of the two
        stages' pages; ``slots`` hold every first- and second-stage entry read, so a
        change to either stage makes a cached nested entry suspect. First-stage
        entries hold guest-physical addresses: bits at or above MGAW are 0x74 (not
        the host-width reserved-bit fault). A first-stage A update is a write
        through the second stage: without W there it is 0x77.
        Second-stage A (SSADE) is set on every entry used; the output leaf's A/D
        go with the first-stage leaf's (the selection's A/D bits, ``set_dirty``).
        """
        s2 = st.s2
        assert s2 is not None
        levels = st.levels
        sign = 47 if levels == 4 else 56
        top = addr >> sign
        if top not in (0, (1 << (64 - sign)) - 1):
            raise TranslationFault(FR.SM_NON_CANONICAL, fpd)
        read = self.mem.read_u64
        beyond = ent.addr_rsvd(self.cfg.mgaw)
        fl1gp = self.cfg.fl1gp
        table = st.root
        perms = PERM_R | PERM_W | PERM_X | PERM_U
        slots: list[int] = []
        level = levels
        shift = 12 + 9 * levels
        while True:
            shift -= 9
            gpa = table + ((addr >> shift) & 0x1FF) * 8
            s2lf = self._nest_fetch(s2, gpa, level == levels, fpd, slots)
            pte_addr = s2lf.phys | (gpa & ((1 << s2lf.shift) - 1))
            try:
                pte = read(pte_addr)
            except BusError:
                raise TranslationFault(
                    FR.FS_PTR_INVALID if level == levels else FR.FS_ACCESS, fpd
                ) from None
            slots.append(pte_addr >> 3)
            if not pte & 1:
                raise TranslationFault(FR.FS_NOT_PRESENT, fpd)
            leaf = level == 1
            if pte & _PS and not leaf:
                if level > 3 or (level == 3 and not fl1gp):
                    raise TranslationFault(FR.FS_RSVD, fpd)
                leaf = True
                if pte & (((1 << shift) - 1) & ~0x1FFF):
                    raise TranslationFault(FR.FS_RSVD, fpd)
            if pte & beyond:
                raise TranslationFault(FR.FS_NEST_BEYOND, fpd)
            perms &= 1 | (pte & 2) | ((pte & 4) << 1) | (0 if pte >> 63 else PERM_X)
            if update and not pte & _FL_A:
                if not s2lf.perms & PERM_W:
                    raise TranslationFault(FR.FS_NEST_WRITE, fpd)
                if leaf_a or not leaf:
                    self.set_bits(pte_addr, _FL_A)
            if leaf:
                break
            table = pte & _ADDR_4K
            level -= 1
        out = (pte & _ADDR & ~((1 << shift) - 1)) | (addr & ((1 << shift) - 1))
        out_leaf = self.walk_sl(s2, out, write, True, fpd, update, None, leaf_a)
        slots.extend(out_leaf.slots)
        size = min(shift, out_leaf.shift)
        phys = (out_leaf.phys | (out & ((1 << out_leaf.shift) - 1))) & ~((1 << size) - 1)
        perms &= out_leaf.perms | PERM_X | PERM_U
        return NestLeaf(addr >> size, size, phys, perms, st, pte_addr, slots, out_leaf.pte_addr)

    def leaf_run(
        self, st: Stage, memo: WalkMemo, addr: int, count: int, scalable: bool
    ) -> list[tuple[int, int]]:
        """The 4 KiB leaves of up to ``count`` pages from ``addr`` in the last-level
        table ``memo`` holds, as ``(frame, rights of all levels)``: what
        :meth:`walk_fl`/:meth:`walk_sl` give for each of those pages with the same
        memo, read with one load. Stops before the first entry that is not a present,
        valid 4 KiB leaf (its walk raises the fault). Sets no A/D bits. The entries
        lie in the table page the memo's walk just read, so they are RAM."""
        ptes = self.mem.read_u64s(memo.table + ((addr >> 12) & 0x1FF) * 8, count)
        up = memo.perms
        out: list[tuple[int, int]] = []
        if st.kind == KIND_FL:
            rsvd = self.addr_rsvd
            for pte in ptes:
                if not pte & 1 or pte & rsvd:
                    break
                x = 0 if pte >> 63 else PERM_X
                out.append((pte & _ADDR_4K, up & (1 | (pte & 2) | ((pte & 4) << 1) | x)))
        else:
            bad = _PS | self.sl_leaf_rsvd[scalable]
            for pte in ptes:
                if not pte & _SL_PRESENT or pte & bad:
                    break
                out.append((pte & _ADDR_4K, up & pte & 7))
        return out

    def set_dirty(self, st: Stage, pte_addr: int) -> None:
        """Set a leaf's D bit after a permitted write (FL always, SL with SSADE)."""
        if st.kind == KIND_SL and not st.ssade:
            return
        self.set_bits(pte_addr, ent.SlPte.D.mask if st.kind == KIND_SL else ent.FlPte.D.mask)

    @staticmethod
    def s2_accessed_bits(st: Stage, dirty: bool) -> int:
        """Nested: the bits a permitted access sets in the second-stage leaf of the
        output page (A, and D with ``dirty``; only with SSADE)."""
        if st.ssade:
            return _SL_A | (ent.SlPte.D.mask if dirty else 0)
        return 0
