"""The model's own tracepoints print as Linux 6.12 prints them, so ``iommulab replay``
reads the model's traces like a real kernel's.

Each format is compared byte for byte with a line of the real trace, calling the model's
tracepoint with the values that line shows; then a trace of the founding scenario replays
clean, and a run whose unmap deliberately skips its IOTLB flush replays with the missing
invalidation named at the unmap's line.
"""

# ruff: noqa: E501  (one row per event: the model call and the real line it must equal)
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.intel_iommu import cache as vtd_cache
from drivers.intel_iommu.dmar import trace_qi_submit
from iommulab import cli
from iommulab.replay import check as C
from iommulab.replay.ftrace import parse_text
from kernel import trace
from kernel.boot import Kernel
from kernel.dma import trace as dma_trace
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.mm import GFP_KERNEL, kfree, kmalloc
from tests.drivers.intel_iommu.conftest import Vtd, boot_vtd
from tests.iommulab.replay.conftest import real_lines


def real_body(event: str, *needles: str) -> str:
    """The body of the first real-trace line of ``event`` containing the needles."""
    for line in real_lines():
        if f": {event}: " in line and all(n in line for n in needles):
            return line.split(f": {event}: ", 1)[1]
    raise AssertionError(f"no {event} line with {needles}")


def printed(tp: trace.Tracepoint, **values: object) -> str:
    with trace.capture(tp.name) as got:
        tp(**values)
    (ev,) = got
    return ev.text


FORMATS: list[tuple[str, Callable[[], str], tuple[str, ...]]] = [
    ("map", lambda: printed(trace.trace_map, iova=0xFFFFF000, paddr=0x36E8000, size=4096), ("0x00000000036e8000",)),
    ("unmap", lambda: printed(trace.trace_unmap, iova=0xFFE59000, size=4096, unmapped_size=4096), ("ffe59000",)),
    ("add_device_to_group", lambda: printed(trace.trace_add_device_to_group, group_id=3, device="0000:00:1f.2"), ("1f.2",)),
    ("attach_device_to_domain", lambda: printed(trace.trace_attach_device_to_domain, device="0000:00:03.0"), ("03.0",)),
    ("qi_submit", lambda: printed(trace_qi_submit, iommu="dmar0", type="iotlb_inv", qw0=0x300F2, qw1=0xFFE59040, qw2=0, qw3=0), ("0xffe59040",)),
    ("cache_tag_assign", lambda: printed(vtd_cache.trace_cache_tag_assign, iommu="dmar0", dev="dmar0", type="iotlb", domain_id=5, pasid=0, users=2), ("ref 2",)),
    ("cache_tag_flush_range", lambda: printed(vtd_cache.trace_cache_tag_flush_range, iommu="dmar0", dev="dmar0", pasid=0, type="iotlb", domain_id=3, start=0xFFE59000, end=0xFFE59FFF, addr=0xFFE59000, pages=1, mask=0), ("0xffe59000-",)),
    ("dma_map_page", lambda: printed(dma_trace.trace_dma_map_page, device="0000:00:03.0", dir=2, dma_addr=0xFFFFD8C0, size=1522, phys_addr=0x365F8C0, attrs=0), ("ffffd8c0",)),
    ("dma_unmap_page", lambda: printed(dma_trace.trace_dma_unmap_page, device="0000:00:03.0", dir=1, dma_addr=0xFFE59602, size=60, attrs=0), ("ffe59602",)),
    ("dma_alloc", lambda: printed(dma_trace.trace_dma_alloc, device="0000:00:03.0", dir=0, dma_addr=0xFFFFF000, size=4096, virt_addr=0xFFFF888000000000, flags=GFP_KERNEL, attrs=0), ("03.0", "fffff000")),
    ("dma_free", lambda: printed(dma_trace.trace_dma_free, device="0000:00:04.0", dir=0, dma_addr=0xFFFFE000, size=4096, virt_addr=0xFFFF888000000000, attrs=0), ("04.0", "ffffe000")),
]  # fmt: skip


@pytest.mark.iommulab_machine("no-iommu")
@pytest.mark.parametrize(("event", "model", "needles"), FORMATS, ids=[f[0] for f in FORMATS])
def test_the_model_prints_each_event_as_linux_6_12(
    event: str, model: Callable[[], str], needles: tuple[str, ...], iommulab_kernel: Kernel
) -> None:
    """Tracepoints print in the booted kernel's tracer (any machine will do)."""
    assert model() == real_body(event, *needles)


def test_a_trace_of_the_founding_scenario_replays_with_no_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.txt"
    assert cli.main(["trace", "demo", "-o", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["replay", str(out)]) == 0
    report = capsys.readouterr().out
    assert "0 finding(s), 0 uncertain" in report
    done = parse_text(out.read_text())
    res = C.check(done.events)
    assert res.stats.dma_reconciled == res.stats.dma_maps > 0
    assert res.stats.iommu_reconciled == res.stats.iommu_unmaps > 0


def test_a_skipped_flush_in_the_model_is_named_by_the_replay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    k, m = boot_vtd()
    v = Vtd(k, m)
    with trace.capture("iommu"), trace.capture("intel_iommu"), trace.capture("dma") as got:
        buf = kmalloc(4096, GFP_KERNEL)
        assert buf is not None
        handle = dma_map_single(v.edu, buf, 4096, DMA_TO_DEVICE)
        assert not dma_mapping_error(v.edu, handle)
        with monkeypatch.context() as m:
            m.setattr(vtd_cache, "cache_tag_flush_range", lambda *a: None)  # the bug
            dma_unmap_single(v.edu, handle, 4096, DMA_TO_DEVICE)
        kfree(buf)
    k.shutdown()
    text = trace.to_ftrace(got)
    lines = text.splitlines()
    unmap = next(i for i, s in enumerate(lines, 1) if ": unmap: " in s)
    mapped = next(i for i, s in enumerate(lines, 1) if ": map: " in s)
    found = C.check(parse_text(text).events).findings
    assert [(f.check, f.device, f.lines) for f in found] == [
        (C.NO_INVALIDATION, "0000:00:03.0", (mapped, unmap))
    ]
    assert f"IOVA [{handle & ~0xFFF:#x}-" in found[0].message


def test_a_missing_device_tlb_invalidation_is_named(tmp_path: Path) -> None:
    """With ATS the DSA's domain holds devtlb cache tags: an unmap needs the device-TLB
    invalidated too. Removing one unmap's devtlb invalidations (the PASID 0 tag's flush
    and its dev_tlb_inv descriptor) is named, and nothing else."""
    out = tmp_path / "demo.txt"
    assert cli.main(["trace", "demo", "-o", str(out), "--events", "iommu,intel_iommu,dma"]) == 0
    lines = out.read_text().splitlines()
    unmap = next(i for i, s in enumerate(lines) if ": unmap: " in s)
    iova = lines[unmap].split("iova=")[1].split(" ")[0]
    flush = next(i for i in range(unmap, len(lines)) if "[0] type devtlb" in lines[i])
    desc = next(i for i in range(unmap, len(lines)) if "qi_submit: dev_tlb_inv dmar0" in lines[i])
    assert f"[{iova.replace('0x00000000', '0x')}-" in lines[flush]
    for i in sorted((flush, desc), reverse=True):
        del lines[i]
    found = C.check(parse_text("\n".join(lines)).events).findings
    assert [(f.check, f.device) for f in found] == [(C.NO_INVALIDATION, "0000:00:02.0")]
    assert unmap + 1 in found[0].lines
    assert "a device-TLB invalidation for 0000:00:02.0 PASID 0" in found[0].message
