"""``iommulab scenario run FILE.py``: a user's function on the booted kernel, then health checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

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


SUPERPAGE_THEN_4K = """
from kernel.iommu.iommu import iommu_domain_free, iommu_paging_domain_alloc
from kernel.iommu.iommu_map import iommu_map, iommu_unmap
from kernel.mm import GFP_KERNEL, __GFP_ZERO, __free_pages, alloc_pages
from kernel.pci import pci_get_devices


def scenario(kernel):
    edu = next(d for d in pci_get_devices() if d.vendor == 0x1234)
    dom = iommu_paging_domain_alloc(edu)
    page = alloc_pages(GFP_KERNEL | __GFP_ZERO, 9)
    iommu_map(dom, 0x4000_0000, page.phys, 2 << 20, 3, GFP_KERNEL)
    iommu_map(dom, 0x4000_5000, 0x300000, 4096, 3, GFP_KERNEL)
    iommu_unmap(dom, 0x4000_0000, 2 << 20)
    iommu_domain_free(dom)
    __free_pages(page, 9)
    return hex(page.phys)
"""


def test_a_page_table_ownership_error_fails_with_its_report_and_json(
    scenario_file: ScenarioFile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "findings.json"
    scen = scenario_file(SUPERPAGE_THEN_4K)
    assert cli.main(["scenario", "run", str(scen), "--findings-json", str(out)]) == 1
    captured = capsys.readouterr()
    data = captured.out.splitlines()[0]
    assert "1 page-table ownership error(s)" in captured.out
    assert f"  pt-owner: IOMMU page-table entry written into data page {data} (" in captured.err
    chain = re.findall(r"^ +(\S+) \(\S+:\d+\)$", captured.err, re.M)
    assert chain[0] == "__domain_mapping" and chain[-2:] == ["scenario", "run_scenario"]
    assert "iommu_map" in chain
    [doc] = json.loads(out.read_text())
    assert doc["check"] == "pt-owner" and doc["call_chain"][-2].startswith("scenario (")
