"""A small IOMMU for tests and tutorials (firmware table ``MOCK``, kind ``mock``).

Not a real part: the least hardware with which every IOMMU-core rule can show, reached
only as a CPU reaches hardware — five registers and tables in RAM — and with an IOTLB
that keeps translations until software invalidates them, so a core or driver change
that skips a flush leaves a stale entry whose use is detected and counted.

Registers (64-bit, little-endian; see the ``Mock*`` register classes):

``CAP`` 0x00 RO
    ``PW`` (4:0): PASID width; 0 = no PASID support.
``ROOT`` 0x08 RW
    Physical address of the root table (bits 51:12).
``CTRL`` 0x10 RW
    ``EN`` (0): translation enabled. While clear, DMA passes untranslated.
``INV`` 0x18 WO, with ``INV_ADDR`` 0x20 RW
    Writing ``INV`` invalidates IOTLB entries at once: ``TYPE`` 1 global, 2 all of
    domain ``DID``, 3 the ``4 KiB << ORDER`` range of ``DID`` at ``INV_ADDR``
    (aligned down to the range size). Type 0 is reserved: ignored, logged in
    :attr:`errors`.
``FSTS`` 0x28 RW1C, ``FREC`` 0x30 RO, ``FADDR`` 0x38 RO
    One fault record: the first fault sets ``FSTS.PF`` and fills ``FREC``
    (reason, write, PASID valid, requester ID, PASID) and ``FADDR``; faults while
    ``PF`` is set only set ``FSTS.PFO``. Every fault is also kept in :attr:`faults`.

Tables in RAM (all little-endian u64 entries):

- root table: 256 entries, one per bus: ``P`` (0), context table address (51:12);
- context table: 256 entries of 16 bytes, one per devfn: qword 0 is a
  *translation entry*, qword 1 ``PDP`` (0) and the PASID directory address (51:12);
- PASID directory: entry ``pasid >> 9``: ``P`` (0), PASID table address (51:12); a
  PASID table holds 512 translation entries;
- translation entry: ``P`` (0), ``TT`` (2:1: 0 mock page table, 1 pass-through,
  2 x86-64 4-level first stage), root of the table (51:12), ``DID`` (63:52);
- mock page table: 4 levels of 512 entries, ``R`` (0), ``W`` (1), ``LEAF`` (7, a
  2 MiB page at level 2), address (51:12); a non-leaf entry is present when R or W.

The IOTLB caches mock-page-table translations per 4 KiB page, tagged by ``DID``.
Translation entries and first-stage (TT 2) translations are not cached. Each cached
entry depends on the table pages it was read from (:class:`hw.pagewatch.DepTracker`);
when one of them was written, a hit re-walks the tables, and if they now say
otherwise the cached translation is still what the request gets — as hardware would —
and the use is counted in ``stats.stale_uses`` with a ``hw_mock:stale_translation``
event.

Fault reasons: :data:`FAULT_NOT_PRESENT`, :data:`FAULT_WRITE`, :data:`FAULT_BLOCKED`,
:data:`FAULT_PASID`, :data:`FAULT_TABLE`, :data:`FAULT_READ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from attrs import define

from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult, Run
from hw.iommu_unit import IommuUnitModel
from hw.memory import BusError
from hw.pagewatch import Cached, DepTracker
from hw.regs import Access, Field, Register, RegisterFile, RegSlot

if TYPE_CHECKING:
    from hw.machine import Machine

FAULT_NOT_PRESENT = 1
FAULT_WRITE = 2
FAULT_BLOCKED = 3
FAULT_PASID = 4
"""The request's PASID is beyond CAP.PW, or the context has no PASID directory."""
FAULT_TABLE = 5
"""A table pointer outside RAM."""
FAULT_READ = 6
"""A read of a page mapped write-only."""

TT_PAGING = 0
TT_PASS = 1
TT_X86 = 2

ADDR_MASK = ((1 << 52) - 1) & ~0xFFF
PASID_TABLE_SHIFT = 9
"""A PASID table holds 2**9 entries; the directory is indexed by ``pasid >> 9``."""


class MockCap(Register):
    WIDTH = 64
    PW = Field(4, 0, Access.RO)


class MockRoot(Register):
    WIDTH = 64
    ADDR = Field(51, 12)


