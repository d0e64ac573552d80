"""VT-d protected memory regions (VT-d spec 3.x "Protected Memory Regions", 10.4.16-
10.4.20 PMEN_REG, PLMBASE/PLMLIMIT, PHMBASE/PHMLIMIT; CAP.PLMR/PHMR).

With CAP.PLMR (low region, below 4 GiB) or CAP.PHMR (high region) the base/limit
registers are read-write with 2 MiB granularity (bits 20:0 read as zero); PMEN.EPM
enables both regions and PMEN.PRS follows it after the command delay. While PRS is
set, a DMA request whose result lands in a region (base to limit + 2 MiB - 1; empty
when base is above limit) is blocked at the first protected
byte, translated or not; such a request ends as an unsupported request (a bus fault
for the device), and no fault record is written. Linux 6.12 never enables the regions;
it turns EPM off after enabling translation (``iommu_disable_protect_mem_regions``),
which is the path a firmware that left them on exercises here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult
from hw.regs import Access, Field, Register, RegSlot

if TYPE_CHECKING:
    from hw.vtd.unit import VtdUnit

PMR_DELAY_NS = 100
GRANULE = 1 << 21


class PMEN(Register):
    PRS = Field(0, 0, Access.RO)
    EPM = Field(31, 31, Access.RW)


class PLM(Register):
    """PLMBASE/PLMLIMIT: address bits 31:21."""

    ADDR = Field(31, 21, Access.RW)


class PHM(Register):
    """PHMBASE/PHMLIMIT: address bits 63:21."""

    WIDTH = 64
    ADDR = Field(63, 21, Access.RW)


class ProtectedMemory:
    """The protected low/high memory regions of one unit."""

    def __init__(self, unit: VtdUnit) -> None:
        self.unit = unit
        self.active = False
        self.ranges: tuple[tuple[int, int], ...] = ()

    def pmen_write(self, slot: RegSlot, old: int, written: int, touched: int) -> None:
        on = bool(slot.value & PMEN.EPM.mask)
        if on != bool(old & PMEN.EPM.mask):
            self.unit._schedule(PMR_DELAY_NS, lambda: self._set(on), "pmen")

    def _set(self, on: bool) -> None:
        regs = self.unit.regs
        ranges: list[tuple[int, int]] = []
        cfg = self.unit.cfg
        for ok, lo, hi in ((cfg.plmr, "PLMBASE", "PLMLIMIT"), (cfg.phmr, "PHMBASE", "PHMLIMIT")):
            if ok and regs[hi] >= regs[lo]:
                ranges.append((regs[lo], regs[hi] | (GRANULE - 1)))
        self.ranges = tuple(ranges)
        self.active = on
        self.unit.route()
        regs["PMEN"] = (regs["PMEN"] & ~PMEN.PRS.mask) | (PMEN.PRS.mask if on else 0)

    def clip(self, addr: int, res: DmaResult, write: bool) -> DmaResult:
        """Cut ``res`` at its first byte inside a protected region."""
        done = 0
        for i, (pa, n) in enumerate(res.runs):
            cut = n
            for lo, hi in self.ranges:
                if pa <= hi and lo < pa + n:
                    cut = min(cut, max(0, lo - pa))
            if cut < n:
                kept = res.runs[:i] + (((pa, cut),) if cut else ())
                fault = DmaFault(addr + done + cut, DMA_FAULT_BUS, write, "protected memory region")
                return DmaResult(kept, fault)
            done += n
        return res
