"""Fixtures for the front-door tests: scenario files, and kernels on the mock IOMMU
(so the IOMMU core's dump targets have groups, domains and PASIDs to show)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hw import machine as hw_machine
from kernel.boot import Kernel
from tests.kernel.conftest import boot_kernel

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks


ScenarioFile = Callable[[str], Path]

DSA_ENABLE = '''
from kernel.delay import udelay
from kernel.pci import pci_enable_device, pci_get_devices, pci_ioremap_bar

MACHINE = "default"
CMDLINE = "module_blacklist=idxd"  # this scenario is the DSA's only driver


def scenario(kernel):
    """Enable the DSA device by hand: one hw_dsa:command event."""
    dsa = next(d for d in pci_get_devices() if d.vendor == 0x8086)
    pci_enable_device(dsa)
    pci_ioremap_bar(dsa, 0).writel(1 << 20, 0xA0)
    udelay(10)
    return "enabled"
'''


@pytest.fixture
def scenario_file(tmp_path: Path) -> ScenarioFile:
    """Write a scenario module and return its path."""

    def write(text: str, name: str = "scen.py") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


@pytest.fixture
def mock_kernel(
    monkeypatch: pytest.MonkeyPatch, iommulab_checks: KernelChecks
) -> Callable[[str], Kernel]:
    """Boot kernels on a machine with the mock IOMMU, an edu and a PASID-capable edu,
    checked at teardown by the pytest plugin's checker."""
    monkeypatch.setitem(hw_machine.DEVICE_KINDS, "pasid_edu", "tests.kernel.iommu.mock_hw:PasidEdu")

    def make(cmdline: str = "") -> Kernel:
        return iommulab_checks.track(boot_kernel(cmdline))

    return make
