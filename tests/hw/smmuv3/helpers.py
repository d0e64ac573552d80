"""Shared test helpers: a machine with one SMMUv3, a page allocator, builders that
write stream tables, STEs, CD tables, CDs and LPAE stage-1 tables into RAM, command
encoders, and a software side of the command and event queues doing what Linux
``arm_smmu_device_reset``/``arm_smmu_cmdq_issue_cmdlist``/``arm_smmu_evtq_thread``
do. Tests use only these, RAM and MMIO."""

from __future__ import annotations

from typing import Any

from hw.bus import DmaResult
from hw.machine import Machine, build_machine
from hw.smmuv3 import Smmuv3Unit
from hw.smmuv3 import entries as ent
from hw.smmuv3 import registers as sr
from hw.smmuv3.entries import Op

RAM = 32 << 20
BASE = 0xFED9_0000
RID = 0x0010  # 00:02.0
RID2 = 0x0018  # 00:03.0
MSI_ADDR = 0xFEE0_0000


def make(config: dict[str, Any] | None = None, ram: int = RAM) -> tuple[Machine, Smmuv3Unit]:
    m = build_machine(
        {"ram": ram, "iommus": [{"kind": "smmuv3", "name": "smmu0", "config": config or {}}]}
    )
    unit = m.iommus["smmu0"]
    assert isinstance(unit, Smmuv3Unit)
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


def words(*qs: int) -> bytes:
    return b"".join((q & ((1 << 64) - 1)).to_bytes(8, "little") for q in qs)


# -- structure encoders -------------------------------------------------------------------
def ste_abort() -> tuple[int, int, int]:
    return ent.SteDw0.encode(V=1, CONFIG=ent.STE_CFG_ABORT), 0, 0


def ste_bypass() -> tuple[int, int, int]:
    return ent.SteDw0.encode(V=1, CONFIG=ent.STE_CFG_BYPASS), 0, 0


def ste_s1(
    ctxptr: int, cdmax: int = 0, fmt: int = 0, dss: int = ent.S1DSS_SSID0, vmid: int = 0
) -> tuple[int, int, int]:
    """``arm_smmu_make_cdtable_ste``: Config=S1, CD table, S1DSS, WBRA/ISH fetches."""
    dw0 = ent.SteDw0.encode(
        V=1, CONFIG=ent.STE_CFG_S1, S1FMT=fmt, S1CTXPTR=ctxptr >> 6, S1CDMAX=cdmax
    )
    dw1 = ent.SteDw1.encode(S1DSS=dss, S1CIR=1, S1COR=1, S1CSH=3)
    return dw0, dw1, ent.SteDw2.encode(S2VMID=vmid)


def cd_words(
    ttb0: int, asid: int, t0sz: int = 16, ips: int = 5, **fields: int
) -> tuple[int, int, int, int]:
    """``arm_smmu_make_s1_cd``: 4K granule, EPD1, AA64, R, A, ASET, WBWA/ISH walks, the
    io-pgtable MAIR (dw3)."""
    base: dict[str, int] = dict(
        T0SZ=t0sz, TG0=0, IR0=1, OR0=1, SH0=3, EPD1=1, V=1, IPS=ips, AA64=1, R=1, A=1, ASET=1
    )
    base.update(fields)
    base["ASID"] = asid
    dw0 = ent.CdDw0.encode(**base)
    dw1 = ent.CdDw1.encode(TTB0=ttb0 >> 4)
    return dw0, dw1, 0, 0x00000000_F404FF44


S2_IA_BITS = 39
"""Stage-2 input size of the helpers' stage-2 tables: S2T0SZ 25, S2SL0 1 (start at
level 1 with one 4 KiB table, as ``arm_lpae_alloc_pgtable_s2`` picks for a 39-bit IPA)."""


def ste_s2(
    s2ttb: int,
    vmid: int,
    config: int = ent.STE_CFG_S2,
    dw0: int = 0,
    dw1: int = 0,
    **fields: int,
) -> tuple[int, int, int, int]:
    """``arm_smmu_make_s2_domain_ste``: Config S2 (or nested over ``dw0``/``dw1``'s
    stage-1 fields), VMID, VTCR (4 KiB, 39-bit IPA, 48-bit PS, WBWA/ISH walks), S2AA64,
    S2R, S2TTB."""
    base: dict[str, int] = dict(
        S2VMID=vmid, S2T0SZ=64 - S2_IA_BITS, S2SL0=1, S2IR0=1, S2OR0=1, S2SH0=3, S2PS=5,
        S2AA64=1, S2R=1,
    )  # fmt: skip
    base.update(fields)
    d0 = ent.SteDw0.CONFIG.put(dw0 | 1, config)
    return d0, dw1, ent.SteDw2.encode(**base), s2ttb


