"""The layers under ``dma_map_single`` + ``dma_unmap_single`` of one 4 KiB buffer by the
edu device, each as a ratio to a Python dict set + del measured in the same run:

- dma-direct (no IOMMU): the DMA API alone;
- dma-iommu over the mock vendor (tests/kernel/iommu/mock_iommu.py: a 4-level page
  table in RAM and a register write per invalidation, on the small hw.mock_iommu
  model), strict and lazy: adds the IOMMU core (IOVA allocator, iommu_map/unmap,
  gather, iotlb_sync or the flush queue) at a small vendor cost;
- the same over the VT-d driver (bench_intel_iommu measures it too): adds the
  driver's page-table walks and queued invalidation, and the VT-d model.

Each with ``dma_debug=off`` and with DMA-API debug on (the default). The ``x mock``
/ ``x direct`` columns say what each layer multiplies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks._harness import BenchResult, best_cpu_of, dict_set_del_ns
from hw.machine import Machine, build_machine
from iommulab.presets import EDU_BDF, preset
from kernel.boot import Kernel, boot
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.mm import GFP_KERNEL, kmalloc
from kernel.pci import pci_enable_device, pci_get_devices, pci_set_master
from tests.kernel.iommu import mock_iommu

PAIRS = 250
"""Pairs per timed loop: short loops, best of many, so a busy host skews them least."""

MOCK_SPEC: dict[str, Any] = {
    "name": "bench-mock",
    "ram": "64M",
    "devices": [{"kind": "edu", "bdf": EDU_BDF}],
    "iommus": [{"kind": "mock", "name": "mock0", "scope": "all", "config": {}}],
}


def boot_stack(stack: str, cmdline: str) -> Kernel:
    """Boot the edu device behind ``stack``: "vtd" (default machine), "direct" or "mock"."""
    if stack == "vtd":
        return boot(Machine(preset("default")), cmdline, builtins=("drivers.intel_iommu",))
    if stack == "direct":
        return boot(Machine(preset("no-iommu")), cmdline, builtins=())
    return boot(
        build_machine(MOCK_SPEC),
        cmdline,
        builtins=(),
        entry_points=False,
        extra_plugins=[("mock_iommu", mock_iommu)],
    )


def map_unmap_pairs() -> Callable[[], None]:
    """A loop of :data:`PAIRS` map+unmap pairs of one 4 KiB buffer by the booted edu."""
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

    return pairs


def per_pair_ns(stack: str, cmdline: str) -> float:
    """Best per-pair CPU time of ``stack`` ("direct", "mock" or "vtd") booted with
    ``cmdline``."""
    k = boot_stack(stack, cmdline)
    try:
        return best_cpu_of(map_unmap_pairs(), repeat=15) / PAIRS * 1e9
    finally:
        k.shutdown()


def bench() -> list[BenchResult]:
    dict_ns = dict_set_del_ns()
    rows: list[BenchResult] = []
    for debug, extra in (("debug off", "dma_debug=off"), ("debug on", "")):
        direct = per_pair_ns("direct", extra)
        rows.append(
            BenchResult(
                f"dma-direct, {debug} (per pair)",
                direct / 1000,
                "us",
                direct / dict_ns,
                f"dict set+del {dict_ns:.0f} ns",
            )
        )
        for mode, strict in (("strict", ""), ("lazy", " iommu.strict=0")):
            mock = per_pair_ns("mock", extra + strict)
            vtd = per_pair_ns("vtd", extra + strict)
            for name, ns, base, base_name in (
                ("mock", mock, direct, "direct"),
                ("VT-d", vtd, mock, "mock"),
            ):
                rows.append(
                    BenchResult(
                        f"dma-iommu {name} {mode}, {debug} (per pair)",
                        ns / 1000,
                        "us",
                        ns / dict_ns,
                        f"{ns / base:.1f}x {base_name}",
                    )
                )
    return rows
