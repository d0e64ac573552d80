"""The DMA API through the VT-d driver: ``dma_map_single`` + ``dma_unmap_single`` of one
4 KiB buffer by the edu device on the ``default`` machine (first-stage DMA domain), in
strict mode (every unmap waits for a queued P_IOTLB invalidation) and in lazy mode
(the flush queue defers it), with ``dma_debug=off``.

Each pair (best CPU time of a 250-pair loop, :func:`benchmarks.bench_dma.best_cpu_of`)
is reported as a ratio to the same pair through dma-direct on the ``no-iommu``
machine, measured in the same run (issue 20: strict <= 10x, lazy <= 5x):
the DMA API with no IOMMU at all is the floor no IOMMU path can go below.

The pair's cost is shared between the kernel core (dma-iommu, the IOVA allocator,
iommu_map/unmap), the driver (page-table walks and writes, the QI submission and its
wait) and the VT-d model executing the invalidation; ``driver share`` and ``model
share`` report those parts from a profile of the same loop.

Scale: ``dma_map_single`` of a further 200 buffers (best of 15 tries) with 1M mappings
live, against the same with 1k live (target <= 1.5); and the Python memory each live 4 KiB mapping
holds (tracemalloc: the IOVA range, the handle, the page allocator's records; the
page-table pages themselves are RAM), target <= 300 bytes.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import time
import tracemalloc
from collections.abc import Callable

from benchmarks._harness import BenchResult
from benchmarks.bench_dma import PAIRS, best_cpu_of, boot_stack, map_unmap_pairs, per_pair_ns
from iommulab.presets import EDU_BDF
from kernel.device import Device
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.mm import GFP_KERNEL, kmalloc
from kernel.pci import pci_enable_device, pci_get_devices, pci_set_master

RATIO_TARGETS = {"strict": 10.0, "lazy": 5.0}
LIVE_SMALL = 1_000
LIVE_BIG = 1_000_000
LIVE_OPS = 200
LIVE_TRIES = 15
SCALE_TARGET = 1.5
MEM_MAPPINGS = 20_000
MEM_TARGET = 300


def _shares(pairs: Callable[[], None]) -> tuple[float, float]:
    """The driver's and the hardware model's share of the profiled loop's own time."""
    prof = cProfile.Profile()
    prof.runcall(pairs)
    stats = pstats.Stats(prof)
    total = driver = model = 0.0
    for (path, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        if "/drivers/intel_iommu/" in path:
            driver += tottime
        elif "/hw/" in path:
            model += tottime
    return (driver / total, model / total) if total else (0.0, 0.0)


def _edu_and_buffer() -> tuple[Device, int]:
    edu = next(d for d in pci_get_devices() if str(d.addr) == EDU_BDF)
    pci_enable_device(edu)
    pci_set_master(edu)
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    return edu, buf


def _map(edu: Device, buf: int, count: int) -> list[int]:
    handles = [0] * count
    for i in range(count):
        handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
        if dma_mapping_error(edu, handle):
            raise RuntimeError(f"dma_map_single failed at {i} of {count}")
        handles[i] = handle
    return handles


def _unmap(edu: Device, handles: list[int]) -> None:
    for handle in handles:
        dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)


def map_ns_with_live(live: int) -> float:
    """Best per-call CPU time of ``dma_map_single`` of LIVE_OPS more buffers with ``live``
    mappings of the edu device already in place (VT-d strict, debug off); the extra
    mappings are unmapped (untimed) after each try."""
    k = boot_stack("vtd", "dma_debug=off")
    try:
        edu, buf = _edu_and_buffer()
        held = _map(edu, buf, live)
        best = float("inf")
        for _ in range(LIVE_TRIES):
            t0 = time.process_time()
            extra = _map(edu, buf, LIVE_OPS)
            best = min(best, time.process_time() - t0)
            _unmap(edu, extra)
        del held  # the shutdown tears the domain down with them
        return best / LIVE_OPS * 1e9
    finally:
        k.shutdown()


def bytes_per_mapping(cmdline: str) -> float:
    """Python memory (tracemalloc) held per live 4 KiB mapping, over MEM_MAPPINGS."""
    k = boot_stack("vtd", cmdline)
    try:
        edu, buf = _edu_and_buffer()
        _unmap(edu, _map(edu, buf, LIVE_SMALL))  # warm: first table pages, rcache
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            handles = _map(edu, buf, MEM_MAPPINGS)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        _unmap(edu, handles)
        return grown / MEM_MAPPINGS
    finally:
        k.shutdown()


def bench() -> list[BenchResult]:
    rows: list[BenchResult] = []
    floor = per_pair_ns("direct", "dma_debug=off")
    for mode, cmdline in (("strict", "dma_debug=off"), ("lazy", "dma_debug=off iommu.strict=0")):
        k = boot_stack("vtd", cmdline)
        try:
            pairs = map_unmap_pairs()
            per_pair = best_cpu_of(pairs, repeat=15) / PAIRS * 1e9
            driver, model = _shares(pairs)
        finally:
            k.shutdown()
        ratio = per_pair / floor
        target = RATIO_TARGETS[mode]
        rows.append(
            BenchResult(
                f"dma_map+unmap_single 4 KiB, VT-d {mode} (per pair)",
                per_pair / 1000,
                "us",
                ratio,
                f"dma-direct pair {floor / 1000:.2f} us",
                f"<= {target:.0f}x",
                ratio <= target,
            )
        )
        rows.append(BenchResult(f"  driver share of the {mode} pair (profiled)", driver * 100, "%"))
        rows.append(BenchResult(f"  VT-d model share of the {mode} pair", model * 100, "%"))
    rows.append(
        BenchResult("  floor: the same pair with no IOMMU (dma-direct)", floor / 1000, "us")
    )
    small = map_ns_with_live(LIVE_SMALL)
    big = map_ns_with_live(LIVE_BIG)
    rows.append(BenchResult("dma_map_single, 1k mappings live", small / 1000, "us"))
    rows.append(
        BenchResult(
            "dma_map_single, 1M mappings live",
            big / 1000,
            "us",
            big / small,
            "same call at 1k live",
            f"<= {SCALE_TARGET}",
            big / small <= SCALE_TARGET,
        )
    )
    per_map = bytes_per_mapping("dma_debug=off")
    rows.append(
        BenchResult(
            "memory per live 4 KiB mapping (tracemalloc)",
            per_map,
            "bytes",
            target=f"<= {MEM_TARGET}",
            ok=per_map <= MEM_TARGET,
        )
    )
    rows.append(
        BenchResult(
            "  the same with DMA-API debug on",
            bytes_per_mapping(""),
            "bytes",
        )
    )
    return rows
