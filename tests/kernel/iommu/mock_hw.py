"""A PCI test function for the IOMMU core tests, and test-side access to the mock
IOMMU model (:mod:`hw.mock_iommu`) of a booted kernel's machine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hw.bus import PciAddr
from hw.edu import EduDevice
from hw.machine import Machine
from hw.mock_iommu import MockIommuUnit
from kernel.boot import current_kernel
from kernel.pci import PciDev


def mock_unit(name: str = "mock0") -> MockIommuUnit:
    """The running kernel's mock IOMMU model ``name``."""
    m = current_kernel().machine
    assert isinstance(m, Machine)
    unit = m.iommus[name]
    assert isinstance(unit, MockIommuUnit)
    return unit


def hw_entry(dev: PciDev, pasid: int | None = None, unit: str = "mock0") -> int:
    """The translation entry the hardware finds in RAM for ``dev`` (at ``pasid``);
    0 when DMA is blocked."""
    return mock_unit(unit).entry(dev.rid, pasid)


class PasidEdu(EduDevice):
    """An edu device with a PASID capability (``pasid_width``), a chosen PCIe port
    type (``port_type``: 9 = RC integrated endpoint, 0 = endpoint), optional ACS and
    the multifunction bit, for PASID and grouping tests."""

    def __init__(self, addr: PciAddr, config: Mapping[str, Any] | None = None) -> None:
        cfg = dict(config or {})
        self._port_type = int(cfg.pop("port_type", 9))
        width = int(cfg.pop("pasid_width", 8))
        acs = bool(cfg.pop("acs", False))
        multifunction = bool(cfg.pop("multifunction", False))
        super().__init__(addr, cfg)
        if width:
            self.add_pasid_cap(width)
        if acs:
            self.add_acs_cap()
            self.config[self.find_ext_cap(0x0D) + 6] = 0x1F
        if multifunction:
            self.config[0x0E] |= 0x80

    def add_pcie_cap(self, port_type: int = 9) -> int:
        return super().add_pcie_cap(self._port_type)
