"""``iommulab scenario run FILE.py``: a user's function on the booted kernel, then health checks."""

from __future__ import annotations

import pytest

from iommulab import cli
from iommulab.scenario import load_scenario
from tests.iommulab.conftest import DSA_ENABLE, ScenarioFile


def test_a_healthy_scenario_prints_its_result_and_ok(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["scenario", "run", str(scenario_file(DSA_ENABLE))]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "enabled",
        "scen.py: ok (0 WARN, 0 stale translation(s), 0 DMA-API error(s), 0 leaked allocation(s))",
    ]


def test_a_scenario_that_warns_fails(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    scen = scenario_file(
        "from kernel.bug import WARN_ON\ndef scenario(kernel):\n    WARN_ON(True, 'oops')\n"
    )
    assert cli.main(["scenario", "run", str(scen)]) == 1
    captured = capsys.readouterr()
    assert "scen.py: FAILED (1 WARN," in captured.out
    assert "  warn: oops" in captured.err


def test_a_scenario_that_leaks_fails(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    scen = scenario_file("from kernel.mm import kzalloc\ndef scenario(kernel):\n    kzalloc(100)\n")
    assert cli.main(["scenario", "run", str(scen), "--machine", "no-iommu"]) == 1
    assert "  leak: kmalloc 100 bytes at" in capsys.readouterr().err


def test_machine_and_cmdline_come_from_the_file_unless_given(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    scen = scenario_file(
        'MACHINE = "no-iommu"\nCMDLINE = "loglevel=6"\n'
        "def scenario(kernel):\n"
        "    return f'{kernel.machine.spec.name} {kernel.param(\"loglevel\")}'\n"
    )
    assert cli.main(["scenario", "run", str(scen)]) == 0
    assert cli.main(["scenario", "run", str(scen), "--machine", "default", "--cmdline", ""]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "no-iommu 6" and lines[2] == "default 7"


def test_dmesg_option_prints_the_kernel_log(
    scenario_file: ScenarioFile, capsys: pytest.CaptureFixture[str]
) -> None:
    scen = scenario_file("def scenario(kernel):\n    pass\n")
    assert cli.main(["scenario", "run", str(scen), "--dmesg"]) == 0
    assert "reboot: Power down" in capsys.readouterr().out


def test_a_scenario_imports_modules_next_to_it(scenario_file: ScenarioFile) -> None:
    scenario_file("VALUE = 42\n", "helper_for_scen.py")
    scen = load_scenario(
        scenario_file(
            "import helper_for_scen\ndef scenario(kernel):\n    return helper_for_scen.VALUE\n"
        )
    )
    assert scen.run.__name__ == "scenario"
    assert (scen.machine, scen.cmdline) == (None, None)


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("scen.txt", "", "a scenario is an existing .py file"),
        ("scen.py", "x = 1\n", "defines no function scenario(kernel)"),
    ],
)
def test_bad_scenario_files_are_clear_errors(
    scenario_file: ScenarioFile,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    error: str,
) -> None:
    assert cli.main(["scenario", "run", str(scenario_file(text, name))]) == 2
    assert error in capsys.readouterr().err