# -- commands ---------------------------------------------------------------------------------
def cmd_cfgi_ste(sid: int, leaf: int = 1) -> tuple[int, int]:
    return ent.CmdCfgiSte0.encode(OP=Op.CFGI_STE, SID=sid), ent.CmdCfgiLeaf1.encode(LEAF=leaf)


def cmd_cfgi_all() -> tuple[int, int]:
    return ent.CmdCfgiSte0.encode(OP=Op.CFGI_STE_RANGE), ent.CmdCfgiRange1.encode(RANGE=31)


def cmd_cfgi_cd(sid: int, ssid: int, leaf: int = 1) -> tuple[int, int]:
    return (
        ent.CmdCfgiCd0.encode(OP=Op.CFGI_CD, SID=sid, SSID=ssid),
        ent.CmdCfgiLeaf1.encode(LEAF=leaf),
    )


def cmd_cfgi_cd_all(sid: int) -> tuple[int, int]:
    return ent.CmdCfgiSte0.encode(OP=Op.CFGI_CD_ALL, SID=sid), 0


def cmd_tlbi_nh_asid(asid: int, vmid: int = 0) -> tuple[int, int]:
    return ent.CmdTlbiAsid0.encode(OP=Op.TLBI_NH_ASID, VMID=vmid, ASID=asid), 0


def cmd_tlbi_nh_va(
    asid: int, va: int, vmid: int = 0, leaf: int = 1, num: int = 0, scale: int = 0, tg: int = 0
) -> tuple[int, int]:
    return (
        ent.CmdTlbi0.encode(OP=Op.TLBI_NH_VA, VMID=vmid, ASID=asid, NUM=num, SCALE=scale),
        ent.CmdTlbiVa1.encode(LEAF=leaf, TG=tg, ADDR=va >> 12),
    )


def cmd_tlbi_nh_vaa(va: int, vmid: int = 0) -> tuple[int, int]:
    return (
        ent.CmdTlbiVaa0.encode(OP=Op.TLBI_NH_VAA, VMID=vmid),
        ent.CmdTlbiVa1.encode(ADDR=va >> 12),
    )


def cmd_tlbi_nh_all(vmid: int = 0) -> tuple[int, int]:
    return ent.CmdTlbiVmid0.encode(OP=Op.TLBI_NH_ALL, VMID=vmid), 0


def cmd_tlbi_s12_vmall(vmid: int) -> tuple[int, int]:
    return ent.CmdTlbiVmid0.encode(OP=Op.TLBI_S12_VMALL, VMID=vmid), 0


def cmd_tlbi_s2_ipa(ipa: int, vmid: int) -> tuple[int, int]:
    return (
        ent.CmdTlbiVaa0.encode(OP=Op.TLBI_S2_IPA, VMID=vmid),
        ent.CmdTlbiVa1.encode(LEAF=1, ADDR=ipa >> 12),
    )


def cmd_tlbi_nsnh_all() -> tuple[int, int]:
    return Op.TLBI_NSNH_ALL, 0


def cmd_sync(cs: int = ent.SYNC_CS_NONE, msiaddr: int = 0, msidata: int = 0) -> tuple[int, int]:
    return (
        ent.CmdSync0.encode(OP=Op.CMD_SYNC, CS=cs, MSIDATA=msidata),
        ent.CmdSync1.encode(MSIADDR=msiaddr >> 2),
    )