class MockCtrl(Register):
    WIDTH = 64
    EN = Field(0, 0)


class MockInv(Register):
    WIDTH = 64
    TYPE = Field(1, 0, Access.WO)
    ORDER = Field(9, 4, Access.WO)
    DID = Field(27, 16, Access.WO)


class MockInvAddr(Register):
    WIDTH = 64
    ADDR = Field(63, 12)


class MockFsts(Register):
    WIDTH = 64
    PF = Field(0, 0, Access.RW1C)
    PFO = Field(1, 1, Access.RW1C)


class MockFrec(Register):
    WIDTH = 64
    REASON = Field(7, 0, Access.RO)
    WRITE = Field(8, 8, Access.RO)
    PV = Field(9, 9, Access.RO)
    RID = Field(31, 16, Access.RO)
    PASID = Field(51, 32, Access.RO)


class MockFaddr(Register):
    WIDTH = 64
    ADDR = Field(63, 0, Access.RO)


class Tte:
    """Translation entry (context qword 0, PASID table entry)."""

    P = Field(0, 0)
    TT = Field(2, 1)
    ADDR = Field(51, 12)
    DID = Field(63, 52)


class Pte:
    """Mock page-table entry."""

    R = Field(0, 0)
    W = Field(1, 1)
    LEAF = Field(7, 7)
    ADDR = Field(51, 12)


REGS: tuple[tuple[type[Register], int], ...] = (
    (MockCap, 0x00),
    (MockRoot, 0x08),
    (MockCtrl, 0x10),
    (MockInv, 0x18),
    (MockInvAddr, 0x20),
    (MockFsts, 0x28),
    (MockFrec, 0x30),
    (MockFaddr, 0x38),
)
INV_GLOBAL = 1
INV_DOMAIN = 2
INV_RANGE = 3


class _Fault(Exception):
    def __init__(self, reason: int) -> None:
        super().__init__(reason)
        self.reason = reason


class TlbEntry(Cached):
    """One cached 4 KiB translation: physical page and the leaf's R/W bits."""

    __slots__ = ("perm", "phys")

    def __init__(self, phys: int, perm: int, pages: frozenset[int]) -> None:
        super().__init__(pages)
        self.phys = phys
        self.perm = perm
        """``Pte.R``/``Pte.W`` bits of the leaf."""


@define
class MockStats:
    translations: int = 0
    iotlb_hits: int = 0
    iotlb_misses: int = 0
    invalidations: int = 0
    stale_uses: int = 0
    faults: int = 0


