"""The health checks a finished run must pass (pytest plugin teardown, ``scenario run``).

A booted kernel is healthy at the end of a run when it raised no WARN, no IOMMU
unit of the machine used a stale cached translation (the unit model's
``stats.stale_uses``: VT-d, SMMUv3, the mock IOMMU), DMA-API debugging reported no error, and after
:meth:`~kernel.boot.Kernel.shutdown` no kmalloc/page/vmalloc allocation is live
that was not live right after boot (:meth:`kernel.mm.MemoryManager.live`).

Take a :func:`baseline` right after boot, run, shut down, then call
:func:`findings`. Each check has a name (``warn``, ``stale``, ``dma-debug``,
``leak``) that tests use to say a finding was expected.
"""

from __future__ import annotations

from typing import Any

from attrs import define, frozen

from kernel.boot import Kernel
from kernel.dma.debug import DmaDebugState

CHECKS = ("warn", "stale", "dma-debug", "leak")


@frozen
class Finding:
    check: str
    """One of :data:`CHECKS`."""
    message: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


@define
class Baseline:
    """What was live right after boot."""

    kernel: Kernel
    allocations: frozenset[tuple[str, int, int]]
    stale: dict[str, int]
    dma_debug: DmaDebugState | None


def iommu_units(kernel: Kernel) -> dict[str, Any]:
    """The machine's IOMMU unit models by firmware name (empty for a foreign platform)."""
    units: dict[str, Any] = getattr(kernel.machine, "iommus", {})
    return units


def stale_uses(kernel: Kernel) -> dict[str, int]:
    """Stale cached-translation uses per IOMMU unit that counts them."""
    out: dict[str, int] = {}
    for name, unit in iommu_units(kernel).items():
        stats = getattr(unit, "stats", None)
        if stats is not None and hasattr(stats, "stale_uses"):
            out[name] = int(stats.stale_uses)
    return out


def baseline(kernel: Kernel) -> Baseline:
    dbg = kernel.subsys.get("dma_debug")
    return Baseline(
        kernel=kernel,
        allocations=frozenset((a.kind, a.addr, a.size) for a in kernel.mm.live()),
        stale=stale_uses(kernel),
        dma_debug=dbg if isinstance(dbg, DmaDebugState) else None,
    )


def findings(base: Baseline) -> list[Finding]:
    """Everything unhealthy since ``base``; call after the kernel was shut down so
    that unwinding problems (WARNs at unbind, leaked teardown) count too."""
    k = base.kernel
    out = [Finding("warn", w.message, w.stack) for w in k.warnings()]
    for unit, uses in stale_uses(k).items():
        if uses > base.stale.get(unit, 0):
            out.append(
                Finding("stale", f"IOMMU unit {unit} used a stale cached translation {uses}x")
            )
    if base.dma_debug is not None:
        out.extend(Finding("dma-debug", msg.splitlines()[0], msg) for msg in base.dma_debug.errors)
    for a in k.mm.live():
        if (a.kind, a.addr, a.size) not in base.allocations:
            out.append(Finding("leak", f"{a.kind} {a.size} bytes at {a.addr:#x}", a.site))
    return out


def summary(found: list[Finding]) -> str:
    """``0 WARN, 0 stale translations, 0 DMA-API errors, 0 leaks`` style counts."""
    n = {c: sum(1 for f in found if f.check == c) for c in CHECKS}
    return (
        f"{n['warn']} WARN, {n['stale']} stale translation(s), "
        f"{n['dma-debug']} DMA-API error(s), {n['leak']} leaked allocation(s)"
    )