# -- LPAE stage-1 tables ---------------------------------------------------------------------
class PageTable:
    """A stage-1 LPAE table with 4 KiB granule, ``va_bits`` input bits (T0SZ = 64 - va_bits),
    built the way ``io-pgtable-arm.c`` builds ARM_64_LPAE_S1 tables."""

    def __init__(self, m: Machine, pages: Pages, va_bits: int = 48) -> None:
        self.m = m
        self.pages = pages
        self.va_bits = va_bits
        self.start = 4 - (va_bits - 12 + 8) // 9
        self.root = pages.alloc()

    def entry_addr(self, iova: int, level: int) -> int:
        """Address of the descriptor at ``level`` for ``iova``, creating tables above it."""
        table = self.root
        mem = self.m.memory
        for lvl in range(self.start, level):
            shift = 39 - 9 * lvl
            addr = table + ((iova >> shift) & 0x1FF) * 8
            pte = mem.read_u64(addr)
            if not pte & 1:
                new = self.pages.alloc()
                mem.write_u64(addr, new | 3)
                table = new
            else:
                table = pte & ent.LpaeLeaf.OA.mask
        return table + ((iova >> (39 - 9 * level)) & 0x1FF) * 8

    @staticmethod
    def leaf(
        phys: int,
        level: int = 3,
        ro: bool = False,
        user: bool = True,
        af: bool = True,
        ng: bool = True,
    ) -> int:
        """``arm_lpae_prot_to_pte`` for a stage-1 domain: AP[1] unless IOMMU_PRIV, AP[2]
        for read-only, ISH, AttrIndx 1 (cacheable), AF and nG."""
        return ent.LpaeLeaf.encode(
            VALID=1,
            TYPE=int(level == 3),
            ATTRINDX=1,
            AP1=int(user),
            AP2=int(ro),
            SH=3,
            AF=int(af),
            NG=int(ng),
        ) | (phys & ent.LpaeLeaf.OA.mask)

    def map(self, iova: int, phys: int, level: int = 3, **perm: bool) -> int:
        addr = self.entry_addr(iova, level)
        self.m.memory.write_u64(addr, self.leaf(phys, level, **perm))
        return addr

    def unmap(self, iova: int, level: int = 3) -> None:
        self.m.memory.write_u64(self.entry_addr(iova, level), 0)


class S2Table:
    """A stage-2 LPAE table (4 KiB granule, :data:`S2_IA_BITS` IPA, start level 1) as
    ``io-pgtable-arm.c`` builds ARM_64_LPAE_S2 tables: S2AP, MemAttr, AF, DBM."""

    def __init__(self, m: Machine, pages: Pages) -> None:
        self.m, self.pages = m, pages
        self.root = pages.alloc()

    def entry_addr(self, ipa: int) -> int:
        table = self.root
        for level in (1, 2):
            addr = table + ((ipa >> (39 - 9 * level)) & 0x1FF) * 8
            pte = self.m.memory.read_u64(addr)
            if not pte & 1:
                nxt = self.pages.alloc()
                self.m.memory.write_u64(addr, nxt | 3)
                table = nxt
            else:
                table = pte & ent.LpaeLeaf.OA.mask
        return table + ((ipa >> 12) & 0x1FF) * 8

    def map(self, ipa: int, phys: int, w: bool = True, r: bool = True, dbm: bool = False) -> int:
        addr = self.entry_addr(ipa)
        pte = ent.LpaeS2Leaf.encode(
            VALID=1, TYPE=1, MEMATTR=0xF, S2AP_R=int(r), S2AP_W=int(w), SH=3, AF=1, DBM=int(dbm)
        )
        self.m.memory.write_u64(addr, pte | phys)
        return addr

    def unmap(self, ipa: int) -> None:
        self.m.memory.write_u64(self.entry_addr(ipa), 0)


