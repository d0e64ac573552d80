"""Structure walks: stream table -> STE -> CD table -> CD -> LPAE stage-1 tables.

The lookup order and validity rules are IHI 0070 §3.3 and chapter 5 (STE §5.2, L1CD
§5.3, CD §5.4) as summarised in facts A5-A10, checked against the spec text where the
facts file marked them unverified (see :mod:`hw.smmuv3.unit`). The stage-1 walk is
the VMSAv8-64 4 KiB-granule walk that Linux ``io-pgtable-arm.c`` builds tables for
(``__arm_lpae_map``/``arm_lpae_iova_to_phys``), with the SMMU's CD controls (T0SZ,
EPD0/1, TBI, IPS, AFFD, HA, HD, HAD, PAN) applied.

Stage 2 (IDR0.S2P, IHI 0070 §3.3, §5.2 S2* fields, QEMU ``smmu_ptw_64_s2``): the
stage-2 tables of an STE with Config 0b110 translate the input address as an IPA;
with Config 0b111 (nested) every stage-1 structure address (CD, L1CD, table
descriptors) and the stage-1 output are IPAs walked through stage 2 first. A fault
met in stage 2 carries ``s2``, the IPA and the class (CD fetch, table walk, input),
and is recorded as STE.S2R says. Hardware dirty state (IDR0.HTTU=2): a write to a
DBM page that is read-only (stage 1 AP[2]=1 with CD.HD; stage 2 S2AP[1]=0 with
STE.S2HD) makes it writable in the descriptor, which is the dirty record software
reads back (``arm_lpae_read_and_clear_dirty``).

Walks raise :class:`SmmuFault` carrying the event id; they never return a partial
result. Every walk reports the 8-byte granules (``address >> 3``) it read, for the
stale-use detector; the Access-flag update goes through :attr:`Walker.set_bits` so the
model's own write does not make its cached entries suspect.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import cast

from attrs import field, frozen

from hw.memory import BusError, Memory
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.config import OAS_BITS, Smmuv3Config
from hw.smmuv3.entries import Evt
from hw.translation import TlbEntry, ram_limits

PERM_W = 1
PERM_U = 2
PERM_NU = 4
"""Not EL0-accessible (AP[1]=0): set exactly when PERM_U is not, so a privileged
access under CD.PAN can be checked like every right, as a bit that must be set."""
PERM_R = 8
"""Readable at stage 2 (S2AP[0]); always set without stage 2. Every access needs it."""
PERM_DBM = 16
"""Not writable now, but a write would be after the hardware dirty update (DBM page
under CD.HD / STE.S2HD): the write re-walks with the update instead of faulting."""

OA_MASK = ent.LpaeLeaf.OA.mask
_OA_HIGH = 0xF << 48  # descriptor bits 51:48: nonzero is an Address Size fault (48-bit OA)
_OA_HIGH_LEAF = 0x3 << 48
"""A leaf's bits 49:48 (50 is GP, 51 DBM): nonzero is an Address Size fault (48-bit OA)."""
_AP1 = ent.LpaeLeaf.AP1.mask
AP2 = ent.LpaeLeaf.AP2.mask
_AF = ent.LpaeLeaf.AF.mask
NG = ent.LpaeLeaf.NG.mask
_APT_NO_EL0 = 1 << 61
_APT_RO = 1 << 62
_APT = _APT_NO_EL0 | _APT_RO
_TABLE_IGNORED_LOW = 0xFF8
"""Table descriptor bits 11:3 (ignored by the walk)."""
PERM_WUR = PERM_W | PERM_U | PERM_R
_AF_AP = _AF | AP2 | _AP1
_AF_AP1 = _AF | _AP1
_UPPERS = ((39, 30, 21), (30, 21), (21,))
"""The shifts of the levels above the leaf level, by start level (4 KiB granule)."""
_FROM_LEVEL0 = _UPPERS[0]
DBM = ent.LpaeLeaf.DBM.mask
LEAF_OK = _AF | _AP1 | 3
"""A valid page descriptor, accessed, EL0-accessible (what :data:`Straight` leaves
test for; AP[2] then decides between two rights)."""
TABLE_OK = 3
"""A valid table descriptor (what :data:`Straight` table tests leave)."""
_S2AP_R = ent.LpaeS2Leaf.S2AP_R.mask
_S2AP_W = ent.LpaeS2Leaf.S2AP_W.mask


class SmmuFault(Exception):
    """Raised inside a walk: the event id, and the fetch address for fetch aborts.

    A stage-2 fault also has ``s2`` set, the ``ipa`` being translated, the event
    class (``cls``: CD fetch, stage-1 table walk or the input) and whether STE.S2R
    asks for a record (``record``)."""

    __slots__ = ("cls", "evt", "fetch", "ipa", "record", "s2")

    def __init__(
        self,
        evt: Evt,
        fetch: int = 0,
        s2: bool = False,
        ipa: int = 0,
        cls: int = ent.EVT_CLASS_IN,
        record: bool = True,
    ) -> None:
        super().__init__(evt)
        self.evt = evt
        self.fetch = fetch
        self.s2 = s2
        self.ipa = ipa
        self.cls = cls
        self.record = record


