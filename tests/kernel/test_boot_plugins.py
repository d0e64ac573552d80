"""Boot sequence, command line handling and module loading through pluggy."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import pytest
from pluggy import PluginValidationError

from hw.machine import Machine
from kernel import errno as errno_module
from kernel.boot import boot, current_kernel
from kernel.errno import ENODEV
from kernel.module import KernelModule
from kernel.plugin import Hooks, make_plugin_manager
from tests.kernel import fake_module

GROUP = "iommulab.modules"


def ep(name: str, value: str) -> md.EntryPoint:
    return md.EntryPoint(name=name, value=value, group=GROUP)


def test_boot_prints_the_banner_and_enumerates_pci(toy_machine: Machine) -> None:
    k = boot(toy_machine, "loglevel=7", entry_points=False)
    log = k.dmesg()
    assert "Command line: loglevel=7" in log
    assert "pci 0000:00:03.0: [1234:11e8] type 00" in log
    assert "boot complete" in log
    assert current_kernel() is k
    k.shutdown()
    assert "reboot: Power down" in k.dmesg()


def test_unknown_cmdline_parameter_is_reported_and_boot_continues(toy_machine: Machine) -> None:
    k = boot(toy_machine, "bogus=1 flag", entry_points=False)
    assert (
        'Unknown kernel command line parameters "bogus=1 flag", will be passed to user space.'
        in k.dmesg()
    )
    assert k.up
    k.shutdown()


def test_malformed_parameter_value_is_reported(toy_machine: Machine) -> None:
    k = boot(toy_machine, "loglevel=lots", entry_points=False)
    assert "Malformed early option loglevel" in k.dmesg()
    k.shutdown()


def test_third_party_module_from_an_entry_point_is_loaded_and_initialised(
    toy_machine: Machine,
) -> None:
    fake_module.inits.clear()
    k = boot(toy_machine, "fake.answer=42", entry_points=[ep("fake", "tests.kernel.fake_module")])
    assert fake_module.inits == [42]
    assert "fake: hello, answer=42" in k.dmesg()
    assert [p.name for p in k.plugins.report.loaded if p.origin == "entry-point"] == ["fake"]
    k.shutdown()


def test_broken_entry_point_is_reported_and_skipped(toy_machine: Machine) -> None:
    k = boot(
        toy_machine,
        "",
        entry_points=[
            ep("broken", "tests.kernel.no_such_module"),
            ep("fake", "tests.kernel.fake_module"),
        ],
    )
    assert [n for n, _ in k.plugins.report.failed] == ["broken"]
    assert "module broken failed to load: ModuleNotFoundError" in k.dmesg()
    assert k.plugins.get_plugin("fake") is not None
    k.shutdown()


def test_blocked_module_is_not_loaded(toy_machine: Machine) -> None:
    fake_module.inits.clear()
    k = boot(
        toy_machine, "module_blacklist=fake", entry_points=[ep("fake", "tests.kernel.fake_module")]
    )
    assert k.plugins.get_plugin("fake") is None
    assert "module fake blacklisted" in k.dmesg()
    assert fake_module.inits == []
    k.shutdown()


def test_modules_argument_selects_which_modules_initialise(toy_machine: Machine) -> None:
    fake_module.inits.clear()
    k = boot(toy_machine, "", modules=[], entry_points=[ep("fake", "tests.kernel.fake_module")])
    assert fake_module.inits == [] and k.loaded == []
    k.shutdown()


def test_typo_in_hook_implementation_is_rejected_by_check_pending() -> None:
    with pytest.raises(PluginValidationError, match="iommulab_modulez"):
        make_plugin_manager(builtins=(), entry_points=[ep("typo", "tests.kernel.typo_module")])


def test_failing_module_init_is_logged_and_boot_continues(toy_machine: Machine) -> None:
    class Failing:
        @staticmethod
        def iommulab_modules() -> list[KernelModule]:
            def init() -> None:
                raise ENODEV("no hardware")

            return [KernelModule("failing", init=init)]

    from kernel.hookspecs import hookimpl

    Failing.iommulab_modules = hookimpl(Failing.iommulab_modules)  # type: ignore[method-assign]
    k = boot(toy_machine, "", entry_points=False, extra_plugins=[("failing", Failing)])
    assert "failing: module init failed with error -19" in k.dmesg()
    assert "failing" in k.failed_modules and k.up
    k.shutdown()


def test_hooks_facade_rejects_bad_hook_results() -> None:
    class Bad:
        @staticmethod
        def iommulab_modules() -> object:
            return "not a list"

    from kernel.hookspecs import hookimpl

    Bad.iommulab_modules = hookimpl(Bad.iommulab_modules)  # type: ignore[method-assign]
    pm = make_plugin_manager(builtins=(), entry_points=False, extra=[("bad", Bad)])
    with pytest.raises(TypeError, match="must return a list"):
        Hooks(pm).modules()


def test_duplicate_module_names_are_an_error() -> None:
    pm = make_plugin_manager(builtins=(), entry_points=False, extra=[("a", fake_module)])
    pm.register(type("Twin", (), {"iommulab_modules": fake_module.iommulab_modules}), name="b")
    with pytest.raises(ValueError, match="provided twice: fake"):
        pm.hooks.modules()


def test_builtin_modules_are_listed_with_their_distribution() -> None:
    pm = make_plugin_manager(entry_points=False)
    assert {(p.name, p.distribution) for p in pm.report.loaded} >= {
        ("intel_iommu", "iommulab"),
        ("idxd", "iommulab"),
    }


def test_broken_builtin_is_reported() -> None:
    pm = make_plugin_manager(builtins=("drivers.nonexistent",), entry_points=False)
    assert pm.report.failed[0][0] == "nonexistent"


def test_activating_a_kernel_restores_its_task_stack(toy_machine: Machine) -> None:
    from hw.machine import build_machine
    from kernel.mm import current_stack, object_is_on_stack
    from tests.conftest import TOY

    first = boot(toy_machine, "", entry_points=False)
    buf = current_stack().alloca(32)
    second = boot(build_machine(TOY), "", entry_points=False)
    assert current_stack() is second.stack
    first.activate()
    assert current_stack() is first.stack
    assert object_is_on_stack(buf)
    second.shutdown()
    first.shutdown()


def test_broken_module_entry_points_name_their_distribution(
    toy_machine: Machine, tmp_path: Path
) -> None:
    """Import error, an object with no hook, and a name a built-in or another
    distribution has taken: each reported with the distribution and skipped. (The
    same module under the same name twice is no conflict: a test's
    ``iommulab_modules`` marker may name a module its distribution also registers.)"""

    def dist(name: str, entries: dict[str, str]) -> md.Distribution:
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = [f"[{GROUP}]", *(f"{k} = {v}" for k, v in entries.items())]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        return md.PathDistribution(info)

    good = dist("vendor_drv", {"fake": "tests.kernel.fake_module"})
    bad = dist(
        "broken_drv",
        {
            "gone": "tests.kernel.no_such_module",
            "nohooks": "kernel.errno",
            "idxd": "tests.kernel.fake_module",
            "fake": "drivers.idxd",
        },
    )
    k = boot(toy_machine, "", entry_points=[*good.entry_points, *bad.entry_points])
    where = "(iommulab.modules entry point of broken_drv 1.0); skipped"
    assert dict(k.plugins.report.failed) == {
        "gone": f"ModuleNotFoundError: No module named 'tests.kernel.no_such_module' {where}",
        "nohooks": f"kernel.errno is {errno_module!r}, which implements no iommulab_* hook {where}",
        "idxd": f"module name 'idxd' is already iommulab's {where}",
        "fake": f"module name 'fake' is already vendor_drv 1.0's {where}",
    }
    assert "module nohooks failed to load: kernel.errno is <module" in k.dmesg()
    loaded = {p.name: p.distribution for p in k.plugins.report.loaded}
    assert loaded["fake"] == "vendor_drv" and "gone" not in loaded
    assert k.up and "fake" in [m.name for m in k.modules]
    k.shutdown()
