"""Fixtures for the front-door tests: scenario files, and kernels on the mock IOMMU
(so the IOMMU core's dump targets have groups, domains and PASIDs to show)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hw import machine as hw_machine
from kernel.boot import Kernel
from tests.kernel.conftest import boot_kernel

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
def mock_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Kernel]]:
    """Boot kernels on a machine with the mock IOMMU, an edu and a PASID-capable edu."""
    monkeypatch.setitem(hw_machine.DEVICE_KINDS, "pasid_edu", "tests.kernel.iommu.mock_hw:PasidEdu")
    kernels: list[Kernel] = []

    def make(cmdline: str = "") -> Kernel:
        k = boot_kernel(cmdline)
        kernels.append(k)
        return k

    yield make
    for k in kernels:
        k.shutdown()
