"""A tiny test-only IOMMU hardware model (table ``MOCK``) and a PCI test function.

How the mock driver tells the hardware its mappings: **a shared dict passed at
probe**. The unit registers itself in :data:`MOCK_UNITS` when the machine attaches
it; the driver's probe looks it up by the firmware unit's name and installs, per
(requester ID, PASID or None), what translation applies: a :class:`MockPageTable`
object (the paging domain's own table, shared by reference), :data:`IDENTITY`, or
``("x86", pgd_phys)`` for an SVA domain — whose page tables the model walks in RAM
in x86-64 4-level format. An absent key blocks DMA. The model has no IOTLB: a
translation always reads the live table. Register 0x0 (CAP) holds the PASID width
(0 = no PASID support), 0x8 counts invalidations the driver wrote to 0x10.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sortedcontainers import SortedDict

from hw.bus import DmaFault, DmaResult, PciAddr
from hw.edu import EduDevice
from hw.machine import Machine

MOCK_UNITS: dict[str, MockIommuUnit] = {}
IDENTITY = "identity"
FAULT_NOT_PRESENT = 1
FAULT_WRITE = 2
FAULT_BLOCKED = 3

REG_CAP = 0x0
REG_FLUSH_COUNT = 0x8
REG_FLUSH = 0x10

PROT_READ = 1
PROT_WRITE = 2


class MockPageTable:
    """Leaves of a mock paging domain: iova -> (paddr, size, prot)."""

    def __init__(self) -> None:
        self.leaves: SortedDict[int, tuple[int, int, int]] = SortedDict()

    def lookup(self, iova: int) -> tuple[int, int, int, int] | None:
        idx = self.leaves.bisect_right(iova) - 1
        if idx < 0:
            return None
        lo = self.leaves.keys()[idx]
        pa, size, prot = self.leaves[lo]
        if iova >= lo + size:
            return None
        return lo, pa, size, prot


class MockIommuUnit:
    table = "MOCK"
    register_size = 0x1000

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        self.pasid_width = int(config.get("pasid_width", 20))
        self.contexts: dict[tuple[int, int | None], object] = {}
        self.flushes = 0
        self.faults: list[tuple[int, int | None, int, int]] = []
        self.machine: Machine | None = None

    def attach(self, machine: Machine, base: int) -> None:
        self.machine = machine
        MOCK_UNITS[self.name] = self

    def mmio_read(self, offset: int, size: int) -> int:
        if offset == REG_CAP:
            return self.pasid_width
        if offset == REG_FLUSH_COUNT:
            return self.flushes
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset == REG_FLUSH:
            self.flushes += 1

    def _fault(self, rid: int, pasid: int | None, addr: int, reason: int, write: bool) -> DmaFault:
        self.faults.append((rid, pasid, addr, reason))
        return DmaFault(addr, reason, write, "mock iommu fault")

    def _walk_x86(self, pgd: int, va: int, write: bool) -> int | None:
        assert self.machine is not None
        mem = self.machine.memory
        table = pgd
        for shift in (39, 30, 21, 12):
            ent = mem.read_u64(table + ((va >> shift) & 0x1FF) * 8)
            if not ent & 1 or (write and not ent & 2):
                return None
            table = ent & (((1 << 52) - 1) & ~0xFFF)
        return table | (va & 0xFFF)

    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult:
        ctx = self.contexts.get((rid, pasid))
        if ctx is None:
            return DmaResult((), self._fault(rid, pasid, addr, FAULT_BLOCKED, write))
        if ctx == IDENTITY:
            return DmaResult(((addr, size),))
        runs: list[tuple[int, int]] = []
        cur, left = addr, size
        while left:
            if isinstance(ctx, MockPageTable):
                hit = ctx.lookup(cur)
                if hit is None:
                    return DmaResult(tuple(runs), self._fault(rid, pasid, cur, 1, write))
                lo, pa, lsize, prot = hit
                if write and not prot & PROT_WRITE:
                    return DmaResult(tuple(runs), self._fault(rid, pasid, cur, 2, write))
                n = min(left, lo + lsize - cur)
                phys = pa + (cur - lo)
            else:
                assert isinstance(ctx, tuple)
                got = self._walk_x86(ctx[1], cur, write)
                if got is None:
                    return DmaResult(tuple(runs), self._fault(rid, pasid, cur, 1, write))
                n = min(left, 0x1000 - (cur & 0xFFF))
                phys = got
            runs.append((phys, n))
            cur += n
            left -= n
        return DmaResult(tuple(runs))


class PasidEdu(EduDevice):
    """An edu device with a PASID capability (``pasid_width``), a chosen PCIe port
    type (``port_type``: 9 = RC integrated endpoint, 0 = endpoint), optional ACS and
    the multifunction bit, for PASID and grouping tests."""

    def __init__(self, addr: PciAddr, config: Mapping[str, Any] | None = None) -> None:
        cfg = dict(config or {})
        self._port_type = int(cfg.pop("port_type", 9))
        width = int(cfg.pop("pasid_width", 8))
        acs = bool(cfg.pop("acs", False))
        multifunction = bool(cfg.pop("multifunction", False))
        super().__init__(addr, cfg)
        if width:
            self.add_pasid_cap(width)
        if acs:
            self.add_acs_cap()
            self.config[self.find_ext_cap(0x0D) + 6] = 0x1F
        if multifunction:
            self.config[0x0E] |= 0x80

    def add_pcie_cap(self, port_type: int = 9) -> int:
        return super().add_pcie_cap(self._port_type)