@frozen
class S2Info:
    """The stage-2 controls of a valid STE with Config 0b110/0b111 (IHI 0070 §5.2)."""

    ttb: int
    ia_bits: int
    """IPA width, 64 - S2T0SZ."""
    level: int
    """Start level, 2 - S2SL0 with the 4 KiB granule."""
    ps: int
    """Effective output size in bits (S2PS capped by IDR5.OAS)."""
    affd: bool
    ha: bool
    hd: bool
    record: bool
    """STE.S2R: stage-2 faults are recorded."""


@frozen
class StreamInfo:
    """A decoded, valid STE (abort, bypass or stage-1 CD table)."""

    config: int
    s1fmt: int = 0
    ctxptr: int = 0
    s1cdmax: int = 0
    s1dss: int = 0
    vmid: int = 0
    s2: S2Info | None = None
    """Stage 2 (Config 0b110 or 0b111), None without."""
    l1: int = -1
    """The L1STD the STE was found through (-1: linear stream table)."""
    slots: frozenset[int] = field(default=frozenset(), eq=False)
    """8-byte granules read (L1STD and the STE words used)."""


Half = tuple[int, tuple[int, ...], int, int, int, int, bool, int]
"""One TTBx half of a CD, ready for the walk: (start-level table as a granule, the
shifts of the levels from the start level down to level 2, the VA bits the indexes
take, the VA bits checked above the half's size, the value they must have, the table
descriptor bits that must read 0b11 (valid, table; no address above the IPS),
HADx, the TTBx root itself: an entry's source)."""


@frozen
class CdInfo:
    """A decoded, valid context descriptor."""

    asid: int
    ttb0: int
    va0: int
    epd0: bool
    ttb1: int
    va1: int
    epd1: bool
    ips: int
    tbi0: bool
    tbi1: bool
    affd: bool
    ha: bool
    pan: bool
    had0: bool
    had1: bool
    r: bool
    a: bool
    hd: bool = False
    """CD.HD: hardware dirty state for DBM leaves (IDR0.HTTU=2)."""
    l1: int = -1
    """The L1CD the CD was found through (-1: linear CD table or single CD)."""
    slots: frozenset[int] = field(default=frozenset(), eq=False)
    """8-byte granules read (L1CD and the CD words used)."""
    half0: Half | None = field(default=None, eq=False)
    """The walk parameters of the TTB0 half (None: disabled by EPD0), derived from the
    fields above (:func:`half`)."""
    half1: Half | None = field(default=None, eq=False)
    """The same for TTB1 (None: disabled by EPD1)."""
    leaf_bad: int = field(default=0, eq=False)
    """Leaf descriptor bits that make an Address Size fault: 49:48, and the output
    address bits at or above the effective IPS."""


class Leaf:
    """A stage-1 walk result: output frame, page size, rights and what was read."""

    __slots__ = ("ng", "perms", "phys", "pte_addr", "root", "shift", "slots")

    def __init__(
        self,
        phys: int,
        shift: int,
        perms: int,
        ng: bool,
        root: int,
        pte_addr: int,
        slots: list[int],
    ) -> None:
        self.phys = phys
        self.shift = shift
        self.perms = perms
        self.ng = ng
        self.root = root
        self.pte_addr = pte_addr
        self.slots = slots


class NestedLeaf(Leaf):
    """A walk through stage 2 too: the stage-1 output (``ipa``, None for stage 2
    alone) and the rights stage 2 alone gives, to name the stage of a permission
    fault."""

    __slots__ = ("ipa", "s2perms")

    def __init__(self, leaf: Leaf, ipa: int, s2perms: int) -> None:
        super().__init__(
            leaf.phys, leaf.shift, leaf.perms, leaf.ng, leaf.root, leaf.pte_addr, leaf.slots
        )
        self.ipa = ipa
        self.s2perms = s2perms


def start_level(va_bits: int) -> int:
    """4 KiB granule: the level whose table resolves the top VA bits (facts A10)."""
    return 4 - (va_bits - 12 + 8) // 9


