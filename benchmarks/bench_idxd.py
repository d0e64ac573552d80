"""idxd: machine boot to ready DSAs (median wall ms: ``default``, the same with 64 GiB
of RAM as a ratio to 256 MiB, and the ``server`` preset with all 64 WQs) and dmaengine
memcpy of 64 MiB through the whole stack (DMA API → idxd → DSA model → VT-d with the system PASID),
as a ratio to an in-process bytearray copy, with warm caches (the same buffers
copied again: mappings, PASID entry, IOTLB and the DSA's ATS cache already filled;
with ATS enabled the DSA serves repeat DMAs from its ATC, so the IOTLB sees none)."""

from __future__ import annotations

import statistics
import time

from benchmarks._harness import BenchResult, best_of, figure
from drivers.idxd.init import idxd_devices
from hw.bus import PciAddr
from hw.machine import Machine, MachineSpec
from hw.vtd.unit import VtdUnit
from iommulab.presets import DSA_BDF, PRESETS, SERVER_CMDLINE, preset
from kernel.boot import Kernel, boot
from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_PREP_INTERRUPT,
    dma_request_chan,
    dma_sync_wait,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
)
from kernel.dma.mapping import dma_map_single, dma_unmap_single
from kernel.mm import alloc_pages_exact, free_pages_exact

SIZE = 64 << 20


def _boot(machine: str = "default") -> Kernel:
    return boot(Machine(preset(machine)), "", entry_points=False)


def _median_boot_ms(spec: MachineSpec, cmdline: str = "", runs: int = 7) -> float:
    """Median wall time to build ``spec`` and boot it with every DSA ready."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        k = boot(Machine(spec), cmdline, entry_points=False)
        times.append((time.perf_counter() - t0) * 1000)
        ready = [d for d in idxd_devices() if any(wq.dma_chan is not None for wq in d.wqs)]
        assert len(ready) == sum(1 for d in spec.devices if d.kind == "dsa"), "a DSA is not ready"
        k.shutdown()
    return statistics.median(times)


def _default_with_ram(ram: str) -> MachineSpec:
    return MachineSpec.from_dict({**PRESETS["default"], "ram": ram})


def _server_wqs(spec: MachineSpec) -> int:
    k = boot(Machine(spec), SERVER_CMDLINE, entry_points=False)
    try:
        return sum(wq.dma_chan is not None for d in idxd_devices() for wq in d.wqs)
    finally:
        k.shutdown()


def bench_boot() -> list[BenchResult]:
    """Boot to ready DSAs: ``default`` (and the same machine with 64 GiB of RAM, whose
    ratio shows boot does not pay for RAM size), and ``server`` with all 64 WQs."""
    _median_boot_ms(preset("default"), runs=2)  # warm imports and caches
    small = _median_boot_ms(_default_with_ram("256M"), runs=9)
    big = _median_boot_ms(_default_with_ram("64G"), runs=9)
    server = preset("server")
    wqs = _server_wqs(server)
    server_ms = _median_boot_ms(server, SERVER_CMDLINE, runs=7)
    return [
        figure("boot default machine to ready DSA (median)", small, "ms", 20),
        figure(
            "boot 64 GiB RAM / boot 256 MiB RAM (default machine, medians)",
            big,
            "ms",
            1.2,
            ratio=big / small,
            baseline=f"256 MiB: {small:.1f} ms",
        ),
        figure(
            f"boot server ({len(server.devices) - 1} DSAs, {wqs} WQs) to all DSAs ready (median)",
            server_ms,
            "ms",
            100,
        ),
    ]


def bench_memcpy(machine: str = "default") -> list[BenchResult]:
    k = _boot(machine)
    idxd = idxd_devices()[0]
    pasid = idxd.pasid if idxd.pasid_enabled else None
    chan = dma_request_chan(None, "memcpy")
    dev = chan.device.dev
    src = alloc_pages_exact(SIZE, 0)
    dst = alloc_pages_exact(SIZE, 0)
    assert src is not None and dst is not None
    s = dma_map_single(dev, src, SIZE, DMA_TO_DEVICE)
    d = dma_map_single(dev, dst, SIZE, DMA_FROM_DEVICE)

    def copy() -> None:
        tx = dmaengine_prep_dma_memcpy(chan, d, s, SIZE, DMA_PREP_INTERRUPT)
        assert tx is not None
        assert dma_sync_wait(chan, dmaengine_submit(tx)) == DMA_COMPLETE

    copy()  # warm the IOTLB
    m = k.machine
    assert isinstance(m, Machine)
    units = [u for u in m.iommus.values() if isinstance(u, VtdUnit)]
    port = m.functions[PciAddr.parse(DSA_BDF)].ats_port
    atc = port.atc.stats if port is not None else None
    before = [(u.stats.iotlb_hits, u.stats.iotlb_misses) for u in units]
    atc_before = (atc.hits, atc.translation_requests) if atc is not None else (0, 0)
    t_dsa = best_of(copy, repeat=3)
    after = [(u.stats.iotlb_hits, u.stats.iotlb_misses) for u in units]
    atc_after = (atc.hits, atc.translation_requests) if atc is not None else (0, 0)
    buf_a = bytearray(SIZE)
    buf_b = bytearray(SIZE)

    def ref() -> None:
        buf_b[:] = buf_a

    t_ref = best_of(ref, repeat=3)
    dma_unmap_single(dev, s, SIZE, DMA_TO_DEVICE)
    dma_unmap_single(dev, d, SIZE, DMA_FROM_DEVICE)
    free_pages_exact(src, SIZE)
    free_pages_exact(dst, SIZE)
    k.shutdown()
    if machine != "default":
        path = machine
    elif pasid is not None:
        path = f"VT-d, PASID {pasid}, warm ATC/IOTLB"
    else:
        path = "VT-d driver not bound"
    rows = [
        BenchResult(
            f"memcpy 64 MiB via idxd ({path})",
            SIZE / t_dsa / 1e9,
            "GB/s",
            ratio=t_ref / t_dsa,
            baseline="bytearray copy",
            target=">= 0.5",
            ok=t_ref / t_dsa >= 0.5,
        )
    ]
    if atc is not None:
        rows.append(
            BenchResult(
                "DSA ATC pages hit per timed copy run", float(atc_after[0] - atc_before[0]), "pages"
            )
        )
        rows.append(
            BenchResult(
                "DSA ATS translation requests per timed run",
                float(atc_after[1] - atc_before[1]),
                "reqs",
            )
        )
    for u, (h0, m0), (h1, m1) in zip(units, before, after, strict=True):
        rows.append(BenchResult(f"{u.name} IOTLB hits per timed copy run", float(h1 - h0), "hits"))
        rows.append(
            BenchResult(f"{u.name} IOTLB misses per timed copy run", float(m1 - m0), "miss")
        )
    return rows


def bench() -> list[BenchResult]:
    # The dma-direct row shows what is left without per-page VT-d translation.
    return [*bench_boot(), *bench_memcpy(), *bench_memcpy("no-iommu-dsa")]
