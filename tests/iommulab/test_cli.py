"""The command line as a user meets it."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from iommulab import cli
from iommulab.presets import PRESETS, load_machine_file, preset


def test_boot_prints_the_kernel_log(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["boot", "--machine", "no-iommu", "--cmdline", "quiet"]) == 0
    out = capsys.readouterr().out
    assert "Command line: quiet" in out
    assert "pci 0000:00:03.0: [1234:11e8]" in out


def test_plugins_lists_builtin_modules(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "intel_iommu" in out and "idxd" in out and "builtin" in out


def test_machine_file_toml_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text('name = "mine"\nram = "32M"\n[[devices]]\nkind = "edu"\nbdf = "00:07.0"\n')
    assert cli.main(["boot", "--machine-file", str(toml)]) == 0
    assert "pci 0000:00:07.0" in capsys.readouterr().out
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"ram": "32M"}))
    assert load_machine_file(js).ram_size == 32 << 20
    bad = tmp_path / "m.yaml"
    bad.write_text("ram: 1")
    with pytest.raises(ValueError, match=r"toml or \.json"):
        load_machine_file(bad)


def test_bad_machine_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "m.toml"
    f.write_text('ram = "32M"\ncolour = "red"\n')
    assert cli.main(["boot", "--machine-file", str(f)]) == 2
    assert "unknown field(s) colour" in capsys.readouterr().err


def test_every_preset_is_a_valid_description() -> None:
    for name, desc in PRESETS.items():
        assert desc["doc"], name
    assert preset("no-iommu").ram_size == 64 << 20
    with pytest.raises(ValueError, match="unknown machine preset"):
        preset("mainframe")


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo"]) == 0
    assert "boot complete" in capsys.readouterr().out


def test_plugins_lists_the_dump_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "iommu-debugfs        explicit" in out
    assert "dump target 'dma-mappings' (text): live DMA mappings" in out


def test_python_dash_m_iommulab_is_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["iommulab", "dump"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("iommulab", run_name="__main__")
    assert exit_.value.code == 0
    assert "iommu-groups" in capsys.readouterr().out