class Walker:
    """Reads structures from RAM for one SMMU; stateless apart from configuration."""

    def __init__(self, memory: Memory, cfg: Smmuv3Config) -> None:
        self.mem = memory
        self.cfg = cfg
        self.oas_bits = cfg.oas_bits
        self.qwords = memory.qwords
        """RAM as little-endian quadwords indexed by granule (``address >> 3``):
        :attr:`Memory.qwords`."""
        self.ram_g = (ram_limits(memory)[0] >> 3) - 1
        """A descriptor at or below this granule is read in line from :attr:`qwords`
        (a subscript, no call); above it :meth:`Memory.read_u64` decides (holes)."""
        self.flat = not memory.holes
        """RAM is one piece from 0, read in line: a subscript outside it is a bus error
        (``IndexError``)."""
        self.set_bits: Callable[[int, int], None] = self._set_bits

    def _set_bits(self, addr: int, bits: int) -> None:
        self.mem.write_u64(addr, self.mem.read_u64(addr) | bits)

    def _clear_bits(self, addr: int, bits: int) -> None:
        """The stage-1 dirty update (AP[2] cleared): an ordinary write, so entries
        built from the clean descriptor become suspect."""
        self.mem.write_u64(addr, self.mem.read_u64(addr) & ~bits)

    def _q(self, addr: int, evt: Evt) -> int:
        try:
            return self.mem.read_u64(addr)
        except BusError:
            raise SmmuFault(evt, addr) from None

    # -- stream table (IHI 0070 §3.3.2, §5.1, §5.2) --------------------------------------
    def ste(self, base: int, cfg_reg: int, sid: int) -> StreamInfo:
        """Locate and decode the STE of ``sid`` under STRTAB_BASE/STRTAB_BASE_CFG.

        LOG2SIZE above IDR1.SIDSIZE is taken as SIDSIZE. A reserved FMT, or 2-level
        without IDR0.ST_LEVEL, is taken as linear; a reserved SPLIT as the next lower
        of 6/8/10 (these are CONSTRAINED UNPREDICTABLE choices; the model picks one).
        """
        cfg = self.cfg
        log2size = min(sr.STRTAB_BASE_CFG.LOG2SIZE.get(cfg_reg), cfg.sidsize)
        if sid >> log2size:
            raise SmmuFault(Evt.C_BAD_STREAMID)
        fmt = sr.STRTAB_BASE_CFG.FMT.get(cfg_reg)
        slots: set[int] = set()
        l1 = -1
        if fmt == sr.STRTAB_FMT_2LVL and cfg.st_level:
            split = sr.STRTAB_BASE_CFG.SPLIT.get(cfg_reg)
            split = 10 if split >= 10 else 8 if split >= 8 else 6
            l1_bytes = 8 << max(0, log2size - split)
            table = base & ~(max(64, l1_bytes) - 1)
            l1_addr = table + (sid >> split) * ent.L1_DESC_SIZE
            slots.add(l1_addr >> 3)
            l1 = self._q(l1_addr, Evt.F_STE_FETCH)
            span = ent.L1Std.SPAN.get(l1)
            if span == 0 or span > 12:
                raise SmmuFault(Evt.C_BAD_STREAMID)
            span = min(span - 1, split)
            low = sid & ((1 << split) - 1)
            if low >> span:
                raise SmmuFault(Evt.C_BAD_STREAMID)
            l2 = l1 & ent.L1Std.L2PTR.mask & ~((64 << span) - 1)
            addr = l2 + low * ent.STE_SIZE
        else:
            table = base & ~(max(64, 64 << log2size) - 1)
            addr = table + sid * ent.STE_SIZE
        try:
            raw = self.mem.read(addr, 32)
        except BusError:
            raise SmmuFault(Evt.F_STE_FETCH, addr) from None
        g = addr >> 3
        slots.update((g, g + 1, g + 2, g + 3))
        dw0 = int.from_bytes(raw[0:8], "little")
        dw1 = int.from_bytes(raw[8:16], "little")
        dw2 = int.from_bytes(raw[16:24], "little")
        dw3 = int.from_bytes(raw[24:32], "little")
        return self._decode_ste(dw0, dw1, dw2, dw3, l1, frozenset(slots))

    def _decode_ste(
        self, dw0: int, dw1: int, dw2: int, dw3: int, l1: int, slots: frozenset[int]
    ) -> StreamInfo:
        f0, f1 = ent.SteDw0, ent.SteDw1
        cfg = self.cfg
        if not dw0 & 1:
            raise SmmuFault(Evt.C_BAD_STE)
        config = f0.CONFIG.get(dw0)
        if not config & 0b100:
            return StreamInfo(ent.STE_CFG_ABORT, l1=l1, slots=slots)
        vmid = ent.SteDw2.S2VMID.get(dw2)
        if not cfg.vmid16 and vmid >> 8:
            raise SmmuFault(Evt.C_BAD_STE)
        if config == ent.STE_CFG_BYPASS:
            return StreamInfo(ent.STE_CFG_BYPASS, vmid=vmid, l1=l1, slots=slots)
        s2 = None
        if config & 0b010:
            if not cfg.s2p:
                raise SmmuFault(Evt.C_BAD_STE)  # stage 2 not implemented (IDR0.S2P=0)
            s2 = self._decode_s2(dw2, dw3)
            if config == ent.STE_CFG_S2:
                return StreamInfo(ent.STE_CFG_S2, vmid=vmid, s2=s2, l1=l1, slots=slots)
        cdmax = f0.S1CDMAX.get(dw0)
        fmt = f0.S1FMT.get(dw0)
        if fmt == 3:
            fmt = ent.S1FMT_LINEAR
        ctxptr = dw0 & f0.S1CTXPTR.mask
        if cdmax > cfg.ssidsize:
            raise SmmuFault(Evt.C_BAD_STE)
        if cdmax and fmt != ent.S1FMT_LINEAR and not cfg.cd2l:
            raise SmmuFault(Evt.C_BAD_STE)
        if ctxptr >> self.oas_bits:
            raise SmmuFault(Evt.C_BAD_STE)
        if f1.S1STALLD.get(dw1) and cfg.stall_model != 0:
            raise SmmuFault(Evt.C_BAD_STE)
        if f1.STRW.get(dw1) != ent.STRW_NSEL1:
            raise SmmuFault(Evt.C_BAD_STE)  # EL2 StreamWorlds are not modelled (HYP=0)
        dss = f1.S1DSS.get(dw1)
        if dss == 3:
            dss = ent.S1DSS_TERMINATE
        return StreamInfo(
            config,
            s1fmt=fmt if cdmax else ent.S1FMT_LINEAR,
            ctxptr=ctxptr,
            s1cdmax=cdmax,
            s1dss=dss if cdmax else 0,
            vmid=vmid,
            s2=s2,
            l1=l1,
            slots=slots,
        )

    def _decode_s2(self, dw2: int, dw3: int) -> S2Info:
        """The stage-2 fields of an STE (IHI 0070 §5.2; ILLEGAL -> C_BAD_STE): AArch64,
        little-endian, 4 KiB granule, S2PS not reserved, S2T0SZ consistent with S2SL0
        (1 to 13 index bits at the start level: up to 16 concatenated tables), the
        IPA within the output size, S2TTB aligned inside it, S2HA/S2HD only as
        IDR0.HTTU allows."""
        f = ent.SteDw2
        cfg = self.cfg
        ps = f.S2PS.get(dw2)
        sl0 = f.S2SL0.get(dw2)
        ha, hd = bool(f.S2HA.get(dw2)), bool(f.S2HD.get(dw2))
        if (
            f.S2TG.get(dw2) != ent.S2TG_4K
            or not f.S2AA64.get(dw2)
            or f.S2ENDI.get(dw2)
            or ps == 7
            or sl0 == 3
            or (ha and cfg.httu < 1)
            or (hd and cfg.httu < 2)
        ):
            raise SmmuFault(Evt.C_BAD_STE)
        ps_bits = min(OAS_BITS[min(ps, 6)], self.oas_bits)
        ia_bits = 64 - f.S2T0SZ.get(dw2)
        level = 2 - sl0
        index_bits = ia_bits - (39 - 9 * level)
        if not 1 <= index_bits <= 13 or ia_bits > ps_bits:
            raise SmmuFault(Evt.C_BAD_STE)
        ttb = dw3 & ent.SteDw3.S2TTB.mask
        if ttb >> ps_bits or ttb & (max(64, 8 << index_bits) - 1):
            raise SmmuFault(Evt.C_BAD_STE)
        return S2Info(
            ttb=ttb,
            ia_bits=ia_bits,
            level=level,
            ps=ps_bits,
            affd=bool(f.S2AFFD.get(dw2)),
            ha=ha,
            hd=hd,
            record=bool(f.S2R.get(dw2)),
        )

    # -- stage 2 (VMSAv8-64 stage-2 translation, 4 KiB granule) ------------------------------
    def walk_s2(
        self, s2: S2Info, ipa: int, write: bool, update: bool, slots: list[int], cls: int
    ) -> tuple[int, int, int]:
        """Translate ``ipa`` through the stage-2 tables: ``(physical address, page
        shift, rights)`` with rights of :data:`PERM_R`, :data:`PERM_W`,
        :data:`PERM_DBM`. ``update`` sets AF (S2HA) and, for a ``write`` to a DBM page,
        S2AP[1] (S2HD). Faults carry ``s2``, the IPA and ``cls``."""

        def fault(evt: Evt, fetch: int = 0) -> SmmuFault:
            return SmmuFault(evt, fetch, True, ipa, cls, s2.record)

        if ipa >> s2.ia_bits:
            raise fault(Evt.F_TRANSLATION)
        level = s2.level
        shift = 39 - 9 * level
        mask = (1 << (s2.ia_bits - shift)) - 1
        table = s2.ttb
        read = self.mem.read_u64
        pte_addr = table
        try:
            while True:
                pte_addr = table + ((ipa >> shift) & mask) * 8
                slots.append(pte_addr >> 3)
                pte = read(pte_addr)
                if not pte & 1:
                    raise fault(Evt.F_TRANSLATION)
                if pte & 2 and level < 3:
                    if pte & _OA_HIGH:
                        raise fault(Evt.F_ADDR_SIZE)
                    table = pte & OA_MASK
                    if table >> s2.ps:
                        raise fault(Evt.F_ADDR_SIZE)
                    level += 1
                    shift -= 9
                    mask = 0x1FF
                    continue
                if not pte & 2 and level in (0, 3):
                    raise fault(Evt.F_TRANSLATION)
                if pte & _OA_HIGH_LEAF:
                    raise fault(Evt.F_ADDR_SIZE)
                break
        except BusError:
            raise fault(Evt.F_WALK_EABT, pte_addr) from None
        phys = pte & OA_MASK & ~((1 << shift) - 1)
        if phys >> s2.ps:
            raise fault(Evt.F_ADDR_SIZE)
        if not pte & _AF:
            if s2.ha:
                if update:
                    self.set_bits(pte_addr, _AF)
            elif not s2.affd:
                raise fault(Evt.F_ACCESS)
        rights = (PERM_R if pte & _S2AP_R else 0) | (PERM_W if pte & _S2AP_W else 0)
        if not pte & _S2AP_W and pte & DBM and s2.hd:
            if write and update:
                self.set_bits(pte_addr, _S2AP_W)
                rights |= PERM_W
            else:
                rights |= PERM_DBM
        return phys | (ipa & ((1 << shift) - 1)), shift, rights

    def _s2_fetch(self, s2: S2Info, ipa: int, slots: list[int], cls: int) -> int:
        """A stage-1 structure read at ``ipa``: its physical address; stage 2 must
        allow reads (F_PERMISSION at stage 2 otherwise)."""
        pa, _shift, rights = self.walk_s2(s2, ipa, False, True, slots, cls)
        if not rights & PERM_R:
            raise SmmuFault(Evt.F_PERMISSION, 0, True, ipa, cls, s2.record)
        return pa

    def walk_stream(
        self, ste: StreamInfo, cd: CdInfo | None, va: int, update: bool, write: bool
    ) -> Leaf:
        """The walk a stream's STE asks for: stage 1 (:meth:`walk`), stage 2 alone
        (``cd`` None) or stage 1 through stage 2; the rights of both stages, the
        smaller page, the granules read at both stages."""
        s2 = ste.s2
        if s2 is None:
            assert cd is not None
            return self.walk(cd, va, update, write)
        if cd is None:
            slots: list[int] = []
            pa, shift, rights = self.walk_s2(s2, va, write, update, slots, ent.EVT_CLASS_IN)
            perms = rights | PERM_U | PERM_NU
            base = pa & ~((1 << shift) - 1)
            leaf = Leaf(base, shift, perms, False, s2.ttb, slots[-1] << 3, slots)
            return NestedLeaf(leaf, va, rights)
        s1 = self.walk(cd, va, update, write, s2)
        ipa = s1.phys | (va & ((1 << s1.shift) - 1))
        pa, shift2, rights = self.walk_s2(s2, ipa, write, update, s1.slots, ent.EVT_CLASS_IN)
        shift = min(s1.shift, shift2)
        perms = s1.perms & ~(PERM_W | PERM_R | PERM_DBM)
        s1w = s1.perms & (PERM_W | PERM_DBM)
        s2w = rights & (PERM_W | PERM_DBM)
        if s1.perms & PERM_W and rights & PERM_W:
            perms |= PERM_W
        elif s1w and s2w:
            perms |= PERM_DBM
        perms |= rights & PERM_R
        base = pa & ~((1 << shift) - 1)
        leaf = Leaf(base, shift, perms, s1.ng, s1.root, s1.pte_addr, s1.slots)
        return NestedLeaf(leaf, ipa, rights)

    # -- context descriptors (IHI 0070 §5.3, §5.4) ----------------------------------------
    def cd(self, ste: StreamInfo, index: int) -> CdInfo:
        """CD ``index`` of the STE's CD table (``index`` already checked < 2^S1CDMax)."""
        slots: set[int] = set()
        l1 = -1
        if ste.s1fmt == ent.S1FMT_LINEAR:
            table = ste.ctxptr & ~((64 << ste.s1cdmax) - 1)
            addr = table + index * ent.CD_SIZE
        else:
            leaf_bits = 6 if ste.s1fmt == ent.S1FMT_4K_L2 else 10
            l1_bytes = 8 << max(0, ste.s1cdmax - leaf_bits)
            table = ste.ctxptr & ~(max(64, l1_bytes) - 1)
            l1_addr = table + (index >> leaf_bits) * ent.L1_DESC_SIZE
            if ste.s2 is not None:
                l1_addr = self._cd_pa(ste.s2, l1_addr, slots)
            slots.add(l1_addr >> 3)
            l1 = self._q(l1_addr, Evt.F_CD_FETCH)
            if not l1 & 1:
                raise SmmuFault(Evt.C_BAD_SUBSTREAMID)
            l2 = l1 & ent.L1Cd.L2PTR.mask & ~((64 << leaf_bits) - 1)
            addr = l2 + (index & ((1 << leaf_bits) - 1)) * ent.CD_SIZE
        if ste.s2 is not None:
            addr = self._cd_pa(ste.s2, addr, slots)
        try:
            raw = self.mem.read(addr, 24)
        except BusError:
            raise SmmuFault(Evt.F_CD_FETCH, addr) from None
        g = addr >> 3
        slots.update((g, g + 1, g + 2))
        q = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, 24, 8)]
        return self._decode_cd(q[0], q[1], q[2], l1, frozenset(slots))

    def _cd_pa(self, s2: S2Info, ipa: int, slots: set[int]) -> int:
        """A CD or L1CD address of a nested STE is an IPA (class CD on a fault)."""
        walked: list[int] = []
        pa = self._s2_fetch(s2, ipa, walked, ent.EVT_CLASS_CD)
        slots.update(walked)
        return pa

    def _decode_cd(self, d0: int, d1: int, d2: int, l1: int, slots: frozenset[int]) -> CdInfo:
        """Validity checks of IHI 0070 §5.4 (ILLEGAL -> C_BAD_CD)."""
        f = ent.CdDw0
        cfg = self.cfg
        if not d0 & f.V.mask:
            raise SmmuFault(Evt.C_BAD_CD)
        ips = f.IPS.get(d0)
        if ips == 7:
            raise SmmuFault(Evt.C_BAD_CD)
        if ips == 6 and cfg.aidr == 0:
            ips = 5
        ips_bits = min(OAS_BITS[ips], self.oas_bits)
        if (
            not f.AA64.get(d0)
            or f.ENDI.get(d0)
            or (f.HA.get(d0) and cfg.httu < 1)
            or (f.HD.get(d0) and cfg.httu < 2)
            or (f.S.get(d0) and cfg.stall_model == 1)
            or (not cfg.asid16 and f.ASID.get(d0) >> 8)
        ):
            raise SmmuFault(Evt.C_BAD_CD)
        epd0 = bool(f.EPD0.get(d0))
        epd1 = bool(f.EPD1.get(d0))
        va0 = va1 = 0
        ttb0 = d1 & ent.CdDw1.TTB0.mask
        ttb1 = d2 & ent.CdDw2.TTB1.mask
        if not epd0:
            va0 = self._half(f.T0SZ.get(d0), f.TG0.get(d0), ent.TG0_4K, ttb0, ips_bits)
        if not epd1:
            va1 = self._half(f.T1SZ.get(d0), f.TG1.get(d0), ent.TG1_4K, ttb1, ips_bits)
        ttb0 = 0 if epd0 else _table_base(ttb0, va0)
        ttb1 = 0 if epd1 else _table_base(ttb1, va1)
        tbi0, tbi1 = bool(f.TBI0.get(d0)), bool(f.TBI1.get(d0))
        had0, had1 = bool(ent.CdDw1.HAD0.get(d1)), bool(ent.CdDw2.HAD1.get(d2))
        above_ips = OA_MASK & ~((1 << ips_bits) - 1)
        return CdInfo(
            asid=f.ASID.get(d0),
            ttb0=ttb0,
            va0=va0,
            epd0=epd0,
            ttb1=ttb1,
            va1=va1,
            epd1=epd1,
            ips=ips_bits,
            tbi0=tbi0,
            tbi1=tbi1,
            affd=bool(f.AFFD.get(d0)),
            ha=bool(f.HA.get(d0)),
            pan=bool(f.PAN.get(d0)),
            had0=had0,
            had1=had1,
            r=bool(f.R.get(d0)),
            a=bool(f.A.get(d0)),
            hd=bool(f.HD.get(d0)),
            l1=l1,
            slots=slots,
            half0=None if epd0 else _half_params(ttb0, va0, tbi0, had0, False, above_ips),
            half1=None if epd1 else _half_params(ttb1, va1, tbi1, had1, True, above_ips),
            leaf_bad=_OA_HIGH_LEAF | above_ips,
        )

    @staticmethod
    def _half(tsz: int, tg: int, tg_4k: int, ttb: int, ips_bits: int) -> int:
        """One TTBx half: 4 KiB granule only (IDR5.GRAN4K), TxSZ in 16..39 (IDR3.STT=0),
        table base inside the effective IPS. Returns the VA width."""
        if tg != tg_4k or not 16 <= tsz <= 39 or ttb >> ips_bits:
            raise SmmuFault(Evt.C_BAD_CD)
        return 64 - tsz

    # -- stage-1 walk (VMSAv8-64, 4 KiB granule) -------------------------------------------
    def walk(
        self,
        cd: CdInfo,
        va: int,
        update: bool,
        write: bool = False,
        s2: S2Info | None = None,
    ) -> Leaf:
        """Translate ``va`` through the CD's tables (facts A10): :meth:`walk_raw` as a
        :class:`Leaf`."""
        e = self.walk_raw(cd, va, update, write, s2, True, False)
        root = cd.ttb1 if (va >> 55) & 1 else cd.ttb0
        return Leaf(
            e.phys, e.shift, e.perms, bool(e.tag), root, e.pte_addr, cast(list[int], e.slots)
        )

    def walk_raw(
        self,
        cd: CdInfo,
        va: int,
        update: bool,
        write: bool,
        s2: S2Info | None,
        tag: Hashable,
        gtag: Hashable,
    ) -> TlbEntry:
        """Translate ``va`` through the CD's tables (facts A10): the TLB entry a fill
        caches, tagged ``tag`` for a leaf with nG=1 and ``gtag`` for a global one,
        its source the TTBx root walked (the CD's own value), built of ints only.

        Region selection: VA[55]=0 uses TTB0, 1 uses TTB1; the bits above the region's
        size (above bit 55 too unless TBIx) must be all 0 / all 1, else F_TRANSLATION,
        as is a walk of a half disabled by EPDx. ``update`` sets AF when CD.HA and, for
        a ``write`` to a read-only DBM leaf under CD.HD, clears AP[2]. With ``s2`` the
        table addresses are IPAs read through stage 2 (the output stays an IPA).

        Per level: the descriptor is read, and a table descriptor passes one mask test
        (valid, table, no address bit at or above the IPS or in 51:48); the APTable
        bits are OR-ed up and applied once at the leaf (they only ever remove rights).
        The common case, one page walked through four clean levels to an accessed
        leaf, is read straight by :meth:`hw.smmuv3.slow_path.S1MissPath.fill`
        (:func:`straight`) instead.
        """
        half = cd.half1 if (va >> 55) & 1 else cd.half0
        if half is None:
            raise SmmuFault(Evt.F_TRANSLATION)
        tg, uppers, low, above, expect, check, had, root = half
        if va & above != expect:
            raise SmmuFault(Evt.F_TRANSLATION)
        ix = va & low  # the index bits only (the start level's index may be narrower)
        shift, g, pte, slots, apt = self._levels(tg, uppers, ix, check, s2)
        pte_addr = g << 3
        if pte & 3 != 3:
            if not pte & 1:
                raise SmmuFault(Evt.F_TRANSLATION)
            if shift == 12 or shift == 39:  # no block at level 0, no "block" at level 3
                raise SmmuFault(Evt.F_TRANSLATION)
        elif shift != 12:  # a table descriptor failing the address checks
            raise SmmuFault(Evt.F_ADDR_SIZE)
        if pte & cd.leaf_bad:
            raise SmmuFault(Evt.F_ADDR_SIZE)
        perms = PERM_WUR
        if apt & _APT and not had:
            perms = table_rights(apt)
            checks = True
        else:  # accessed, writable, EL0 and all the table left: nothing to check
            checks = pte & _AF_AP != _AF_AP1
        if checks:
            if not pte & _AF:
                if cd.ha:
                    if update:
                        self.set_bits(pte_addr, _AF)
                elif not cd.affd:
                    raise SmmuFault(Evt.F_ACCESS)
            if pte & AP2:
                if cd.hd and pte & DBM and perms & PERM_W:
                    if write and update:
                        self._clear_bits(pte_addr, AP2)
                    else:
                        perms ^= PERM_W | PERM_DBM
                else:
                    perms &= ~PERM_W
            if not pte & _AP1:
                perms &= ~PERM_U
            if not perms & PERM_U:
                perms |= PERM_NU
        return TlbEntry(
            tag if pte & NG else gtag,
            va >> shift,
            shift,
            (pte & OA_MASK) >> shift << shift,
            perms,
            root,
            pte_addr,
            slots,
        )

    def upper_rights(self, cd: CdInfo, va: int, slots: Sequence[int]) -> int:
        """The rights the table descriptors at granules ``slots`` (those above the leaf
        of a stage-1 walk of ``va``, read again) leave: APTable, unless HADx."""
        half = cd.half1 if (va >> 55) & 1 else cd.half0
        if half is None or half[6]:
            return PERM_WUR
        apt = 0
        for g in slots:
            apt |= self.mem.read_u64(g << 3)
        return table_rights(apt) if apt & _APT else PERM_WUR

    def _levels(
        self, tg: int, uppers: tuple[int, ...], va: int, check: int, s2: S2Info | None
    ) -> tuple[int, int, int, list[int], int]:
        """The levels of a stage-1 walk from table granule ``tg``: ``(shift of the
        level it stopped at, descriptor granule, descriptor, granules read, OR of the
        table descriptors passed)``. A level stops the walk unless its descriptor is
        a table passing the ``check`` mask; level 3 always does. With ``s2`` each
        descriptor address is an IPA read through stage 2."""
        qwords, ram_g = self.qwords, self.ram_g
        slots: list[int] = []
        g = shift = apt = pte = 0
        try:
            for shift in uppers:  # the levels a table descriptor may come from
                g = tg + ((va >> shift) & 0x1FF)
                if s2 is not None:
                    g = self._s2_fetch(s2, g << 3, slots, ent.EVT_CLASS_TT) >> 3
                slots.append(g)
                pte = qwords[g] if g <= ram_g else self.mem.read_u64(g << 3)
                if pte & check != 3:
                    return shift, g, pte, slots, apt
                apt |= pte
                tg = (pte & OA_MASK) >> 3
            g = tg + ((va >> 12) & 0x1FF)
            if s2 is not None:
                g = self._s2_fetch(s2, g << 3, slots, ent.EVT_CLASS_TT) >> 3
            slots.append(g)
            pte = qwords[g] if g <= ram_g else self.mem.read_u64(g << 3)
        except BusError:
            raise SmmuFault(Evt.F_WALK_EABT, g << 3) from None
        return 12, g, pte, slots, apt

    def leaf_run(
        self, cd: CdInfo, pte_addr: int, count: int, upper: int, need: int
    ) -> list[tuple[int, int, bool]]:
        """The 4 KiB leaves of the ``count`` descriptors from ``pte_addr`` in one
        last-level table, read at once, under table descriptors leaving ``upper``
        rights: ``(output frame, rights, nG)`` of each, exactly as :meth:`walk_raw`
        decodes the descriptor (reading, no update). The run ends before the first
        descriptor :meth:`walk_raw` would fault on, update (AF=0) or decode with
        rights lacking ``need``."""
        try:
            raw = self.mem.read_u64s(pte_addr, count)
        except BusError:
            return []
        out: list[tuple[int, int, bool]] = []
        bad = cd.leaf_bad
        hd = cd.hd
        for pte in raw:
            if pte & 3 != 3 or pte & bad or not pte & _AF:
                break
            perms = upper
            if pte & AP2:
                if hd and pte & DBM and perms & PERM_W:
                    perms ^= PERM_W | PERM_DBM
                else:
                    perms &= ~PERM_W
            if not pte & _AP1:
                perms &= ~PERM_U
            if not perms & PERM_U:
                perms |= PERM_NU
            if perms & need != need:
                break
            out.append((pte & OA_MASK, perms, bool(pte & NG)))
        return out


