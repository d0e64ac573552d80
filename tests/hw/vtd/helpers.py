"""Shared test helpers: a machine with one VT-d unit, a page allocator, table builders
that write root/context/PASID entries and page tables into RAM, and register-level
helpers for GCMD and the invalidation queue. Tests use only these, RAM and MMIO."""

from __future__ import annotations

from typing import Any

from hw.machine import Machine, build_machine
from hw.vtd import VtdUnit
from hw.vtd import entries as ent
from hw.vtd import registers as vr

RAM = 32 << 20
BASE = 0xFED9_0000
RID = 0x0010  # 00:02.0
RID2 = 0x0018  # 00:03.0


def make(config: dict[str, Any] | None = None, ram: int = RAM) -> tuple[Machine, VtdUnit]:
    m = build_machine(
        {"ram": ram, "iommus": [{"kind": "vtd", "name": "dmar0", "config": config or {}}]}
    )
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    return m, unit


class Pages:
    """Bump allocator of zeroed 4 KiB pages above 1 MiB."""

    def __init__(self, m: Machine, start: int = 1 << 20) -> None:
        self.m = m
        self.next = start

    def alloc(self, n: int = 1, align: int = 4096) -> int:
        self.next = (self.next + align - 1) // align * align
        addr = self.next
        self.next += 4096 * n
        self.m.memory.fill(addr, 4096 * n)
        return addr


def reg_write(m: Machine, off: int, value: int, size: int = 4) -> None:
    m.mmio_write(BASE + off, size, value)


def reg_read(m: Machine, off: int, size: int = 4) -> int:
    return m.mmio_read(BASE + off, size)


def gcmd(m: Machine, unit: VtdUnit, bit: int) -> None:
    """Linux-style: write the shadow of the level bits plus ``bit``, then let it settle."""
    level = unit.regs["GSTS"] & (vr.GSTS.TES.mask | vr.GSTS.QIES.mask)
    reg_write(m, vr.GCMD_OFF, level | bit)
    m.clock.advance(1000)


def set_root(m: Machine, unit: VtdUnit, root: int, scalable: bool) -> None:
    reg_write(m, vr.RTADDR_OFF, root | (1 << 10 if scalable else 0), 8)
    gcmd(m, unit, vr.GCMD.SRTP.mask)


def enable_te(m: Machine, unit: VtdUnit) -> None:
    gcmd(m, unit, vr.GCMD.TE.mask)


class PageTable:
    """Second-stage (``fl=False``) or first-stage page table built in RAM."""

    def __init__(self, m: Machine, pages: Pages, levels: int = 4, fl: bool = False) -> None:
        self.m = m
        self.pages = pages
        self.levels = levels
        self.fl = fl
        self.root = pages.alloc()

    def _nonleaf(self, table: int) -> int:
        if self.fl:
            return table | 0x7  # P, R/W, U/S
        return table | 0x3  # R, W

    def entry_addr(self, iova: int, level: int) -> int:
        """Address of the entry at ``level`` for ``iova``, creating tables above it."""
        table = self.root
        mem = self.m.memory
        for lvl in range(self.levels, level, -1):
            shift = 12 + 9 * (lvl - 1)
            addr = table + ((iova >> shift) & 0x1FF) * 8
            pte = mem.read_u64(addr)
            if not pte & (1 if self.fl else 3):
                new = self.pages.alloc()
                mem.write_u64(addr, self._nonleaf(new))
                table = new
            else:
                table = pte & ((1 << 52) - 1) & ~0xFFF
        shift = 12 + 9 * (level - 1)
        return table + ((iova >> shift) & 0x1FF) * 8

    def leaf(
        self,
        phys: int,
        level: int = 1,
        r: bool = True,
        w: bool = True,
        u: bool = True,
        xd: bool = False,
        x: bool = False,
    ) -> int:
        ps = 1 << 7 if level > 1 else 0
        if self.fl:
            return phys | 1 | (2 if w else 0) | (4 if u else 0) | ps | (1 << 63 if xd else 0)
        return phys | (1 if r else 0) | (2 if w else 0) | (4 if x else 0) | ps

    def map(self, iova: int, phys: int, level: int = 1, **perm: bool) -> int:
        addr = self.entry_addr(iova, level)
        self.m.memory.write_u64(addr, self.leaf(phys, level, **perm))
        return addr

    def unmap(self, iova: int, level: int = 1) -> None:
        self.m.memory.write_u64(self.entry_addr(iova, level), 0)


