"""Bad input at the command line: one line on stderr naming the problem, a non-zero
exit status, and never a traceback unless ``--debug`` asks for one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from iommulab import cli
from iommulab.presets import PRESETS
from tests.iommulab.conftest import DSA_ENABLE, ScenarioFile

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("iommulab: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- machine files


def test_a_missing_machine_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nosuch.toml"
    rc, _, err = _run(["boot", "--machine-file", str(missing)], capsys)
    assert rc == 2
    assert _one_error_line(err) == (
        f"iommulab: error: {missing}: cannot read the machine file (No such file or directory)"
    )


def test_a_toml_syntax_error_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "m.toml"
    f.write_text('name = "x"\nram = = "32M"\n')
    rc, _, err = _run(["boot", "--machine-file", str(f)], capsys)
    assert rc == 2
    assert _one_error_line(err) == f"iommulab: error: {f}:2:7: TOML syntax error: Invalid value"


def test_a_json_syntax_error_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "m.json"
    f.write_text('{\n  "ram": "32M",\n  "devices": [,]\n}\n')
    rc, _, err = _run(["demo", "--machine-file", str(f)], capsys)
    assert rc == 2
    line = _one_error_line(err)
    assert line == (f"iommulab: error: {f}:3:15: JSON syntax error: Expecting value"), line


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            '[[iommus]]\nkind = "amd_vi"\n',
            "machine.iommus[0].kind: unknown IOMMU kind 'amd_vi' (known: mock, smmuv3, vtd)",
        ),
        (
            '[[devices]]\nkind = "nvme"\nbdf = "00:04.0"\n',
            "machine.devices[0].kind: unknown device kind 'nvme' (known: dsa, edu)",
        ),
    ],
)
def test_an_unknown_kind_lists_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, message: str
) -> None:
    f = tmp_path / "m.toml"
    f.write_text(f'ram = "32M"\n{entry}')
    rc, _, err = _run(["boot", "--machine-file", str(f)], capsys)
    assert rc == 2
    assert _one_error_line(err) == f"iommulab: error: {f}: {message}"


# --------------------------------------------------------------------------- scenarios

BROKEN = """\
def helper(n):
    return 10 // n


def scenario(kernel):
    return helper(0)
