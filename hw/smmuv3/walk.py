"""Structure walks: stream table -> STE -> CD table -> CD -> LPAE stage-1 tables.

The lookup order and validity rules are IHI 0070 §3.3 and chapter 5 (STE §5.2, L1CD
§5.3, CD §5.4) as summarised in facts A5-A10, checked against the spec text where the
facts file marked them unverified (see :mod:`hw.smmuv3.unit`). The stage-1 walk is
the VMSAv8-64 4 KiB-granule walk that Linux ``io-pgtable-arm.c`` builds tables for
(``__arm_lpae_map``/``arm_lpae_iova_to_phys``), with the SMMU's CD controls (T0SZ,
EPD0/1, TBI, IPS, AFFD, HA, HAD, PAN) applied.

Walks raise :class:`SmmuFault` carrying the event id; they never return a partial
result. Every walk reports the 8-byte granules (``address >> 3``) it read, for the
stale-use detector; the Access-flag update goes through :attr:`Walker.set_bits` so the
model's own write does not make its cached entries suspect.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from attrs import field, frozen

from hw.memory import BusError, Memory
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.config import OAS_BITS, Smmuv3Config
from hw.smmuv3.entries import Evt
from hw.translation import ram_limits

PERM_W = 1
PERM_U = 2
PERM_NU = 4
"""Not EL0-accessible (AP[1]=0): set exactly when PERM_U is not, so a privileged
access under CD.PAN can be checked like every right, as a bit that must be set."""

_OA_MASK = ent.LpaeLeaf.OA.mask
_OA_HIGH = 0xF << 48  # descriptor bits 51:48: nonzero is an Address Size fault (48-bit OA)
_AP1 = ent.LpaeLeaf.AP1.mask
_AP2 = ent.LpaeLeaf.AP2.mask
_AF = ent.LpaeLeaf.AF.mask
_NG = ent.LpaeLeaf.NG.mask
_U64 = struct.Struct("<Q").unpack_from
_APT_NO_EL0 = 1 << 61
_APT_RO = 1 << 62


class SmmuFault(Exception):
    """Raised inside a walk: the event id, and the fetch address for fetch aborts."""

    __slots__ = ("evt", "fetch")

    def __init__(self, evt: Evt, fetch: int = 0) -> None:
        super().__init__(evt)
        self.evt = evt
        self.fetch = fetch


@frozen
class StreamInfo:
    """A decoded, valid STE (abort, bypass or stage-1 CD table)."""

    config: int
    s1fmt: int = 0
    ctxptr: int = 0
    s1cdmax: int = 0
    s1dss: int = 0
    vmid: int = 0
    l1: int = -1
    """The L1STD the STE was found through (-1: linear stream table)."""
    slots: frozenset[int] = field(default=frozenset(), eq=False)
    """8-byte granules read (L1STD and the STE words used)."""


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
    l1: int = -1
    """The L1CD the CD was found through (-1: linear CD table or single CD)."""
    slots: frozenset[int] = field(default=frozenset(), eq=False)
    """8-byte granules read (L1CD and the CD words used)."""


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


def start_level(va_bits: int) -> int:
    """4 KiB granule: the level whose table resolves the top VA bits (facts A10)."""
    return 4 - (va_bits - 12 + 8) // 9


class Walker:
    """Reads structures from RAM for one SMMU; stateless apart from configuration."""

    def __init__(self, memory: Memory, cfg: Smmuv3Config) -> None:
        self.mem = memory
        self.cfg = cfg
        self.oas_bits = cfg.oas_bits
        self.ram8 = ram_limits(memory)[0] - 8
        """A descriptor at or below this address is RAM: :meth:`walk` reads it in line
        (one ``unpack_from``, no call); above it :meth:`Memory.read_u64` decides."""
        self.set_bits: Callable[[int, int], None] = self._set_bits

    def _set_bits(self, addr: int, bits: int) -> None:
        self.mem.write_u64(addr, self.mem.read_u64(addr) | bits)

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
        return self._decode_ste(dw0, dw1, dw2, l1, frozenset(slots))

    def _decode_ste(
        self, dw0: int, dw1: int, dw2: int, l1: int, slots: frozenset[int]
    ) -> StreamInfo:
        f0, f1 = ent.SteDw0, ent.SteDw1
        cfg = self.cfg
        if not dw0 & 1:
            raise SmmuFault(Evt.C_BAD_STE)
        config = f0.CONFIG.get(dw0)
        if not config & 0b100:
            return StreamInfo(ent.STE_CFG_ABORT, l1=l1, slots=slots)
        if config & 0b010:
            raise SmmuFault(Evt.C_BAD_STE)  # stage 2 is not implemented (IDR0.S2P=0)
        vmid = ent.SteDw2.S2VMID.get(dw2)
        if not cfg.vmid16 and vmid >> 8:
            raise SmmuFault(Evt.C_BAD_STE)
        if config == ent.STE_CFG_BYPASS:
            return StreamInfo(ent.STE_CFG_BYPASS, vmid=vmid, l1=l1, slots=slots)
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
            ent.STE_CFG_S1,
            s1fmt=fmt if cdmax else ent.S1FMT_LINEAR,
            ctxptr=ctxptr,
            s1cdmax=cdmax,
            s1dss=dss if cdmax else 0,
            vmid=vmid,
            l1=l1,
            slots=slots,
        )

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
            slots.add(l1_addr >> 3)
            l1 = self._q(l1_addr, Evt.F_CD_FETCH)
            if not l1 & 1:
                raise SmmuFault(Evt.C_BAD_SUBSTREAMID)
            l2 = l1 & ent.L1Cd.L2PTR.mask & ~((64 << leaf_bits) - 1)
            addr = l2 + (index & ((1 << leaf_bits) - 1)) * ent.CD_SIZE
        try:
            raw = self.mem.read(addr, 24)
        except BusError:
            raise SmmuFault(Evt.F_CD_FETCH, addr) from None
        g = addr >> 3
        slots.update((g, g + 1, g + 2))
        q = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, 24, 8)]
        return self._decode_cd(q[0], q[1], q[2], l1, frozenset(slots))

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
            or f.HD.get(d0)
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
        return CdInfo(
            asid=f.ASID.get(d0),
            ttb0=0 if epd0 else _table_base(ttb0, va0),
            va0=va0,
            epd0=epd0,
            ttb1=0 if epd1 else _table_base(ttb1, va1),
            va1=va1,
            epd1=epd1,
            ips=ips_bits,
            tbi0=bool(f.TBI0.get(d0)),
            tbi1=bool(f.TBI1.get(d0)),
            affd=bool(f.AFFD.get(d0)),
            ha=bool(f.HA.get(d0)),
            pan=bool(f.PAN.get(d0)),
            had0=bool(ent.CdDw1.HAD0.get(d1)),
            had1=bool(ent.CdDw2.HAD1.get(d2)),
            r=bool(f.R.get(d0)),
            a=bool(f.A.get(d0)),
            l1=l1,
            slots=slots,
        )

    @staticmethod
    def _half(tsz: int, tg: int, tg_4k: int, ttb: int, ips_bits: int) -> int:
        """One TTBx half: 4 KiB granule only (IDR5.GRAN4K), TxSZ in 16..39 (IDR3.STT=0),
        table base inside the effective IPS. Returns the VA width."""
        if tg != tg_4k or not 16 <= tsz <= 39 or ttb >> ips_bits:
            raise SmmuFault(Evt.C_BAD_CD)
        return 64 - tsz

    # -- stage-1 walk (VMSAv8-64, 4 KiB granule) -------------------------------------------
    def walk(self, cd: CdInfo, va: int, update: bool) -> Leaf:
        """Translate ``va`` through the CD's tables (facts A10).

        Region selection: VA[55]=0 uses TTB0, 1 uses TTB1; the bits above the region's
        size (above bit 55 too unless TBIx) must be all 0 / all 1, else F_TRANSLATION,
        as is a walk of a half disabled by EPDx. ``update`` sets AF when CD.HA.
        """
        upper = (va >> 55) & 1
        if upper:
            va_bits, root, epd, tbi, had = cd.va1, cd.ttb1, cd.epd1, cd.tbi1, cd.had1
        else:
            va_bits, root, epd, tbi, had = cd.va0, cd.ttb0, cd.epd0, cd.tbi0, cd.had0
        if epd:
            raise SmmuFault(Evt.F_TRANSLATION)
        top = 56 if tbi else 64
        high = (va & ((1 << top) - 1)) >> va_bits
        if high != (((1 << (top - va_bits)) - 1) if upper else 0):
            raise SmmuFault(Evt.F_TRANSLATION)
        level = start_level(va_bits)
        table = root
        perms = PERM_W | PERM_U
        slots: list[int] = []
        ips = cd.ips
        read = self.mem.read_u64
        data, ram8 = self.mem.data, self.ram8
        shift = 39 - 9 * level
        mask = (1 << min(9, va_bits - shift)) - 1
        pte_addr = table
        try:
            while True:
                pte_addr = table + ((va >> shift) & mask) * 8
                slots.append(pte_addr >> 3)
                # Memory.read_u64 in line for RAM without holes (one call less per level).
                pte = _U64(data, pte_addr)[0] if pte_addr <= ram8 else read(pte_addr)
                if not pte & 1:
                    raise SmmuFault(Evt.F_TRANSLATION)
                if pte & 2:
                    if level < 3:
                        if pte & _OA_HIGH:
                            raise SmmuFault(Evt.F_ADDR_SIZE)
                        table = pte & _OA_MASK
                        if table >> ips:
                            raise SmmuFault(Evt.F_ADDR_SIZE)
                        if not had:
                            if pte & _APT_RO:
                                perms &= ~PERM_W
                            if pte & _APT_NO_EL0:
                                perms &= ~PERM_U
                        level += 1
                        shift -= 9
                        mask = 0x1FF
                        continue
                elif level == 3 or level == 0:
                    raise SmmuFault(Evt.F_TRANSLATION)
                if pte & _OA_HIGH:
                    raise SmmuFault(Evt.F_ADDR_SIZE)
                break
        except BusError:
            raise SmmuFault(Evt.F_WALK_EABT, pte_addr) from None
        phys = pte & _OA_MASK & ~((1 << shift) - 1)
        if phys >> ips:
            raise SmmuFault(Evt.F_ADDR_SIZE)
        if not pte & _AF:
            if cd.ha:
                if update:
                    self.set_bits(pte_addr, _AF)
            elif not cd.affd:
                raise SmmuFault(Evt.F_ACCESS)
        if pte & _AP2:
            perms &= ~PERM_W
        if not pte & _AP1:
            perms &= ~PERM_U
        if not perms & PERM_U:
            perms |= PERM_NU
        return Leaf(phys, shift, perms, bool(pte & _NG), root, pte_addr, slots)


def _table_base(ttb: int, va_bits: int) -> int:
    """The start-level table is aligned to its size (at least 64 bytes)."""
    entries = 1 << (va_bits - (39 - 9 * start_level(va_bits)))
    return ttb & ~(max(64, entries * 8) - 1)


def need_bits(write: bool, priv: bool, pan: bool) -> int:
    """The rights a transaction needs (AP[2:1] against RnW and PnU, with CD.PAN; facts
    A10): W to write; EL0 access unprivileged; under PAN a privileged access must not
    touch an EL0-accessible page."""
    need = PERM_W if write else 0
    if not priv:
        return need | PERM_U
    return need | PERM_NU if pan else need


def permission_ok(perms: int, write: bool, priv: bool, pan: bool) -> bool:
    need = need_bits(write, priv, pan)
    return perms & need == need
