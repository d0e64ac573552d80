"""The engine's view of memory: DMA through the platform with (PASID, priv).

Every access goes through ``PciFunction.dma_translate`` (so through the IOMMU that
owns the requester, or straight to RAM), and data moves run by run with memoryview
slices of RAM (DESIGN §8): no per-byte or per-page objects on the hot path.

With the function's ATS capability enabled (Linux ``intel_iommu`` enables it on
probe) and an IOMMU that answers Translation Requests, ``dma_translate`` serves the
access from the device's ATC as translated requests (:mod:`hw.ats`); every WQ uses
it, since WQCAP does not offer the per-WQ ATS disable (WQCFG bit 2 is reserved).
"""

from __future__ import annotations

from attrs import define

from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult, Run
from hw.memory import Memory
from hw.pci import PciFunction
from hw.uapi import idxd

RESUME_WINDOW = 8192
"""The first window of a resumed copy (:meth:`DmaCtx.copy`): the page that faulted and
the next, so one Translation Request answers the page and finds the next fault (as
asking for the whole rest did); each next window doubles."""
RESUME_WINDOW_MAX = 2 << 20
"""After a window this large went through, a resumed copy translates the rest at once."""


def coalesce(runs: tuple[Run, ...]) -> list[Run]:
    """Merge physically adjacent runs (an IOMMU returns one run per page)."""
    out: list[Run] = []
    if not runs:
        return out
    cur_pa, cur_n = runs[0]
    for pa, n in runs[1:]:
        if pa == cur_pa + cur_n:
            cur_n += n
        else:
            out.append((cur_pa, cur_n))
            cur_pa, cur_n = pa, n
    out.append((cur_pa, cur_n))
    return out


@define(slots=True)
class DmaCtx:
    """DMA attributes of one descriptor: requester function, PASID (None when the
    WQ does not use PASIDs), privilege, whether block-on-fault applies, and the fault
    that ended the operation (set by :func:`set_fault`)."""

    fn: PciFunction
    mem: Memory
    pasid: int | None
    priv: bool
    bof: bool = False
    resumed: bool = False
    """Run again after a Success page response (see :meth:`copy`)."""
    fault: DmaFault | None = None

    def translate(self, addr: int, size: int, write: bool) -> DmaResult:
        return self.fn.dma_translate(self.pasid, self.priv, addr, size, write)

    def read(self, addr: int, size: int) -> tuple[bytes, DmaFault | None]:
        if size == 0:
            return b"", None
        return self.fn.dma_read(self.pasid, self.priv, addr, size)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> tuple[int, DmaFault | None]:
        if not len(data):
            return 0, None
        return self.fn.dma_write(self.pasid, self.priv, addr, data)

    def copy(self, src: int, dst: int, size: int) -> tuple[int, DmaFault | None]:
        """memmove ``size`` bytes device-address ``src`` -> ``dst``; returns bytes
        copied before the first fault and that fault (source checked first).

        A fresh descriptor translates both buffers whole, in one request each. A
        :attr:`resumed` one (a MEMMOVE retried after a page response, restarting at
        the address that faulted) works forward in windows instead: two pages, then
        twice as much each time, and once :data:`RESUME_WINDOW_MAX` bytes went
        through without a fault, the rest in one request. Translating the whole
        remaining source on every retry would make a copy into an untouched buffer
        quadratic (each of its pages faults in turn); with windows a retry looks up
        only about what it moves before the next fault. The window sizes are the
        model's (the device's internal chunking is not architectural); the ATC or
        IOTLB still decides every hit, and buffers that overlap in device space are
        always translated whole (the copy gathers before it scatters)."""
        if size == 0:
            return 0, None
        if not self.resumed or (src < dst + size and dst < src + size):
            return self._copy_window(src, dst, size)
        done = 0
        window = RESUME_WINDOW
        while done < size:
            k = size - done if window == 0 or size - done < window else window
            n, fault = self._copy_window(src + done, dst + done, k)
            done += n
            if fault is not None:
                return done, fault
            window = 0 if window >= RESUME_WINDOW_MAX else window << 1
        return done, None

    def _copy_window(self, src: int, dst: int, size: int) -> tuple[int, DmaFault | None]:
        s = self.translate(src, size, False)
        d = self.translate(dst, size, True)
        n = min(s.length, d.length)
        fault = s.fault if s.length == n and s.fault is not None else d.fault
        if n < size and fault is None:  # pragma: no cover - translator returned short runs
            fault = DmaFault(src + n, DMA_FAULT_BUS, False, "short translation")
        if n == 0:
            return 0, fault
        mem = self.mem
        if src < dst + n and dst < src + n:
            # Overlapping in device space: gather first, then scatter (memmove).
            data = b"".join(mem.view[pa : pa + k] for pa, k in _clip(s.runs, n))
            self._scatter(_clip(d.runs, n), memoryview(data))
            return n, fault
        sruns = coalesce(tuple(_clip(s.runs, n)))
        druns = coalesce(tuple(_clip(d.runs, n)))
        view = mem.view
        si = di = 0
        spa, sn = sruns[0]
        dpa, dn = druns[0]
        while True:
            k = sn if sn < dn else dn
            mem.write(dpa, view[spa : spa + k])
            sn -= k
            dn -= k
            spa += k
            dpa += k
            if sn == 0:
                si += 1
                if si == len(sruns):
                    break
                spa, sn = sruns[si]
            if dn == 0:
                di += 1
                dpa, dn = druns[di]
        return n, fault

    def _scatter(self, runs: list[Run], data: memoryview) -> None:
        done = 0
        for pa, k in runs:
            self.mem.write(pa, data[done : done + k])
            done += k

    def fault_status(self, fault: DmaFault) -> int:
        """Completion status for a DMA fault: 0x03 (a page fault the descriptor does
        not, or cannot, block on; :mod:`hw.dsa.bof` turns a refused page request into
        0x04), 0x22 for an untranslated access outside RAM; bit 7 set for a write."""
        if fault.reason == DMA_FAULT_BUS:
            code = idxd.DSA_COMP_TRANSLATION_FAIL
        else:
            code = idxd.DSA_COMP_PAGE_FAULT_NOBOF
        return code | (idxd.DSA_COMP_STATUS_WRITE if fault.write else 0)


def _clip(runs: tuple[Run, ...], n: int) -> list[Run]:
    out: list[Run] = []
    left = n
    for pa, k in runs:
        if left <= 0:
            break
        take = k if k < left else left
        out.append((pa, take))
        left -= take
    return out


def set_fault(cr: idxd.DsaCompletionRecord, ctx: DmaCtx, fault: DmaFault, done: int) -> None:
    """Partial completion: status with the R/W bit, bytes completed, fault address."""
    ctx.fault = fault
    cr.status = ctx.fault_status(fault)
    cr.bytes_completed = done
    cr.fault_addr = fault.addr
