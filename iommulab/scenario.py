"""User scenarios: ``iommulab scenario run FILE.py`` and the ``--scenario`` of ``dump``/``trace``.

A scenario file is a Python module that defines ``scenario(kernel)``, a function
taking the booted :class:`kernel.boot.Kernel` (it is the current kernel, so the
module-level kernel APIs — ``kzalloc``, ``dma_map_single``, ``pci_get_devices`` —
act on it). Two optional module constants choose how it boots when the command
line does not say: ``MACHINE`` (a preset name) and ``CMDLINE``::

    MACHINE = "default"
    CMDLINE = "iommu.strict=0"

    def scenario(kernel):
        ...

The scenario's directory is on ``sys.path`` while it loads, so it can import
helper modules next to it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from attrs import frozen

from kernel.boot import Kernel

ScenarioFn = Callable[[Kernel], object]


@frozen
class Scenario:
    name: str
    run: ScenarioFn
    machine: str | None = None
    cmdline: str | None = None


def load_scenario(path: str | Path) -> Scenario:
    """Import ``path`` and return its ``scenario`` function with its boot defaults."""
    p = Path(path)
    if p.suffix != ".py" or not p.is_file():
        raise ValueError(f"{p}: a scenario is an existing .py file defining scenario(kernel)")
    modname = f"iommulab_scenario_{p.stem}"
    spec = importlib.util.spec_from_file_location(modname, p)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(p.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(p.parent.resolve()))
    fn = getattr(module, "scenario", None)
    if not callable(fn):
        raise ValueError(f"{p}: defines no function scenario(kernel)")
    machine = getattr(module, "MACHINE", None)
    cmdline = getattr(module, "CMDLINE", None)
    return Scenario(
        p.name,
        fn,
        str(machine) if machine is not None else None,
        str(cmdline) if cmdline is not None else None,
    )


def run_scenario(kernel: Kernel, scenario: Scenario) -> object:
    """Run ``scenario`` on ``kernel`` (made current first); returns what it returned."""
    kernel.activate()
    return scenario.run(kernel)
