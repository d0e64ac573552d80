"""The health checks a finished run must pass (pytest plugin teardown, ``scenario run``).

A booted kernel is healthy at the end of a run when it raised no WARN, no IOMMU
unit of the machine used a stale cached translation (the unit model's
``stats.stale_uses``: VT-d, SMMUv3, the mock IOMMU), DMA-API debugging reported no error,
no driver wrote page-table entries into a page not allocated as a page-table page,
and after :meth:`~kernel.boot.Kernel.shutdown` no kmalloc/page/vmalloc allocation is
live that was not live right after boot (:meth:`kernel.mm.MemoryManager.live`).

Take a :func:`baseline` right after boot, run, shut down, then call
:func:`findings`. Each check has a name (``warn``, ``stale``, ``dma-debug``,
``pt-owner``, ``leak``) that tests use to say a finding was expected. Every
problem is a :class:`hw.bus.Finding`: a stale use carries what the unit and the
kernel recorded about it (:mod:`kernel.findings`), so its report names the cause.
"""

from __future__ import annotations

from typing import Any

from attrs import define

from hw.bus import Finding
from kernel.boot import Kernel
from kernel.dma.debug import DmaDebugState

CHECKS = ("warn", "stale", "dma-debug", "pt-owner", "leak")
KERNEL_CHECKS = ("stale", "dma-debug", "pt-owner")
"""Checks whose findings the kernel records itself (:attr:`Kernel.findings`)."""

__all__ = ["CHECKS", "Baseline", "Finding", "baseline", "finding_text", "findings", "summary"]


@define
class Baseline:
    """What was live right after boot."""

    kernel: Kernel
    allocations: frozenset[tuple[str, int, int]]
    stale: dict[str, int]
    dma_debug: DmaDebugState | None
    recorded: int = 0
    """How many findings the kernel had recorded."""


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
        recorded=len(kernel.findings),
    )


def findings(base: Baseline) -> list[Finding]:
    """Everything unhealthy since ``base``; call after the kernel was shut down so
    that unwinding problems (WARNs at unbind, leaked teardown) count too."""
    k = base.kernel
    out = [Finding("warn", w.message, detail=w.stack) for w in k.warnings()]
    recorded = [f for f in k.findings[base.recorded :] if f.check in KERNEL_CHECKS]
    for unit, uses in stale_uses(k).items():
        new = uses - base.stale.get(unit, 0)
        if new <= 0:
            continue
        told = [f for f in recorded if f.check == "stale" and f.unit == unit]
        out.extend(told)
        if len(told) < new:  # a model that reports no finding: the count says it
            out.append(
                Finding(
                    "stale",
                    f"IOMMU unit {unit} used a stale cached translation {new - len(told)}x",
                    unit=unit,
                )
            )
    out.extend(f for f in recorded if f.check == "pt-owner")
    dbg = [f for f in recorded if f.check == "dma-debug"]
    if dbg:
        out.extend(dbg)
    elif base.dma_debug is not None:
        out.extend(
            Finding("dma-debug", msg.splitlines()[0], detail=msg) for msg in base.dma_debug.errors
        )
    for a in k.mm.live():
        if (a.kind, a.addr, a.size) not in base.allocations:
            out.append(Finding("leak", f"{a.kind} {a.size} bytes at {a.addr:#x}", detail=a.site))
    return out


def finding_text(f: Finding) -> str:
    """How a finding reads in a failure or on the CLI: a WARN, a leak or a finding
    without a recorded cause as its line plus the last line of its detail (the call
    site); a finding with its cause in full (:meth:`hw.bus.Finding.report`),
    continuation lines indented."""
    if f.check in ("warn", "leak") or not (f.cached or f.writes or f.chain or f.walk):
        return str(f) + (f"\n      {f.detail.splitlines()[-1]}" if f.detail else "")
    return "\n    ".join(f.report().splitlines())


def summary(found: list[Finding]) -> str:
    """``0 WARN, 0 stale translations, 0 DMA-API errors, 0 leaks`` style counts
    (page-table ownership findings only when there are some)."""
    n = {c: sum(1 for f in found if f.check == c) for c in CHECKS}
    owner = f", {n['pt-owner']} page-table ownership error(s)" if n["pt-owner"] else ""
    return (
        f"{n['warn']} WARN, {n['stale']} stale translation(s), "
        f"{n['dma-debug']} DMA-API error(s){owner}, {n['leak']} leaked allocation(s)"
    )