def table_rights(apt: int) -> int:
    """The rights table descriptors leave, from their APTable bits OR-ed (AP[2]
    removes writes, AP[1] EL0 access)."""
    upper = PERM_U | PERM_R if apt & _APT_RO else PERM_WUR
    return upper & ~PERM_U if apt & _APT_NO_EL0 else upper


def _half_params(
    root: int, va_bits: int, tbi: bool, had: bool, upper: bool, above_ips: int
) -> Half:
    """The walk parameters of one enabled TTBx half (see :data:`Half`)."""
    top = 56 if tbi else 64
    above = ((1 << top) - 1) & ~((1 << va_bits) - 1)
    uppers = _UPPERS[start_level(va_bits)]
    check = 3 | _OA_HIGH | above_ips
    low = (1 << va_bits) - 1
    return root >> 3, uppers, low, above, above if upper else 0, check, had, root


Straight = tuple[int, int, int, int, int, int, int]
"""A 4-level TTBx half as a straight read takes it (:func:`straight`): (level-0 table
as a granule, the mask of its index taken from the page number shifted by 27 (a small
int, so the AND needs no multi-digit arithmetic), the VA bits checked above the half's
size, the value they must have, the bits each table descriptor passed is tested on
(against :data:`TABLE_OK`), the leaf bits tested against :data:`LEAF_OK`, the TTBx
root)."""


