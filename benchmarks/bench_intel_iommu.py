"""The DMA API through the VT-d driver: ``dma_map_single`` + ``dma_unmap_single`` of one
4 KiB buffer by the edu device on the ``default`` machine (first-stage DMA domain), in
strict mode (every unmap waits for a queued P_IOTLB invalidation) and in lazy mode
(the flush queue defers it). Reported per pair, with the ratio to a Python dict set +
del measured in the same run (target: strict <= 40x).

The pair's cost is shared between the kernel core (DMA-API debug, dma-iommu, the IOVA
allocator, iommu_map/unmap) and the driver (page-table writes, the QI submission and
its wait); ``driver share`` reports the driver's part from a profile of the same loop.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable

from benchmarks._harness import BenchResult, best_of
from hw.machine import Machine
from iommulab.presets import EDU_BDF, preset
from kernel.boot import Kernel, boot
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.mm import GFP_KERNEL, kmalloc
from kernel.pci import pci_enable_device, pci_get_devices, pci_set_master

PAIRS = 2000
TARGET = 40.0


def _dict_set_del_ns() -> float:
    d: dict[int, int] = {}
    keys = list(range(PAIRS))

    def run() -> None:
        for k in keys:
            d[k] = k
            del d[k]

    return best_of(run, repeat=7) / PAIRS * 1e9


def _booted(cmdline: str) -> tuple[Kernel, Callable[[], None]]:
    k = boot(Machine(preset("default")), cmdline, builtins=("drivers.intel_iommu",))
    edu = next(d for d in pci_get_devices() if str(d.addr) == EDU_BDF)
    pci_enable_device(edu)
    pci_set_master(edu)
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None

    def pairs() -> None:
        for _ in range(PAIRS):
            handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
            if dma_mapping_error(edu, handle):
                raise RuntimeError("dma_map_single failed")
            dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)

    return k, pairs


def _driver_share(pairs: Callable[[], None]) -> float:
    prof = cProfile.Profile()
    prof.runcall(pairs)
    stats = pstats.Stats(prof)
    total = driver = 0.0
    for (path, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        if "/drivers/intel_iommu/" in path:
            driver += tottime
    return driver / total if total else 0.0


def bench() -> list[BenchResult]:
    dict_ns = _dict_set_del_ns()
    rows: list[BenchResult] = []
    for mode, cmdline in (("strict", "dma_debug=off"), ("lazy", "dma_debug=off iommu.strict=0")):
        k, pairs = _booted(cmdline)
        try:
            per_pair = best_of(pairs, repeat=5) / PAIRS * 1e9
            share = _driver_share(pairs)
        finally:
            k.shutdown()
        ratio = per_pair / dict_ns
        strict = mode == "strict"
        rows.append(
            BenchResult(
                f"dma_map+unmap_single 4 KiB, VT-d {mode} (per pair)",
                per_pair / 1000,
                "us",
                ratio,
                f"dict set+del {dict_ns:.0f} ns",
                f"<= {TARGET:.0f}x" if strict else "",
                ratio <= TARGET if strict else None,
            )
        )
        rows.append(
            BenchResult(
                f"  driver share of the {mode} pair (profiled)",
                share * 100,
                "%",
            )
        )
    return rows