class MockIommuUnit(IommuUnitModel):
    """The mock IOMMU (see the module docstring). Config: ``pasid_width`` (0-20)."""

    table = "MOCK"
    register_size = 0x1000

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name)
        width = int(config.get("pasid_width", 20))
        if not 0 <= width <= 20:
            raise ValueError(f"mock iommu {name}: pasid_width {width} is not 0-20")
        self.pasid_width = width
        self.regs = RegisterFile(name, self.register_size)
        for reg, off in REGS:
            self.regs.add(reg, off, on_write=self._inv_written if reg is MockInv else None)
        self.regs["MockCap"] = MockCap.PW.put(0, width)
        self.iotlb: dict[int, dict[int, TlbEntry]] = {}
        """DID -> IOVA page frame -> entry."""
        self.stats = MockStats()
        self.faults: list[tuple[int, int | None, int, int]] = []
        """Every fault: (requester ID, PASID, address, reason)."""
        self._deps: DepTracker | None = None

    def attach(self, machine: Machine, base: int) -> None:
        self.machine = machine
        self.base = base
        self._deps = DepTracker(machine.memory)

    # -- invalidation ---------------------------------------------------------------------
    def _inv_written(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        kind = MockInv.TYPE.get(written)
        did = MockInv.DID.get(written)
        if kind == INV_GLOBAL:
            self.invalidate(None, None, 0)
        elif kind == INV_DOMAIN:
            self.invalidate(did, None, 0)
        elif kind == INV_RANGE:
            addr = self.regs["MockInvAddr"] & ~0xFFF
            self.invalidate(did, addr, MockInv.ORDER.get(written))
        else:
            self.error(f"INV: reserved type {kind} ignored")

    def invalidate(self, did: int | None, addr: int | None, order: int) -> int:
        """Drop IOTLB entries: all (``did`` None), of ``did``, or of ``did`` in the
        ``4 KiB << order`` range holding ``addr``. Returns how many were dropped."""
        self.stats.invalidations += 1
        deps = self.attached(self._deps)
        dids = list(self.iotlb) if did is None else [did]
        n = 0
        for d in dids:
            tlb = self.iotlb.get(d)
            if tlb is None:
                continue
            if addr is None:
                victims = list(tlb)
            else:
                first = (addr >> 12) & ~((1 << order) - 1)
                last = first + (1 << order)
                if 1 << order <= len(tlb):
                    victims = [p for p in range(first, last) if p in tlb]
                else:
                    victims = [p for p in tlb if first <= p < last]
            for pfn in victims:
                deps.drop(tlb.pop(pfn))
            n += len(victims)
            if not tlb:
                del self.iotlb[d]
        return n

    # -- table walks ----------------------------------------------------------------------
    def _read(self, addr: int) -> int:
        try:
            return self.m.memory.read_u64(addr)
        except BusError:
            raise _Fault(FAULT_TABLE) from None

    def _entry(self, rid: int, pasid: int | None) -> int:
        """The translation entry for (``rid``, ``pasid``)."""
        if pasid is not None and not 0 <= pasid < 1 << self.pasid_width:
            raise _Fault(FAULT_PASID)
        root = self._read(self.regs["MockRoot"] + 8 * (rid >> 8))
        if not root & 1:
            raise _Fault(FAULT_BLOCKED)
        ctx = (root & ADDR_MASK) + 16 * (rid & 0xFF)
        if pasid is None:
            return self._read(ctx)
        pdir = self._read(ctx + 8)
        if not pdir & 1:
            raise _Fault(FAULT_PASID)
        dent = self._read((pdir & ADDR_MASK) + 8 * (pasid >> PASID_TABLE_SHIFT))
        if not dent & 1:
            raise _Fault(FAULT_BLOCKED)
        return self._read((dent & ADDR_MASK) + 8 * (pasid & ((1 << PASID_TABLE_SHIFT) - 1)))

    def entry(self, rid: int, pasid: int | None) -> int:
        """The translation entry the tables in RAM give (``rid``, ``pasid``) now; 0 when
        there is none. For tests and dumps: records no fault."""
        try:
            return self._entry(rid, pasid)
        except _Fault:
            return 0

    def walk(self, root: int, iova: int) -> tuple[int, int, frozenset[int]]:
        """Walk a mock page table: (physical 4 KiB page, R/W bits, table pages read)."""
        if iova >> 48:
            raise _Fault(FAULT_NOT_PRESENT)
        table = root
        pages: set[int] = set()
        for level in (4, 3, 2, 1):
            shift = 12 + 9 * (level - 1)
            addr = table + ((iova >> shift) & 0x1FF) * 8
            pte = self._read(addr)
            pages.add(addr >> 12)
            if not pte & 3:
                raise _Fault(FAULT_NOT_PRESENT)
            if level == 1 or (level == 2 and pte & Pte.LEAF.mask):
                base = pte & ADDR_MASK & ~((1 << shift) - 1)
                phys = base | (iova & ((1 << shift) - 1) & ~0xFFF)
                return phys, pte & 3, frozenset(pages)
            table = pte & ADDR_MASK
        raise AssertionError("unreachable: level 1 is always a leaf")  # pragma: no cover

    def _walk_x86(self, root: int, va: int, write: bool) -> int:
        table = root
        for shift in (39, 30, 21, 12):
            ent = self._read(table + ((va >> shift) & 0x1FF) * 8)
            if not ent & 1:
                raise _Fault(FAULT_NOT_PRESENT)
            if write and not ent & 2:
                raise _Fault(FAULT_WRITE)
            table = ent & ADDR_MASK
        return table

    def _page(self, tte: int, iova: int, write: bool) -> int:
        """Physical page for ``iova`` under translation entry ``tte`` (IOTLB first)."""
        root = tte & ADDR_MASK
        if Tte.TT.get(tte) == TT_X86:
            return self._walk_x86(root, iova, write)
        did = Tte.DID.get(tte)
        tlb = self.iotlb.setdefault(did, {})
        entry = tlb.get(iova >> 12)
        if entry is None:
            self.stats.iotlb_misses += 1
            phys, perm, pages = self.walk(root, iova)
            entry = tlb[iova >> 12] = TlbEntry(phys, perm, pages)
            self.attached(self._deps).add(entry)
        else:
            self.stats.iotlb_hits += 1
            if entry.suspect:
                self._check_fresh(did, root, iova, entry)
        if not entry.perm & (Pte.W.mask if write else Pte.R.mask):
            raise _Fault(FAULT_WRITE if write else FAULT_READ)
        return entry.phys

    def _check_fresh(self, did: int, root: int, iova: int, entry: TlbEntry) -> None:
        try:
            phys, perm, pages = self.walk(root, iova)
        except _Fault:
            fresh: tuple[int, int] | None = None
        else:
            fresh = (phys, perm)
        if fresh == (entry.phys, entry.perm):
            self.attached(self._deps).rebase(entry, pages)
            return
        self.stats.stale_uses += 1
        self.emit(
            "hw_mock:stale_translation",
            did=did,
            addr=iova & ~0xFFF,
            cached=entry.phys,
            current=-1 if fresh is None else fresh[0],
        )

    # -- translation ----------------------------------------------------------------------
    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        self.stats.translations += 1
        if not self.regs["MockCtrl"] & 1:
            return self._in_ram(addr, [(addr, size)], None, write)
        runs: list[Run] = []
        cur, end = addr, addr + size
        try:
            tte = self._entry(rid, pasid)
            if not tte & 1:
                raise _Fault(FAULT_BLOCKED)
            if Tte.TT.get(tte) == TT_PASS:
                return self._in_ram(addr, [(addr, size)], None, write)
            if Tte.TT.get(tte) not in (TT_PAGING, TT_X86):
                raise _Fault(FAULT_BLOCKED)
            while cur < end:
                n = min(end - cur, 0x1000 - (cur & 0xFFF))
                phys = self._page(tte, cur, write) | (cur & 0xFFF)
                if runs and runs[-1][0] + runs[-1][1] == phys:
                    runs[-1] = (runs[-1][0], runs[-1][1] + n)
                else:
                    runs.append((phys, n))
                cur += n
        except _Fault as f:
            fault = self._fault(rid, pasid, cur, f.reason, write)
            return self._in_ram(addr, runs, fault, write)
        return self._in_ram(addr, runs, None, write)

    def _in_ram(self, addr: int, runs: list[Run], fault: DmaFault | None, write: bool) -> DmaResult:
        """The translated runs reach RAM directly: cut at the first byte outside it
        (a bus error, :data:`hw.bus.DMA_FAULT_BUS`, as the machine reports untranslated
        DMA outside RAM)."""
        ram = self.m.memory.size
        done = 0
        for i, (pa, n) in enumerate(runs):
            if pa < 0 or pa + n > ram:
                good = max(0, min(n, ram - pa)) if pa >= 0 else 0
                kept = runs[:i] + ([(pa, good)] if good else [])
                bus = DmaFault(addr + done + good, DMA_FAULT_BUS, write, "outside RAM")
                return DmaResult(tuple(kept), bus)
            done += n
        return DmaResult(tuple(runs), fault)

    def _fault(self, rid: int, pasid: int | None, addr: int, reason: int, write: bool) -> DmaFault:
        self.stats.faults += 1
        self.faults.append((rid, pasid, addr, reason))
        regs = self.regs
        if regs["MockFsts"] & MockFsts.PF.mask:
            regs["MockFsts"] |= MockFsts.PFO.mask
        else:
            regs["MockFsts"] |= MockFsts.PF.mask
            regs["MockFrec"] = MockFrec.encode(
                REASON=reason,
                WRITE=int(write),
                PV=int(pasid is not None),
                RID=rid,
                PASID=(pasid or 0) & 0xFFFFF,
            )
            regs["MockFaddr"] = addr
        self.emit("hw_mock:fault", rid=rid, pasid=pasid, addr=addr, reason=reason, write=write)
        return DmaFault(addr, reason, write, f"mock iommu {self.name}: fault reason {reason}")
