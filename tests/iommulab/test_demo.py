"""``iommulab demo``: the founding scenario end to end, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hw.machine import Machine
from iommulab import cli, demo
from iommulab.presets import preset
from kernel.boot import boot
from kernel.iommu.generic_pt.iommu_pt import PtIommu
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.pci import pci_get_devices


def test_demo_copies_every_size_and_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    for size in demo.SIZES:
        assert f"memcpy {size:>9} bytes on wq0.0 (dedicated): ok" in out
    assert "stale 0" in out
    assert "0000:00:02.0 ATS:" in out and "pages served from the device TLB" in out
    assert "result: PASS" in out


@pytest.mark.parametrize("api", ["upstream", "seed-v3"])
def test_demo_takes_the_pasid_api_generation(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--pasid-api", api]) == 0
    out = capsys.readouterr().out
    assert f"system PASID 1 ({api} API)" in out
    assert "dmar0: PASID 1: did=" in out
    assert "same tables as the system PASID: the DMA domain" in out
    assert "stale 0; faults 0" in out
    assert "result: PASS" in out


def test_demo_runs_unchanged_idxd_on_smmuv3(capsys: pytest.CaptureFixture[str]) -> None:
    """The vendor swap: same idxd driver, SMMUv3 instead of VT-d underneath."""
    assert cli.main(["demo", "--machine", "smmuv3"]) == 0
    out = capsys.readouterr().out
    assert "IORT unit smmu0 bound to driver arm_smmu_v3" in out
    assert "system PASID 1 attached to the DMA domain" in out
    assert "result: PASS" in out


def test_demo_without_iommu_uses_dma_direct(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--machine", "no-iommu-dsa"]) == 0
    out = capsys.readouterr().out
    assert "system PASID none" in out and "result: PASS" in out


def test_demo_writes_a_chrome_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "demo.json"
    assert cli.main(["demo", "--machine", "no-iommu-dsa", "--trace", str(out_file)]) == 0
    events = json.loads(out_file.read_text())
    names = {e["name"] for e in (events["traceEvents"] if isinstance(events, dict) else events)}
    assert {"submit", "complete", "cmd"} <= names


def test_demo_fails_when_no_copy_can_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--machine", "no-iommu"]) == 1
    assert "result: FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("machine", ["default", "smmuv3"])
def test_demo_runs_on_the_generic_page_table(machine: str) -> None:
    """``iommu.pt=generic`` (upstream's generic_pt under both vendors' DMA domains):
    the founding scenario copies every size correctly with no stale translation."""
    m = Machine(preset(machine))
    k = boot(m, "iommu.pt=generic")
    try:
        result = demo.scenario(k)
        dsa = next(d for d in pci_get_devices() if str(d.addr) == "0000:00:02.0")
        dom = iommu_get_domain_for_dev(dsa)
        table = getattr(dom, "pt", None) or getattr(getattr(dom, "pgtbl_ops", None), "pt", None)
        assert isinstance(table, PtIommu)
        text, ok = demo.report(k, result)
    finally:
        k.shutdown()
    assert ok, text
    assert len(result["copies"]) == 2 * len(demo.SIZES)
    assert all(good for *_, good in result["copies"])
    assert "iommu: page tables: generic_pt" in text
    assert [u.stats.stale_uses for u in m.iommus.values()] == [0]


def test_demo_runs_on_every_wq_of_every_dsa_of_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["demo", "--machine", "server", "--every-wq", "--sizes", "4K,64K"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for dev in range(8):
        for wq in range(8):
            mode = "shared" if wq % 2 else "dedicated"
            for size in (4096, 65536):
                assert f"memcpy {size:>9} bytes on wq{dev}.{wq} ({mode}): ok" in out
    # two DSAs behind each scoped DRHD: the PASID entries come from the owning unit
    for dev in range(8):
        assert f"dmar{dev // 2}: PASID {dev + 1}: did=" in out
    assert "dmar4: PASID" not in out
    assert out.count("stale 0; faults 0") == 5
    assert "result: PASS" in out


@pytest.mark.parametrize("bad", ["0", "4K,lots", "100"])
def test_demo_sizes_must_be_multiples_of_256(bad: str) -> None:
    with pytest.raises(SystemExit):
        cli.main(["demo", "--sizes", bad])