def straight(half: Half | None, leaf_bad: int) -> Straight | None:
    """The parameters of a 4-level ``half`` for a straight read of its four levels
    (None: disabled, or fewer levels). A walk passes where :meth:`Walker.walk_raw`
    checks nothing more: the three table descriptors are valid tables, none with an
    address bit at or above the IPS or in 51:48 nor an ignored bit in 11:3 (the next
    table's address is then the descriptor shifted, unmasked; each tests as
    :data:`TABLE_OK` under one mask); the leaf is a valid page descriptor, accessed,
    EL0-accessible, with no Address Size bit (``leaf_bad``). A table descriptor with
    a bit above 51 (APTable, NSTable, XN/PXNTable, an ignored one) is left to the
    general walk by its unmasked address, outside RAM (APTable bits are then applied
    there, unless HADx)."""
    if half is None or half[1] is not _FROM_LEVEL0:
        return None
    tg, _, low, above, expect, check, _had, root = half
    table_test = check | _TABLE_IGNORED_LOW  # the bits of check above 1:0 must be clear
    return tg, low >> 39, above, expect, table_test, leaf_bad | LEAF_OK, root


def _table_base(ttb: int, va_bits: int) -> int:
    """The start-level table is aligned to its size (at least 64 bytes)."""
    entries = 1 << (va_bits - (39 - 9 * start_level(va_bits)))
    return ttb & ~(max(64, entries * 8) - 1)


def need_bits(write: bool, priv: bool, pan: bool) -> int:
    """The rights a transaction needs (AP[2:1] against RnW and PnU, with CD.PAN; facts
    A10): W to write; EL0 access unprivileged; under PAN a privileged access must not
    touch an EL0-accessible page."""
    need = PERM_W | PERM_R if write else PERM_R
    if not priv:
        return need | PERM_U
    return need | PERM_NU if pan else need


def permission_ok(perms: int, write: bool, priv: bool, pan: bool) -> bool:
    need = need_bits(write, priv, pan)
    return perms & need == need