"""


def test_a_failing_scenario_names_the_users_frame_and_message(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    scen = scenario_file(BROKEN)
    rc, _, err = _run(["scenario", "run", str(scen), "--machine", "no-iommu"], capsys)
    assert rc == 1
    assert err.splitlines() == [
        "iommulab: error: scenario scen.py: ZeroDivisionError: integer division or modulo by zero",
        f'  File "{scen}", line 2, in helper',
        "    return 10 // n",
        "(run with --debug for the full traceback)",
    ]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_prints_the_full_traceback(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    scen = scenario_file(BROKEN)
    args = ["scenario", "run", str(scen), "--machine", "no-iommu"]
    argv = ["--debug", *args] if where == "before" else [*args, "--debug"]
    rc, _, err = _run(argv, capsys)
    assert rc == 1
    assert "Traceback (most recent call last):" in err
    assert "in run_scenario" in err  # the frames outside the user's file are shown too
    assert err.rstrip().endswith("ZeroDivisionError: integer division or modulo by zero")


def test_a_scenario_with_a_syntax_error_names_the_line(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    scen = scenario_file("def scenario(kernel):\n    return (1,\n\nx = ]\n")
    rc, _, err = _run(["scenario", "run", str(scen)], capsys)
    assert rc == 1
    assert _one_error_line(err).startswith("iommulab: error: scenario scen.py: SyntaxError: ")
    assert f'  File "{scen}", line ' in err


def test_an_unexpected_error_is_one_line_without_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(_args: object) -> int:
        raise RuntimeError("the model lost its clock")

    monkeypatch.setattr(cli, "cmd_boot", explode)
    rc, _, err = _run(["boot"], capsys)
    assert rc == 2
    assert _one_error_line(err) == "iommulab: error: RuntimeError: the model lost its clock"
    rc, _, err = _run(["--debug", "boot"], capsys)
    assert rc == 2 and "Traceback (most recent call last):" in err


# --------------------------------------------------------------------------- kernel command line


def test_an_unknown_kernel_parameter_is_logged_as_linux_does_and_warned(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = _run(["boot", "--machine", "no-iommu", "--cmdline", "iommu.stirct=1"], capsys)
    assert rc == 0
    text = 'Unknown kernel command line parameters "iommu.stirct=1", will be passed to user space.'
    assert re.search(r"^\[ *\d+\.\d+\] " + re.escape(text) + "$", out, re.M), out
    assert err.splitlines() == [f"iommulab: warning: {text}"]


def test_the_demo_warns_about_unknown_parameters_too(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["demo", "--cmdline", "iommu.stirct=1", "--sizes", "4K"], capsys)
    assert rc == 0
    assert 'iommulab: warning: Unknown kernel command line parameters "iommu.stirct=1"' in err


def test_a_trace_event_matching_nothing_is_warned(capsys: pytest.CaptureFixture[str]) -> None:
    cmdline = "trace_event=nosuch:*,iommu:*,hw_vtd:*"
    rc, out, err = _run(["boot", "--cmdline", cmdline], capsys)
    assert rc == 0
    assert re.search(r"\] Failed to enable trace event: nosuch:\*$", out, re.M), out
    assert "Failed to enable trace event: iommu" not in out
    assert "Failed to enable trace event: hw_vtd" not in out
    assert err.splitlines() == ["iommulab: warning: Failed to enable trace event: nosuch:*"]


def test_an_unknown_module_is_an_error_naming_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = _run(["boot", "--modules", "intel_iommu,nosuch"], capsys)
    assert rc == 2 and out == ""
    line = _one_error_line(err)
    assert line.startswith("iommulab: error: --modules: unknown kernel module(s) nosuch (known: ")
    known = line.partition("(known: ")[2].rstrip(")").split(", ")
    assert {"intel_iommu", "idxd"} <= set(known) and known == sorted(known)
    rc, _, err = _run(["demo", "--modules", "idxd,nosuch"], capsys)
    assert rc == 2 and "unknown kernel module(s) nosuch" in _one_error_line(err)


# --------------------------------------------------------------------------- dump


def test_dumping_a_device_that_does_not_exist_is_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = _run(["dump", "vtd", "--device", "00:1f.0"], capsys)
    assert rc == 2 and out == ""
    assert _one_error_line(err) == "iommulab: error: --device 00:1f.0: no such PCI device"


def test_dumping_a_pasid_that_does_not_exist_is_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = _run(["dump", "vtd", "--device", "00:02.0", "--pasid", "1"], capsys)
    assert rc == 0 and "00:02.0" in out  # idxd's system PASID is there
    rc, out, err = _run(["dump", "vtd", "--device", "00:02.0", "--pasid", "77"], capsys)
    assert rc == 2 and out == ""
    assert _one_error_line(err) == (
        "iommulab: error: --pasid 77: no PASID table entry of device 00:02.0"
    )
    rc, _, err = _run(["dump", "vtd", "--pasid", "77"], capsys)
    assert rc == 2
    assert _one_error_line(err) == "iommulab: error: --pasid 77: no PASID table entry"


# --------------------------------------------------------------------------- trace


def test_trace_exits_with_the_demos_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.json"
    rc, _, err = _run(
        ["trace", "demo", "--modules", "intel_iommu", "--format", "json", "-o", str(out)], capsys
    )
    assert rc == 1  # no idxd: nothing copied, the demo fails
    assert "the traced run failed (exit status 1)" in err
    assert json.loads(out.read_text())["traceEvents"]  # the trace is still written


def test_trace_exits_with_the_scenarios_status(
    scenario_file: ScenarioFile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = scenario_file(DSA_ENABLE)
    assert _run(["trace", str(ok), "-o", str(tmp_path / "ok.txt")], capsys)[0] == 0
    leaky = scenario_file(
        "from kernel.mm import kzalloc\ndef scenario(kernel):\n    kzalloc(100)\n", "leak.py"
    )
    rc, _, err = _run(["trace", str(leaky), "--machine", "no-iommu"], capsys)
    assert rc == 1 and "  leak: kmalloc 100 bytes at" in err
    broken = scenario_file(BROKEN, "broken.py")
    target = tmp_path / "broken.txt"
    rc, _, err = _run(["trace", str(broken), "--machine", "no-iommu", "-o", str(target)], capsys)
    assert rc == 1
    assert "iommulab: error: scenario broken.py: ZeroDivisionError" in err
    assert target.read_text().startswith("# tracer: nop\n")


# --------------------------------------------------------------------------- demo and docs


def test_the_smmuv3_demo_prints_what_the_vtd_demo_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = _run(["demo", "--machine", "smmuv3", "--sizes", "4K,64K"], capsys)
    assert rc == 0
    ste = re.search(r"smmu0: STE 0x10: config=stage-1 s1cdmax=\d+ s1dss=CD 0 cd_table=0x", out)
    assert ste, out
    cd1 = re.search(r"smmu0: CD 1 \(SSID 1\): asid=(\d+) ttb0=(0x[0-9a-f]+)", out)
    cd0 = re.search(r"smmu0: CD 0 \(no SSID\): asid=(\d+) ttb0=(0x[0-9a-f]+).*same tables", out)
    assert cd1 and cd0 and cd1.groups() == cd0.groups(), out
    tlb = re.search(r"smmu0: TLB hits (\d+), misses (\d+), stale 0; .* faults 0", out)
    assert tlb and int(tlb[2]) > 0, out


def test_the_quickstart_lists_every_preset() -> None:
    text = (ROOT / "docs" / "quickstart.md").read_text()
    sentence = re.search(r"`--machine` picks a preset \(([^)]*)\)", text)
    assert sentence, "quickstart.md no longer lists the presets"
    listed = set(re.findall(r"`([^`]+)`", sentence[1]))
    assert listed == set(PRESETS)


def test_an_os_error_names_the_file_and_debug_shows_value_errors_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreadable(_args: object) -> int:
        raise PermissionError(13, "Permission denied", "/dev/iommu0")

    monkeypatch.setattr(cli, "cmd_boot", unreadable)
    rc, _, err = _run(["boot"], capsys)
    assert rc == 2
    assert _one_error_line(err) == "iommulab: error: /dev/iommu0: Permission denied"
    rc, _, err = _run(["--debug", "demo", "--machine-file", str(tmp_path / "none.toml")], capsys)
    assert rc == 2 and "Traceback (most recent call last):" in err
    assert err.rstrip().endswith("cannot read the machine file (No such file or directory)")


def test_dumping_a_device_outside_every_units_scope_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "m.toml"
    f.write_text(
        'ram = "64M"\n[[iommus]]\nkind = "vtd"\nname = "dmar0"\nscope = ["00:02.0"]\n'
        '[[devices]]\nkind = "dsa"\nbdf = "00:02.0"\n[[devices]]\nkind = "edu"\nbdf = "00:03.0"\n'
    )
    rc, out, err = _run(["dump", "vtd", "--machine-file", str(f), "--device", "00:03.0"], capsys)
    assert rc == 2 and out == ""
    assert _one_error_line(err) == (
        "iommulab: error: --device 00:03.0: no context entry (not translated by VT-d)"
    )