# -- the software side --------------------------------------------------------------------------
class Smmu:
    """Programs one SMMUv3 the way Linux ``arm_smmu_device_reset`` does and keeps the
    software view of its stream table, CD tables and queues."""

    def __init__(
        self,
        m: Machine,
        unit: Smmuv3Unit,
        pages: Pages,
        sid_bits: int = 8,
        two_level: bool = False,
        cmdq_log2: int = 8,
        evtq_log2: int = 7,
        irqs: bool = True,
    ) -> None:
        self.m, self.unit, self.pages = m, unit, pages
        self.sid_bits = sid_bits
        self.two_level = two_level
        self.l2: dict[int, int] = {}
        if two_level:
            self.strtab = pages.alloc(max(1, (8 << max(0, sid_bits - 8)) // 4096))
            cfg = sr.STRTAB_BASE_CFG.encode(FMT=sr.STRTAB_FMT_2LVL, SPLIT=8, LOG2SIZE=sid_bits)
        else:
            self.strtab = pages.alloc(max(1, (64 << sid_bits) // 4096))
            cfg = sr.STRTAB_BASE_CFG.encode(LOG2SIZE=sid_bits)
        self.cmdq_log2 = cmdq_log2
        self.cmdq = pages.alloc(max(1, (16 << cmdq_log2) // 4096))
        self.evtq_log2 = evtq_log2
        self.evtq = pages.alloc(max(1, (32 << evtq_log2) // 4096))
        self.sync_word = pages.alloc()
        self.prod = 0
        self.cons = 0
        self.cr0(0)
        reg_write(m, sr.CR1_OFF, sr.CR1.encode(QUEUE_IC=1, QUEUE_OC=1, QUEUE_SH=3))
        reg_write(m, sr.CR2_OFF, sr.CR2.encode(RECINVSID=1, PTM=1))
        reg_write(m, sr.STRTAB_BASE_OFF, self.strtab | sr.STRTAB_BASE.RA.mask, 8)
        reg_write(m, sr.STRTAB_BASE_CFG_OFF, cfg)
        reg_write(m, sr.CMDQ_BASE_OFF, self.cmdq | cmdq_log2, 8)
        reg_write(m, sr.CMDQ_PROD_OFF, 0)
        reg_write(m, sr.CMDQ_CONS_OFF, 0)
        self.cr0(sr.CR0.CMDQEN.mask)
        self.submit(cmd_cfgi_all(), cmd_tlbi_nsnh_all())
        reg_write(m, sr.EVTQ_BASE_OFF, self.evtq | evtq_log2, 8)
        reg_write(m, sr.EVTQ_PROD_OFF, 0)
        reg_write(m, sr.EVTQ_CONS_OFF, 0)
        self.cr0(sr.CR0.CMDQEN.mask | sr.CR0.EVTQEN.mask)
        if irqs:
            reg_write(m, sr.EVTQ_IRQ_CFG0_OFF, MSI_ADDR, 8)
            reg_write(m, sr.EVTQ_IRQ_CFG1_OFF, 0x41)
            reg_write(m, sr.GERROR_IRQ_CFG0_OFF, MSI_ADDR, 8)
            reg_write(m, sr.GERROR_IRQ_CFG1_OFF, 0x42)
            reg_write(m, sr.IRQ_CTRL_OFF, 0)
            m.clock.advance(1000)
            reg_write(
                m, sr.IRQ_CTRL_OFF, sr.IRQ_CTRL.EVTQ_IRQEN.mask | sr.IRQ_CTRL.GERROR_IRQEN.mask
            )
            m.clock.advance(1000)
        self.cr0(sr.CR0.CMDQEN.mask | sr.CR0.EVTQEN.mask | sr.CR0.SMMUEN.mask)

    def cr0(self, value: int) -> None:
        reg_write(self.m, sr.CR0_OFF, value)
        self.m.clock.advance(1000)
        assert reg_read(self.m, sr.CR0ACK_OFF) == value

    # -- stream table --------------------------------------------------------------------------
    def ste_addr(self, sid: int) -> int:
        if not self.two_level:
            return self.strtab + 64 * sid
        l2 = self.l2.get(sid >> 8)
        if l2 is None:
            l2 = self.l2[sid >> 8] = self.pages.alloc(4, align=0x4000)
            self.m.memory.write_u64(
                self.strtab + 8 * (sid >> 8), ent.L1Std.encode(SPAN=9, L2PTR=l2 >> 6)
            )
        return l2 + 64 * (sid & 0xFF)

    def write_ste(self, sid: int, ste: tuple[int, ...]) -> int:
        addr = self.ste_addr(sid)
        self.m.memory.write(addr, words(*ste, *(0,) * (8 - len(ste))))
        return addr

    # -- command queue ---------------------------------------------------------------------------
    def put(self, cmd: tuple[int, int]) -> int:
        """Write one command at PROD (without ringing); returns its address."""
        size = 1 << self.cmdq_log2
        addr = self.cmdq + 16 * (self.prod & (size - 1))
        self.m.memory.write(addr, words(*cmd))
        self.prod = (self.prod + 1) & ((size << 1) - 1)
        return addr

    def ring(self) -> None:
        reg_write(self.m, sr.CMDQ_PROD_OFF, self.prod)
        self.m.clock.advance(10_000)

    def submit(self, *cmds: tuple[int, int]) -> None:
        """Queue ``cmds`` plus a CMD_SYNC, ring PROD, run the clock."""
        for c in cmds:
            self.put(c)
        self.put(cmd_sync())
        self.ring()

    def cons_reg(self) -> int:
        return reg_read(self.m, sr.CMDQ_CONS_OFF)

    # -- event queue ------------------------------------------------------------------------------
    def events(self) -> list[tuple[int, int, int, int]]:
        """Read the records between EVTQ_CONS and EVTQ_PROD and consume them."""
        self.m.clock.advance(1000)
        size = 1 << self.evtq_log2
        mask = (size << 1) - 1
        prod = reg_read(self.m, sr.EVTQ_PROD_OFF)
        cons = reg_read(self.m, sr.EVTQ_CONS_OFF)
        out = []
        c = cons & mask
        while c != prod & mask:
            raw = self.m.memory.read(self.evtq + 32 * (c & (size - 1)), 32)
            out.append(tuple(int.from_bytes(raw[i : i + 8], "little") for i in range(0, 32, 8)))
            c = (c + 1) & mask
        reg_write(self.m, sr.EVTQ_CONS_OFF, c | (cons & sr.EVTQ_CONS.OVACKFLG.mask))
        return out  # type: ignore[return-value]

    def event_ids(self) -> list[int]:
        return [e[0] & 0xFF for e in self.events()]


class CdTable:
    """A CD table for one STE: linear (``fmt`` 0) or 2-level with 64 KiB or 4 KiB leaves."""

    def __init__(self, m: Machine, pages: Pages, cdmax: int, fmt: int = 0) -> None:
        self.m, self.pages = m, pages
        self.cdmax = cdmax
        self.fmt = fmt
        self.leaves: dict[int, int] = {}
        if fmt == ent.S1FMT_LINEAR:
            self.base = pages.alloc(max(1, (64 << cdmax) // 4096))
        else:
            self.leaf_bits = 10 if fmt == ent.S1FMT_64K_L2 else 6
            self.base = pages.alloc()

    def cd_addr(self, ssid: int) -> int:
        if self.fmt == ent.S1FMT_LINEAR:
            return self.base + 64 * ssid
        leaf = self.leaves.get(ssid >> self.leaf_bits)
        if leaf is None:
            npages = (64 << self.leaf_bits) // 4096
            leaf = self.leaves[ssid >> self.leaf_bits] = self.pages.alloc(
                npages, align=npages * 4096
            )
            self.m.memory.write_u64(
                self.base + 8 * (ssid >> self.leaf_bits), ent.L1Cd.encode(V=1, L2PTR=leaf >> 12)
            )
        return leaf + 64 * (ssid & ((1 << self.leaf_bits) - 1))

    def write(self, ssid: int, cd: tuple[int, int, int, int]) -> int:
        addr = self.cd_addr(ssid)
        self.m.memory.write(addr, words(*cd, 0, 0, 0, 0))
        return addr

    def ste(self, **kw: int) -> tuple[int, int, int]:
        return ste_s1(self.base, self.cdmax, self.fmt, **kw)


class Rig:
    """An enabled SMMU with RID's STE pointing at a CD table of 2^cdmax CDs, and one
    page table per ASID. ``cd(ssid, asid)`` installs a CD for a table."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        cdmax: int = 4,
        fmt: int = 0,
        dss: int = ent.S1DSS_SSID0,
        two_level: bool = False,
        ram: int = RAM,
    ) -> None:
        self.m, self.unit = make(config, ram)
        self.pages = Pages(self.m)
        self.smmu = Smmu(self.m, self.unit, self.pages, two_level=two_level)
        self.cds = CdTable(self.m, self.pages, cdmax, fmt)
        self.tables: dict[int, PageTable] = {}
        self.smmu.write_ste(RID, self.cds.ste(dss=dss))

    def table(self, asid: int) -> PageTable:
        pt = self.tables.get(asid)
        if pt is None:
            pt = self.tables[asid] = PageTable(self.m, self.pages)
        return pt

    def cd(self, ssid: int, asid: int, **fields: int) -> int:
        return self.cds.write(ssid, cd_words(self.table(asid).root, asid, **fields))

    def translate(
        self, addr: int, size: int = 4, pasid: int | None = None, write: bool = False
    ) -> DmaResult:
        return self.unit.translate(RID, pasid, False, addr, size, write)


def reason(res: DmaResult) -> int:
    """The fault reason of a result that must have faulted."""
    assert res.fault is not None, res
    return res.fault.reason
