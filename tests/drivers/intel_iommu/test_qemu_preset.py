"""intel_iommu on the ``qemu-7.2-sm`` preset: a unit built from QEMU 7.2's registers."""

from __future__ import annotations

import pytest

from hw.machine import Machine
from iommulab import cli
from iommulab.presets import EDU_BDF, preset
from kernel.boot import boot
from kernel.dma.mapping import DMA_TO_DEVICE, dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.mm import GFP_KERNEL, kfree, kmalloc
from kernel.trace import capture
from tests.drivers.intel_iommu.conftest import pdev


def test_dmesg_shows_the_preset_registers_and_second_stage_mode() -> None:
    k = boot(
        Machine(preset("qemu-7.2-sm")),
        "iommu.strict=1",
        builtins=("drivers.intel_iommu",),
        entry_points=False,
    )
    log = k.dmesg()
    assert "DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap d2008c222f0606 ecap 480080f00f4a" in log
    assert "DMAR: dmar0: scalable mode, second-stage DMA domains" in log


def test_iotlb_invalidations_carry_dr_dw_as_the_real_trace_shows() -> None:
    """``linux-6.12-trace/trace.txt`` (QEMU 7.2, same CAP): ``iotlb_inv dmar0: 0xd2 0x0 0x0
    0x0`` at bring-up and ``0x300f2 0xffe59040 ...`` per strict unmap: type 2 with DR (bit 7)
    and DW (bit 6), domain-selective 0x10/page-selective 0x30 granularity."""
    m = Machine(preset("qemu-7.2-sm"))
    cmdline = "iommu.strict=1 trace_event=intel_iommu:qi_submit"
    k = boot(m, cmdline, builtins=("drivers.intel_iommu",), entry_points=False)
    at_boot = [e for e in k.tracer.events() if e.fields["type"] == "iotlb_inv"]
    assert at_boot and at_boot[0].ftrace().endswith("iotlb_inv dmar0: 0xd2 0x0 0x0 0x0")
    dev = pdev(EDU_BDF)
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    handle = dma_map_single(dev, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(dev, handle)
    with capture("intel_iommu:qi_submit") as events:
        dma_unmap_single(dev, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)
    iotlb = [e for e in events if e.fields["type"] == "iotlb_inv"]
    assert len(iotlb) == 1
    qw0, qw1 = iotlb[0].fields["qw0"], iotlb[0].fields["qw1"]
    assert isinstance(qw0, int) and isinstance(qw1, int)
    assert qw0 & 0xFFFF == 0xF2 and qw0 >> 16 != 0  # DR|DW|PSI|type 2, the domain id above
    assert qw1 & ~0xFFF == handle & ~0xFFF
    assert f"iotlb_inv dmar0: {qw0:#x} {qw1:#x} 0x0 0x0" in iotlb[0].ftrace()


def test_founding_demo_runs_on_the_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--machine", "qemu-7.2-sm"]) == 0
    out = capsys.readouterr().out
    assert "ecap 480080f00f4a" in out and "scalable mode, second-stage DMA domains" in out
    assert "stale 0" in out and "result: PASS" in out
