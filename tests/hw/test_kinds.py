"""Out-of-tree hardware: kinds from the ``iommulab.hw`` entry-point group.

The distributions here are real ``importlib.metadata`` distributions (a
``.dist-info`` directory with METADATA and entry_points.txt, which is what an
install leaves behind), made in a temporary directory: nothing is installed.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import pytest

from hw.kinds import ENTRY_POINT_GROUP, IOMMU_KINDS, discover
from hw.machine import Machine, MachineSpec, build_machine
from hw.mock_iommu import MockIommuUnit
from iommulab import cli
from tests.kernel.iommu.mock_hw import PasidEdu

MACHINE = {
    "name": "vendor",
    "ram": "32M",
    "iommus": [{"kind": "vendor_iommu", "name": "v0", "scope": "all"}],
    "devices": [{"kind": "vendor_edu", "bdf": "00:05.0"}],
}
GOOD = {
    "vendor_iommu": "hw.mock_iommu:MockIommuUnit",
    "vendor_edu": "tests.kernel.iommu.mock_hw:PasidEdu",
}


def make_dist(root: Path, name: str, entry_points: dict[str, str]) -> md.Distribution:
    """Write ``name``'s metadata under ``root`` and return it as importlib sees it."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return md.PathDistribution(info)


def test_a_distributions_kinds_build_a_machine(tmp_path: Path) -> None:
    dist = make_dist(tmp_path, "vendor-hw", GOOD)
    kinds = discover(dist.entry_points)
    assert kinds.problems == ()
    assert kinds.origins == {"vendor_iommu": "vendor-hw 1.0", "vendor_edu": "vendor-hw 1.0"}
    m = build_machine(MACHINE, kinds)
    assert isinstance(m.iommus["v0"], MockIommuUnit)
    (fn,) = m.functions.values()
    assert type(fn) is PasidEdu
    assert m.hw_problems == ()


def test_without_the_distribution_the_kind_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown device kind 'vendor_edu' \\(known: dsa, edu\\)"):
        build_machine(MACHINE, discover(()))


def test_an_installed_distribution_is_found_when_a_machine_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    make_dist(site, "vendor-hw", GOOD)
    with pytest.raises(ValueError, match="unknown device kind 'vendor_edu'"):
        build_machine(MACHINE)
    monkeypatch.syspath_prepend(str(site))
    assert isinstance(build_machine(MACHINE).iommus["v0"], MockIommuUnit)
    # ... and from a machine file at the command line, listed by `iommulab plugins`
    f = tmp_path / "vendor.toml"
    f.write_text(
        'ram = "32M"\n[[iommus]]\nkind = "vendor_iommu"\nname = "v0"\n'
        '[[devices]]\nkind = "vendor_edu"\nbdf = "00:05.0"\n'
    )
    assert cli.main(["boot", "--machine-file", str(f), "--modules", "idxd"]) == 0
    out, err = capsys.readouterr()
    assert "pci 0000:00:05.0" in out and err == ""
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "IOMMU kind 'vendor_iommu': vendor-hw 1.0" in out
    assert "IOMMU kind 'vtd': built-in" in out


def test_broken_entry_points_are_reported_with_their_distribution_and_skipped(
    tmp_path: Path,
) -> None:
    broken = make_dist(
        tmp_path,
        "broken-hw",
        {
            "gone": "vendor_nosuch_module:Unit",
            "notamodel": "hw.kinds:discover",
            "vtd": "hw.mock_iommu:MockIommuUnit",
        },
    )
    good = make_dist(tmp_path, "vendor-hw", GOOD)
    twin = make_dist(tmp_path, "twin-hw", {"vendor_edu": "hw.edu:EduDevice"})
    kinds = discover([*good.entry_points, *broken.entry_points, *twin.entry_points])
    assert kinds.problems == (
        "iommulab.hw entry point 'gone' of broken-hw 1.0: cannot load vendor_nosuch_module:Unit "
        "(ModuleNotFoundError: No module named 'vendor_nosuch_module'); skipped",
        "iommulab.hw entry point 'notamodel' of broken-hw 1.0: hw.kinds:discover is "
        f"{discover!r}, neither a PciFunction subclass nor an IOMMU model class "
        "(attach, mmio_read, mmio_write, translate); skipped",
        "iommulab.hw entry point 'vtd' of broken-hw 1.0: kind 'vtd' is already "
        "a built-in model's; skipped",
        "iommulab.hw entry point 'vendor_edu' of twin-hw 1.0: kind 'vendor_edu' is already "
        "vendor-hw 1.0's; skipped",
    )
    assert set(kinds.iommus) == {"vtd", "smmuv3", "mock", "vendor_iommu"}
    assert kinds.devices["vendor_edu"] is PasidEdu
    # the rest of the machine builds, and the machine carries the report
    m = build_machine(MACHINE, kinds)
    assert type(m.iommus["v0"]) is MockIommuUnit
    assert m.hw_problems == kinds.problems


def test_broken_entry_points_are_warned_at_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_dist(tmp_path, "broken-hw", {"gone": "vendor_nosuch_module:Unit"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["boot", "--machine", "no-iommu"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("iommulab: warning: iommulab.hw entry point 'gone' of broken-hw 1.0: ")
    assert cli.main(["plugins"]) == 0
    assert "FAILED iommulab.hw entry point 'gone' of broken-hw 1.0" in capsys.readouterr().out


def test_a_class_of_neither_shape_and_unloadable_builtins_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = make_dist(tmp_path, "odd-hw", {"clock": "hw.clock:Clock"})
    kinds = discover(dist.entry_points)
    assert "odd-hw 1.0: hw.clock:Clock is <class 'hw.clock.Clock'>, neither" in kinds.problems[0]
    monkeypatch.setitem(IOMMU_KINDS, "gone", "hw.vendor_nosuch:Unit")
    desc = {"ram": "32M", "iommus": [{"kind": "gone", "name": "g0"}]}
    with pytest.raises(ValueError, match=r"iommu\.kind: model .gone. is not available"):
        build_machine(desc)


def test_a_spec_validated_with_other_kinds_names_what_this_machine_lacks(tmp_path: Path) -> None:
    spec = MachineSpec.from_dict(MACHINE, discover(make_dist(tmp_path, "v", GOOD).entry_points))
    with pytest.raises(
        ValueError, match=r"device.kind: unknown kind 'vendor_edu' \(known: dsa, edu\)"
    ):
        Machine(spec, discover(()))
