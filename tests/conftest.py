"""Shared fixtures: a toy machine and a kernel booted on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import Phase, settings

from hw.machine import Machine, build_machine
from kernel.boot import Kernel, boot

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
def toy_kernel(toy_machine: Machine) -> Iterator[Kernel]:
    k = boot(toy_machine, "", entry_points=False)
    yield k
    k.shutdown()
