"""The two page-table generations side by side: ``dma_map_single`` +
``dma_unmap_single`` of one 4 KiB buffer by the edu device (strict mode), on VT-d
(first-stage DMA domain: x86_64 format) and SMMUv3 (stage 1: ARM LPAE), booted with
``iommu.pt=driver`` (6.12's driver-private tables, the default) and with
``iommu.pt=generic`` (the generic page table). The ratio is generic / driver: above
1 the generic library costs more per pair. No target: the default generation is
what the speed targets hold; this row shows what choosing the newer one costs.
"""

from __future__ import annotations

from benchmarks._harness import BenchResult, best_of
from benchmarks.bench_dma import PAIRS, map_unmap_pairs
from hw.machine import Machine
from iommulab.presets import preset
from kernel.boot import Kernel, boot

MACHINES = {"VT-d": ("default", "drivers.intel_iommu"), "SMMUv3": ("smmuv3", "drivers.arm_smmu_v3")}


def _boot(vendor: str, generation: str) -> Kernel:
    name, driver = MACHINES[vendor]
    return boot(Machine(preset(name)), f"dma_debug=off iommu.pt={generation}", builtins=(driver,))


def _per_pair_ns(vendor: str, generation: str) -> float:
    k = _boot(vendor, generation)
    try:
        return best_of(map_unmap_pairs(), repeat=5) / PAIRS * 1e9
    finally:
        k.shutdown()


def bench() -> list[BenchResult]:
    rows: list[BenchResult] = []
    for vendor in MACHINES:
        driver = _per_pair_ns(vendor, "driver")
        generic = _per_pair_ns(vendor, "generic")
        rows.append(
            BenchResult(f"dma map+unmap 4 KiB, {vendor}, iommu.pt=driver", driver / 1000, "us")
        )
        rows.append(
            BenchResult(
                f"dma map+unmap 4 KiB, {vendor}, iommu.pt=generic",
                generic / 1000,
                "us",
                generic / driver,
                "iommu.pt=driver",
            )
        )
    return rows
