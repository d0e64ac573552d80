"""Shared fixtures: a toy machine and a kernel booted on it. Every suite checks its
kernels at teardown with the pytest plugin's one checker (``iommulab_checks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import Phase, settings

from hw.machine import Machine, build_machine
from kernel.boot import Kernel, boot

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks


pytest_plugins = ["iommulab.pytest_plugin"]

# Hypothesis' explain phase installs its own tracer, which would cut coverage
# measurement for every later test in the same worker; it is not needed here.
settings.register_profile(
    "iommulab", phases=[p for p in Phase if p is not Phase.explain], deadline=None
)
settings.load_profile("iommulab")

TOY = {"name": "toy", "ram": "64M", "devices": [{"kind": "edu", "bdf": "00:03.0"}]}


@pytest.fixture
def toy_machine() -> Machine:
    return build_machine(TOY)


@pytest.fixture
def toy_kernel(toy_machine: Machine, iommulab_checks: KernelChecks) -> Kernel:
    return iommulab_checks.track(boot(toy_machine, "", entry_points=False))
