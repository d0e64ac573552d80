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

The IOTLB is the shared pipeline's (:mod:`hw.translation`): a
:class:`~hw.translation.TagCache` tagged by ``DID`` holding mock-page-table
translations per 4 KiB page, each remembering the page-table root it was walked from
and the 8-byte table entries it was read from (:class:`hw.pagewatch.SlotTracker`).
Requests go through :func:`hw.translation.translate_run`; this model supplies only
the slow path (:class:`_SlowPath`): the walk and fill, the permission faults, and the
re-check of an entry whose table entries were written or that was walked from another
root under the same ``DID``. If the tables now say otherwise, the cached translation
is still what the request gets — as hardware would — and the use is counted in
``stats.stale_uses`` with a ``hw_mock:stale_translation`` event. Translation entries
and first-stage (TT 2) translations are not cached: a first-stage page is walked on
every use.

Fault reasons: :data:`FAULT_NOT_PRESENT`, :data:`FAULT_WRITE`, :data:`FAULT_BLOCKED`,
:data:`FAULT_PASID`, :data:`FAULT_TABLE`, :data:`FAULT_READ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from attrs import define

from hw.bus import DmaFault, DmaResult, Entry, Finding, Invalidation
from hw.iommu_unit import IommuUnitModel
from hw.memory import BusError
from hw.pagewatch import causes
from hw.regs import Access, Field, Register, RegisterFile, RegSlot
from hw.translation import NEVER, Pipeline, PipelineStats, TagCache, TlbEntry, translate_run

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


X86_TAG: Final = object()
"""The tag of first-stage requests: no entry is ever cached under it."""


@define(slots=True)
class MockStats(PipelineStats):
    """Counters for tests (IOTLB hits/misses and stale uses are the pipeline's)."""

    translations: int = 0
    invalidations: int = 0
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
        self.stats = MockStats()
        self.faults: list[tuple[int, int | None, int, int]] = []
        """Every fault: (requester ID, PASID, address, reason)."""
        self._pipeline: Pipeline | None = None
        self._roots: dict[int, int] = {}
        """Page-table root -> one int object for it: an entry's source is compared by
        identity on the hit path, and a translation entry is re-read on every request."""

    def attach(self, machine: Machine, base: int) -> None:
        self.machine = machine
        self.base = base
        self._pipeline = Pipeline(machine.memory, self.stats, False, lambda: machine.clock.now)

    @property
    def pipeline(self) -> Pipeline:
        return self.attached(self._pipeline)

    @property
    def iotlb(self) -> TagCache:
        """The IOTLB: a :class:`~hw.translation.TagCache` tagged by DID."""
        return self.pipeline.iotlb

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
        iotlb = self.iotlb
        if did is None:
            return iotlb.flush(None)
        if addr is None:
            return iotlb.flush(lambda tag: tag == did)
        size = 0x1000 << order
        first = addr & ~(size - 1)
        return iotlb.flush(lambda tag: tag == did, first, first + size - 1)

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

    def walk(self, root: int, iova: int) -> tuple[int, int, tuple[int, ...]]:
        """Walk a mock page table: (physical 4 KiB page, R/W bits, the 8-byte table
        entries read as ``address >> 3``)."""
        if iova >> 48:
            raise _Fault(FAULT_NOT_PRESENT)
        table = root
        slots: list[int] = []
        for level in (4, 3, 2, 1):
            shift = 12 + 9 * (level - 1)
            addr = table + ((iova >> shift) & 0x1FF) * 8
            pte = self._read(addr)
            slots.append(addr >> 3)
            if not pte & 3:
                raise _Fault(FAULT_NOT_PRESENT)
            if level == 1 or (level == 2 and pte & Pte.LEAF.mask):
                base = pte & ADDR_MASK & ~((1 << shift) - 1)
                phys = base | (iova & ((1 << shift) - 1) & ~0xFFF)
                return phys, pte & 3, tuple(slots)
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

    def _fill(self, did: int, root: int, iova: int) -> TlbEntry:
        """IOTLB miss: walk and cache the 4 KiB page at ``iova``."""
        self.stats.iotlb_misses += 1
        phys, perm, slots = self.walk(root, iova)
        e = TlbEntry(did, iova >> 12, 12, phys, perm, root, slots=slots)
        self.iotlb.put(e)
        return e

    def _recheck(self, did: int, root: int, iova: int, e: TlbEntry) -> None:
        """A hit on an entry whose table entries were written, or that was walked from
        another root under this DID: re-walk; if the tables give another answer, the
        cached one is still used, and the use is counted."""
        pipeline = self.pipeline
        try:
            phys, perm, slots = self.walk(root, iova)
        except _Fault:
            fresh = -1
            same = False
            slots = ()
        else:
            fresh = phys
            same = e.same(phys, 12, perm)
        if same and e.src is not root:
            pipeline.rebind(e, root)
        if pipeline.revalidate(e, same, slots):
            return
        addr = iova & ~0xFFF

        def report() -> Finding:
            self.emit("hw_mock:stale_translation", did=did, addr=addr, cached=e.phys, current=fresh)
            found = Finding(
                "stale",
                f"{self.name}: IOVA {addr:#x} used a stale IOTLB entry of DID {did}",
                unit=self.name,
                iova=addr,
                domain=f"DID {did}",
                cache="IOTLB",
                cached=Entry(addr, e.phys, 0x1000, 1),
                current=Entry(addr, fresh, 0x1000, 1)
                if fresh >= 0
                else Entry(addr, None, fault="not present"),
                writes=causes(e),
                missing=(
                    Invalidation(
                        "INV (page range)",
                        (("TYPE", "3"), ("DID", str(did)), ("INV_ADDR", hex(addr)), ("ORDER", "0")),
                    ),
                ),
                time_ns=self.m.clock.now,
            )
            self.report(found)
            return found

        pipeline.stale(
            f"{self.name}: did {did} addr {addr:#x}: cached translation to {e.phys:#x} "
            f"used, tables say {fresh:#x}",
            report,
        )

    # -- translation ----------------------------------------------------------------------
    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        self.stats.translations += 1
        if not self.regs["MockCtrl"] & 1:
            return self._untranslated(addr, size, write)
        try:
            tte = self._entry(rid, pasid)
            if not tte & 1:
                raise _Fault(FAULT_BLOCKED)
            tt = Tte.TT.get(tte)
            if tt == TT_PASS:
                return self._untranslated(addr, size, write)
            if tt not in (TT_PAGING, TT_X86):
                raise _Fault(FAULT_BLOCKED)
        except _Fault as f:
            return DmaResult((), self._fault(rid, pasid, addr, f.reason, write))
        root = tte & ADDR_MASK
        root = self._roots.setdefault(root, root)
        slow = _SlowPath(self, rid, pasid, write, Tte.DID.get(tte), root, tt == TT_X86)
        runs, fault, hits = translate_run(
            self.iotlb,
            X86_TAG if slow.x86 else slow.did,
            NEVER if slow.x86 else root,
            slow.need,
            True,
            addr,
            addr + size,
            write,
            slow,
        )
        self.stats.iotlb_hits += hits
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


class _SlowPath:
    """The mock's slow path of one request (:class:`hw.translation.SlowPath`): fill,
    re-check, permission faults; a first-stage (``x86``) page is walked each time and
    handed back uncached."""

    __slots__ = ("did", "need", "pasid", "rid", "root", "unit", "write", "x86")

    def __init__(
        self,
        unit: MockIommuUnit,
        rid: int,
        pasid: int | None,
        write: bool,
        did: int,
        root: int,
        x86: bool,
    ) -> None:
        self.unit = unit
        self.rid = rid
        self.pasid = pasid
        self.write = write
        self.did = did
        self.root = root
        self.x86 = x86
        self.need = Pte.W.mask if write else Pte.R.mask

    def __call__(self, e: TlbEntry | None, a: int, end: int) -> TlbEntry | DmaFault:
        unit = self.unit
        try:
            if self.x86:
                phys = unit._walk_x86(self.root, a, self.write)
                return TlbEntry(X86_TAG, a >> 12, 12, phys, self.need, NEVER)
            if e is None:
                e = unit._fill(self.did, self.root, a)
            else:
                unit.stats.iotlb_hits += 1
                if e.suspect or e.src is not self.root:
                    unit._recheck(self.did, self.root, a, e)
            if e.perms & self.need != self.need:
                raise _Fault(FAULT_WRITE if self.write else FAULT_READ)
        except _Fault as f:
            return unit._fault(self.rid, self.pasid, a, f.reason, self.write)
        return e