class Tables:
    """Root and context tables for one unit (legacy or scalable)."""

    def __init__(self, m: Machine, pages: Pages, scalable: bool) -> None:
        self.m = m
        self.pages = pages
        self.scalable = scalable
        self.root = pages.alloc()
        self.ctx_tables: dict[tuple[int, int], int] = {}
        self.pasid_dirs: dict[int, int] = {}
        self.pasid_tables: dict[tuple[int, int], int] = {}

    def ctx_addr(self, rid: int) -> int:
        bus, devfn = rid >> 8, rid & 0xFF
        half = devfn >> 7 if self.scalable else 0
        table = self.ctx_tables.get((bus, half))
        if table is None:
            table = self.ctx_tables[bus, half] = self.pages.alloc()
            self.m.memory.write_u64(self.root + bus * 16 + 8 * half, table | 1)
        if self.scalable:
            return table + (devfn & 0x7F) * 32
        return table + devfn * 16

    def legacy_ctx(
        self, rid: int, slptptr: int, did: int = 1, aw: int = 2, tt: int = 0, fpd: bool = False
    ) -> int:
        addr = self.ctx_addr(rid)
        lo = ent.LegacyCtxLo.encode(P=1, FPD=int(fpd), TT=tt, SLPTPTR=slptptr >> 12)
        self.m.memory.write_u64(addr + 8, ent.LegacyCtxHi.encode(AW=aw, DID=did))
        self.m.memory.write_u64(addr, lo)
        return addr

    def sm_ctx(self, rid: int, pdts: int = 0, paside: bool = True, fpd: bool = False) -> int:
        addr = self.ctx_addr(rid)
        d = self.pasid_dirs.get(rid)
        if d is None:
            d = self.pasid_dirs[rid] = self.pages.alloc(max(1, (8 << (pdts + 7)) // 4096))
        lo = ent.SmCtxLo.encode(
            P=1, FPD=int(fpd), PASIDE=int(paside), PDTS=pdts, PASIDDIRPTR=d >> 12
        )
        self.m.memory.write_u64(addr, lo)
        return addr

    def pasid_addr(self, rid: int, pasid: int) -> int:
        d = self.pasid_dirs[rid]
        t = self.pasid_tables.get((rid, pasid >> 6))
        if t is None:
            t = self.pasid_tables[rid, pasid >> 6] = self.pages.alloc()
            self.m.memory.write_u64(d + 8 * (pasid >> 6), t | 1)
        return t + 64 * (pasid & 0x3F)

    def pasid_entry(
        self,
        rid: int,
        pasid: int,
        pgtt: int,
        did: int,
        pt: PageTable | None = None,
        aw: int = 2,
        sre: bool = False,
        wpe: bool = False,
        fpd: bool = False,
        extra: tuple[int, ...] = (0,) * 8,
    ) -> int:
        addr = self.pasid_addr(rid, pasid)
        root = pt.root if pt is not None else 0
        fl = pgtt == ent.PGTT_FL
        qw0 = ent.PasidQw0.encode(
            P=1, FPD=int(fpd), AW=aw, PGTT=pgtt, SSPTPTR=0 if fl else root >> 12
        )
        qw1 = ent.PasidQw1.encode(DID=did)
        qw2 = ent.PasidQw2.encode(SRE=int(sre), WPE=int(wpe), FSPTPTR=root >> 12 if fl else 0)
        words = [qw0, qw1, qw2, 0, 0, 0, 0, 0]
        data = b"".join((w | x).to_bytes(8, "little") for w, x in zip(words, extra, strict=True))
        self.m.memory.write(addr, data)
        return addr


def legacy_setup(
    config: dict[str, Any] | None = None,
) -> tuple[Machine, VtdUnit, Pages, Tables, PageTable]:
    """A legacy-mode unit with RID mapped through a 4-level second-stage table, TE on."""
    cfg = {"smts": False, "pasid": False, **(config or {})}
    m, unit = make(cfg)
    pages = Pages(m)
    t = Tables(m, pages, scalable=False)
    pt = PageTable(m, pages, 4)
    t.legacy_ctx(RID, pt.root, did=1)
    set_root(m, unit, t.root, scalable=False)
    enable_te(m, unit)
    return m, unit, pages, t, pt


def sm_setup(
    config: dict[str, Any] | None = None,
) -> tuple[Machine, VtdUnit, Pages, Tables]:
    """A scalable-mode unit with an SM context entry for RID (no PASID entries), TE on."""
    m, unit = make(config)
    pages = Pages(m)
    t = Tables(m, pages, scalable=True)
    t.sm_ctx(RID)
    set_root(m, unit, t.root, scalable=True)
    enable_te(m, unit)
    return m, unit, pages, t


class Queue:
    """Software side of the invalidation queue, like Linux ``qi_submit_sync``."""

    def __init__(self, m: Machine, unit: VtdUnit, pages: Pages, dw: int = 1, qs: int = 0) -> None:
        self.m = m
        self.unit = unit
        self.dw = dw
        self.stride = 16 << dw
        self.size = 4096 << qs
        self.base = pages.alloc(1 << qs)
        self.status = pages.alloc()
        self.tail = 0
        reg_write(m, vr.IQT_OFF, 0, 8)
        reg_write(m, vr.IQA_OFF, self.base | (dw << 11) | qs, 8)
        gcmd(m, unit, vr.GCMD.QIE.mask)

    def put(self, qw0: int, qw1: int = 0, qw2: int = 0, qw3: int = 0) -> int:
        at = self.tail
        words = (qw0, qw1, qw2, qw3)[: self.stride // 8]
        self.m.memory.write(self.base + at, b"".join(w.to_bytes(8, "little") for w in words))
        self.tail = (self.tail + self.stride) % self.size
        return at

    def wait_desc(self, data: int = 2, iflag: bool = False) -> tuple[int, int]:
        qw0 = ent.QiWaitQw0.encode(TYPE=ent.QI_WAIT, SW=1, IF=int(iflag), STDATA=data)
        return qw0, self.status

    def submit(self, *descs: tuple[int, int]) -> None:
        """Queue ``descs`` plus a wait descriptor, ring the tail, run the clock."""
        self.m.memory.write_u32(self.status, 0)
        for d in descs:
            self.put(*d)
        self.put(*self.wait_desc())
        reg_write(self.m, vr.IQT_OFF, self.tail, 8)
        self.m.clock.advance(10_000)

    def done(self) -> bool:
        return self.m.memory.read_u32(self.status) == 2


def iotlb_dsi(did: int) -> tuple[int, int]:
    return ent.QiIotlbQw0.encode(TYPE=ent.QI_IOTLB, G=2, DID=did), 0


def iotlb_global() -> tuple[int, int]:
    return ent.QiIotlbQw0.encode(TYPE=ent.QI_IOTLB, G=1), 0


def iotlb_psi(did: int, addr: int, am: int = 0) -> tuple[int, int]:
    return (
        ent.QiIotlbQw0.encode(TYPE=ent.QI_IOTLB, G=3, DID=did),
        ent.QiAddrQw1.encode(AM=am, ADDR=addr >> 12),
    )


def piotlb(did: int, pasid: int, addr: int | None = None, am: int = 0) -> tuple[int, int]:
    g = 2 if addr is None else 3
    qw1 = 0 if addr is None else ent.QiAddrQw1.encode(AM=am, ADDR=addr >> 12)
    return ent.QiPiotlbQw0.encode(TYPE=ent.QI_PIOTLB, G=g, DID=did, PASID=pasid), qw1


def pc_inval(g: int, did: int = 0, pasid: int = 0) -> tuple[int, int]:
    return ent.QiPcQw0.encode(TYPE=ent.QI_PC, G=g, DID=did, PASID=pasid), 0


def cc_inval(g: int, did: int = 0, sid: int = 0, fm: int = 0) -> tuple[int, int]:
    return ent.QiCcQw0.encode(TYPE=ent.QI_CC, G=g, DID=did, SID=sid, FM=fm), 0
