"""Replaying the real trace into the model: the recorded DMA API calls driven through
the kernel model rebuild Linux's IOVA choices and the live mappings at any line."""

# ruff: noqa: E501  (trace lines are kept whole, as Linux prints them)
from __future__ import annotations

from pathlib import Path

import pytest

from iommulab import cli
from iommulab.replay import check as C
from iommulab.replay.ftrace import parse_lines
from iommulab.replay.machine import machine_spec_for, rebuild
from kernel.dma.debug import device_dma_allocations
from kernel.pci import pci_get_devices
from tests.iommulab.replay.conftest import REAL_TRACE, line_of, real_lines

Capsys = pytest.CaptureFixture[str]


def test_the_model_picks_every_iova_linux_picked() -> None:
    trace = parse_lines(real_lines())
    r = rebuild(trace.events, machine_spec_for(trace.events))
    try:
        maps = sum(1 for e in trace.events if e.name in ("dma_map_page", "dma_alloc"))
        assert (r.maps, r.same_iova, r.first_divergence) == (maps, maps, None)
        assert r.failed == [] and r.kernel.warnings() == []
    finally:
        r.kernel.shutdown()


def test_live_mappings_in_the_model_at_a_marker_equal_the_checks_count() -> None:
    trace = parse_lines(real_lines())
    down = line_of(real_lines(), "PHASE eth1 down")
    r = rebuild(trace.events, machine_spec_for(trace.events), until=down)
    try:
        r.kernel.activate()
        model = {str(d.addr): len(device_dma_allocations(d)) for d in pci_get_devices()}
    finally:
        r.kernel.shutdown()
    checked = dict(C.check(trace.events).stats.at_markers[6][1])
    assert checked == {k: model[k] for k in checked} == {"0000:00:03.0": 257, "0000:00:04.0": 258}


def test_the_first_divergence_is_named_with_its_line() -> None:
    lines = real_lines()
    at = line_of(lines, "dma_map_page:", "dma_addr=ffffc140")
    lines[at - 1] = lines[at - 1].replace("dma_addr=ffffc140", "dma_addr=12345140")
    trace = parse_lines(lines)
    r = rebuild(trace.events, machine_spec_for(trace.events))
    r.kernel.shutdown()
    assert r.first_divergence == (at, 0x12345140, 0xFFFFC140)
    assert r.same_iova == r.maps - 1
    assert f"first divergence at line {at}: Linux 0x12345140, model 0xffffc140" in r.summary()


def test_calls_the_model_cannot_drive_are_counted() -> None:
    dev = "0000:00:03.0"
    head = "            t-1     [000] .....     1.000000: "
    trace = parse_lines([
        head + f"dma_map_sg: {dev} dir=TO_DEVICE dma_addrs={{0xf000}} sizes={{0x100}} phys_addrs={{0x1000}} attrs=",
        head + f"dma_map_resource: {dev} dir=TO_DEVICE dma_addr=e000 size=4096 phys_addr=fee00000 attrs=",
        head + f"dma_map_page: {dev} dir=TO_DEVICE dma_addr=d000 size=4096 phys_addr=7fff0000000 attrs=",
        head + f"dma_unmap_page: {dev} dir=TO_DEVICE dma_addr=c000 size=4096 attrs=",
        head + f"dma_sync_single_for_cpu: {dev} dir=TO_DEVICE dma_addr=c000 size=4",
        head + "dma_map_page: 0000:00:09.0 dir=TO_DEVICE dma_addr=d000 size=4 phys_addr=1000 attrs=",
    ])  # fmt: skip
    spec = machine_spec_for(trace.events[:2])
    r = rebuild(trace.events, spec)
    r.kernel.shutdown()
    assert r.driven == 0
    assert r.skipped == {
        "scatterlist calls": 1,
        "dma_map_resource calls": 1,
        "maps outside the machine's RAM": 1,
        "unmaps of addresses the model never mapped": 1,
        "syncs of addresses the model never mapped": 1,
        "calls for devices not on the machine": 1,
    }


def test_cli_rebuild_until_a_marker_then_dump(capsys: Capsys, tmp_path: Path) -> None:
    machine = tmp_path / "m.toml"
    machine.write_text('name = "mine"\nram = "512M"\n[[iommus]]\nkind = "vtd"\nname = "dmar0"\nscope = "all"\n')  # fmt: skip
    argv = ["replay", str(REAL_TRACE), "--until", "PHASE ping from eth0", "--machine-file", str(machine)]  # fmt: skip
    assert cli.main([*argv, "--dump", "iommu-groups"]) == 0
    out = capsys.readouterr().out
    assert "on machine 'mine' (2 devices) to line 1086" in out
    ping = line_of(real_lines(), "PHASE ping from eth0")
    maps = sum(1 for s in real_lines()[:ping] if ": dma_map_page: " in s or ": dma_alloc: " in s)
    assert f"the model chose the trace's IOVA for {maps} of {maps} maps (100.0%)" in out
    assert "0000:00:04.0" in out.split("maps (100.0%)", 1)[1]
