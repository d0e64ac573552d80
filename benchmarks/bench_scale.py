"""Scale of the DMA API through the VT-d driver (``default`` machine, edu device,
``dma_debug=off``):

- ``dma_map_single`` of 4 KiB with 1M mappings live, as a ratio to the same call
  with 1k live (target <= 1.5): the IOVA tree and the page tables grow, the call
  must not;
- Python memory per live 4 KiB mapping beyond its page-table pages (target <= 300
  bytes), by ``tracemalloc`` over 20k new mappings: the page tables themselves are
  bytes in the machine's RAM, which ``tracemalloc`` does not see, and the
  benchmark's own list of handles is filtered out.

Building 1M live mappings takes a while (each is one ``dma_map_single``).
"""

from __future__ import annotations

import gc
import time
import tracemalloc

from benchmarks._harness import BenchResult, figure
from benchmarks.bench_dma import boot_stack
from iommulab.presets import EDU_BDF
from iommulab.progress import progress
from kernel.dma.direction import DMA_BIT_MASK
from kernel.dma.mapping import (
    DMA_TO_DEVICE,
    dma_map_single,
    dma_mapping_error,
    dma_set_mask_and_coherent,
    dma_unmap_single,
)
from kernel.mm import GFP_KERNEL, kmalloc
from kernel.pci import PciDev, pci_enable_device, pci_get_devices, pci_set_master

SMALL, BIG = 1_000, 1_000_000
OPS = 2000
TRACED = 20_000
CHUNK = 50_000


def _edu() -> tuple[PciDev, int]:
    """The edu device with a 64-bit DMA mask: 1M live 4 KiB mappings do not fit below
    4 GiB once the PCI window and the MSI window are reserved, so dma-iommu moves on
    above 4 GiB as Linux does (``pci_32bit_workaround``)."""
    edu = next(d for d in pci_get_devices() if str(d.addr) == EDU_BDF)
    pci_enable_device(edu)
    pci_set_master(edu)
    dma_set_mask_and_coherent(edu, DMA_BIT_MASK(64))
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    return edu, buf


def _map(edu: PciDev, buf: int, n: int, into: list[int]) -> None:
    for _ in range(n):
        handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
        if dma_mapping_error(edu, handle):
            raise RuntimeError("dma_map_single failed")
        into.append(handle)


def _map_cost_us(edu: PciDev, buf: int) -> float:
    """Best per-call time of :data:`OPS` new ``dma_map_single`` calls (unmapped after,
    untimed), over three tries."""
    best = float("inf")
    for _ in range(3):
        handles: list[int] = []
        t0 = time.perf_counter()
        _map(edu, buf, OPS, handles)
        best = min(best, time.perf_counter() - t0)
        for h in handles:
            dma_unmap_single(edu, h, 4096, DMA_TO_DEVICE)
    return best / OPS * 1e6


def _bytes_per_mapping(edu: PciDev, buf: int) -> float:
    handles: list[int] = []
    handles.extend([0] * TRACED)  # the benchmark's own list, sized before tracing
    handles.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        _map(edu, buf, TRACED, handles)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    mine = tracemalloc.Filter(False, __file__)
    grown = after.filter_traces([mine]).compare_to(before.filter_traces([mine]), "filename")
    for h in handles:
        dma_unmap_single(edu, h, 4096, DMA_TO_DEVICE)
    return sum(s.size_diff for s in grown) / TRACED


def bench() -> list[BenchResult]:
    k = boot_stack("vtd", "dma_debug=off")
    try:
        edu, buf = _edu()
        live: list[int] = []
        _map(edu, buf, SMALL, live)
        small = _map_cost_us(edu, buf)
        per_mapping = _bytes_per_mapping(edu, buf)
        for _ in progress(range((BIG - SMALL) // CHUNK + 1), "1M live mappings"):
            _map(edu, buf, min(CHUNK, BIG - len(live)), live)
        assert len(live) == BIG
        big = _map_cost_us(edu, buf)
        for h in live:
            dma_unmap_single(edu, h, 4096, DMA_TO_DEVICE)
    finally:
        k.shutdown()
    return [
        BenchResult("dma_map_single 4 KiB at 1k live mappings", small, "us"),
        figure(
            "dma_map_single 4 KiB at 1M live mappings",
            big,
            "us",
            1.5,
            ratio=big / small,
            baseline="same call at 1k live",
        ),
        figure(
            "memory per live 4 KiB mapping beyond its page tables (tracemalloc)",
            per_mapping,
            "bytes",
            300,
        ),
    ]
