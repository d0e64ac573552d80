"""``iommulab dump``: every plugin's debug views, hardware-model fallbacks, DOT and SVG."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from iommulab import cli, demo, hwdump
from iommulab.hwdump import tree_to_dot
from kernel.boot import Kernel
from kernel.debugfs import DumpTarget
from kernel.hookspecs import hookimpl
from tests.iommulab.conftest import ScenarioFile

NO_INTEL = ["--cmdline", "module_blacklist=intel_iommu,idxd"]


class VendorViews:
    """A plugin contributing its own ``vendor`` view, which has a hardware fallback
    (as drivers/intel_iommu does for ``vtd``)."""

    @staticmethod
    def render(args: argparse.Namespace) -> str:
        k: Kernel = args.kernel
        return f"driver view of {k.machine.firmware.iommus[0].name} as {args.format} {args.depth}\n"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--depth", type=int, default=1)

    @hookimpl
    def iommulab_dump_targets(self) -> list[DumpTarget]:
        return [
            DumpTarget("vendor", "driver view", self.render, self.add_arguments, ("text", "dot"))
        ]


@pytest.fixture
def vendor_views(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "CORE_PLUGINS", (*cli.CORE_PLUGINS, ("views", VendorViews())))
    monkeypatch.setitem(hwdump.FALLBACKS, "vendor", hwdump.FALLBACKS["vtd"])


def test_dump_without_a_target_lists_every_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dump"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert {"dma-mappings", "dsa", "iommu-groups", "pasid", "vtd"} <= set(names)
    assert "text,dot,svg" in out


def test_dump_vtd_falls_back_to_the_hardware_model_with_a_note(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["dump", "vtd", *NO_INTEL]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("dmar0: TE=0 root=0x0 mode=legacy")
    assert "stale_uses=0" in captured.out
    assert "no plugin provides the 'vtd' dump target" in captured.err


def test_dump_vtd_dot_is_a_graphviz_digraph(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dump", "vtd", "--format", "dot", *NO_INTEL]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "vtd" {') and out.rstrip().endswith("}")


def test_dump_dsa_falls_back_to_the_hardware_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dump", "dsa", *NO_INTEL]) == 0
    captured = capsys.readouterr()
    assert "0000:00:02.0 dsa: state=disabled wqs=8" in captured.out
    assert "no plugin provides the 'dsa' dump target" in captured.err


def test_hardware_fallbacks_say_when_the_machine_lacks_the_device(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["dump", "vtd", "--machine", "no-iommu", *NO_INTEL]) == 0
    assert cli.main(["dump", "dsa", "--machine", "no-iommu", *NO_INTEL]) == 0
    assert (
        capsys.readouterr().out == "no VT-d unit on this machine\nno DSA device on this machine\n"
    )


def test_a_plugin_target_replaces_the_fallback(
    vendor_views: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dump", "vendor", "--depth", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "driver view of dmar0 as text 3\n"
    assert captured.err == ""


def test_svg_needs_the_dot_program(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "")
    assert cli.main(["dump", "vtd", "--format", "svg"]) == 2
    assert "needs Graphviz's dot program" in capsys.readouterr().err


def _fake_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    dot = tmp_path / "bin" / "dot"
    dot.parent.mkdir()
    dot.write_text(f"#!/bin/sh\n{body}\n")
    dot.chmod(0o755)
    monkeypatch.setenv("PATH", f"{dot.parent}{os.pathsep}{os.environ['PATH']}")


def test_svg_pipes_the_dot_output_through_graphviz(
    vendor_views: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dot(tmp_path, monkeypatch, 'echo "<svg>$(cat)</svg>"')
    out = tmp_path / "vtd.svg"
    assert cli.main(["dump", "vendor", "--format", "svg", "-o", str(out)]) == 0
    assert out.read_text() == "<svg>driver view of dmar0 as dot 1</svg>\n"


def test_a_failing_dot_is_an_error(
    vendor_views: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _fake_dot(tmp_path, monkeypatch, "echo 'syntax error' >&2; exit 1")
    assert cli.main(["dump", "vendor", "--format", "svg"]) == 2
    assert "dot failed: syntax error" in capsys.readouterr().err


def test_dump_runs_a_scenario_before_rendering(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    scen = scenario_file(
        "from kernel.dma.direction import DMA_TO_DEVICE\n"
        "from kernel.dma.mapping import dma_map_single\n"
        "from kernel.mm import kzalloc\n"
        "from kernel.pci import pci_get_devices\n"
        'MACHINE = "no-iommu"\n'
        "def scenario(kernel):\n"
        "    dma_map_single(pci_get_devices()[0], kzalloc(64), 64, DMA_TO_DEVICE)\n"
    )
    assert cli.main(["dump", "dma-mappings", "--scenario", str(scen)]) == 0
    assert "dma-api/nr_total_entries: 1" in capsys.readouterr().out


def test_dump_scenario_demo_needs_the_demo_to_offer_scenario(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(demo, "scenario", raising=False)
    assert cli.main(["dump", "pasid", "--scenario", "demo"]) == 2
    assert "the demo does not offer scenario(kernel) yet" in capsys.readouterr().err


def test_dump_scenario_demo_runs_the_demo_scenario(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[Kernel] = []
    monkeypatch.setattr(demo, "scenario", ran.append, raising=False)
    assert cli.main(["dump", "iommu-groups", "--scenario", "demo"]) == 0
    assert len(ran) == 1
    assert capsys.readouterr().out.startswith("iommu_groups:")


def test_a_target_blacklisted_at_boot_is_an_error(
    vendor_views: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dump", "pasid", "--cmdline", "module_blacklist=iommu-debugfs"]) == 2
    assert "'pasid' is not provided by the booted kernel" in capsys.readouterr().err


def test_tree_to_dot_turns_leaves_into_physical_pages() -> None:
    text = "unit\n  ctx 00:03.0\n    0x1000 -> 0x5000 0x1000 rw-\n    0x2000 -> 0x5000 0x1000 r--\n"
    dot = tree_to_dot(text, "t")
    assert 'n0 [label="unit"];' in dot and "n0 -> n1;" in dot
    assert dot.count('[shape=ellipse, label="page 0x5000"]') == 1
    assert 'n1 -> p0 [label="0x2000 0x1000 r--"];' in dot


def test_dsa_fallback_lists_enabled_wqs_and_groups() -> None:
    k = cli.boot_from_args(
        argparse.Namespace(machine="default", machine_file=None, modules=None),
        "module_blacklist=idxd",
    )
    try:
        dsa = k.machine.functions[next(a for a in k.machine.functions if str(a).endswith("02.0"))]
        wq = dsa.wqs[0]
        wq.enabled, wq.size, wq.group, wq.pasid_en, wq.pasid = True, 16, 0, True, 3
        dsa.group_engines[0] = [0, 1]
        text = hwdump.render_dsa_model(argparse.Namespace(kernel=k, format="text"))
    finally:
        k.shutdown()
    assert "  wq0: shared size=16 group=0 pasid=3 priv=0 pending=0" in text
    assert "  group0: engines [0, 1]" in text


def test_tree_to_dot_skips_blank_lines_and_keeps_top_level_mappings() -> None:
    dot = tree_to_dot("\n0x1000 -> 0x2000 0x1000 rw-\n", "t")
    assert 'n1 [label="0x1000 -> 0x2000 0x1000 rw-"];' in dot
