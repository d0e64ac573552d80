"""Fixtures for the VT-d driver tests: the ``default`` machine (VT-d unit dmar0 over a
DSA at 00:02.0 and an edu device at 00:03.0), with unit capabilities overridable,
booted with the ``intel_iommu`` plugin only.

Every kernel is checked at teardown by the pytest plugin's checker
(``iommulab_checks``): no WARN the test did not take, no leaked allocation after
shutdown, and no use of a stale translation (the model also runs with
``strict_stale`` unless a test asks for the event instead of the exception).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from attrs import define

from hw.bus import DmaFault, PciAddr
from hw.machine import Machine, MachineSpec
from hw.vtd import VtdUnit
from iommulab.presets import DSA_BDF, EDU_BDF, PRESETS
from kernel.boot import Kernel, boot
from kernel.pci import PciDev, pci_enable_device, pci_get_devices, pci_set_master

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations, KernelChecks


def vtd_spec(config: dict[str, Any] | None = None, scope: Any = "all") -> MachineSpec:
    """The ``default`` preset (with 64 MiB of RAM, which is plenty and boots faster)
    with the VT-d unit's ``config`` (and scope) replaced."""
    d = copy.deepcopy(PRESETS["default"])
    d["ram"] = "64M"
    unit = d["iommus"][0]
    unit["config"] = {"strict_stale": True, **(config or {})}
    unit["scope"] = scope
    return MachineSpec.from_dict(d)


def boot_vtd(
    cmdline: str = "", config: dict[str, Any] | None = None, scope: Any = "all"
) -> tuple[Kernel, Machine]:
    m = Machine(vtd_spec(config, scope))
    k = boot(m, cmdline, builtins=("drivers.intel_iommu",), entry_points=False)
    return k, m


def pdev(bdf: str) -> PciDev:
    dev = next(d for d in pci_get_devices() if str(d.addr) == bdf)
    if not dev.enable_cnt:
        pci_enable_device(dev)
        pci_set_master(dev)
    return dev


@define(eq=False)
class Vtd:
    """One booted VT-d kernel and its machine."""

    kernel: Kernel
    machine: Machine

    @property
    def unit(self) -> VtdUnit:
        unit = self.machine.iommus["dmar0"]
        assert isinstance(unit, VtdUnit)
        return unit

    @property
    def dsa(self) -> PciDev:
        return pdev(DSA_BDF)

    @property
    def edu(self) -> PciDev:
        return pdev(EDU_BDF)

    def dma_read(
        self, dev: PciDev, iova: int, size: int, pasid: int | None = None
    ) -> tuple[bytes, DmaFault | None]:
        """The device reads ``size`` bytes at ``iova`` (tagged with ``pasid``)."""
        fn = self.machine.functions[PciAddr.parse(str(dev.addr))]
        data, fault = fn.dma_read(pasid, False, iova, size)
        return bytes(data), fault

    def dma_write(
        self, dev: PciDev, iova: int, data: bytes, pasid: int | None = None
    ) -> DmaFault | None:
        fn = self.machine.functions[PciAddr.parse(str(dev.addr))]
        _, fault = fn.dma_write(pasid, False, iova, data)
        return fault

    def take_warnings(self) -> list[str]:
        msgs = [w.message for w in self.kernel.warn.warnings]
        self.kernel.warn.warnings.clear()
        return msgs


VtdFactory = Callable[..., Vtd]


@pytest.fixture
def make_vtd(iommulab_checks: KernelChecks, iommulab_expect: Expectations) -> VtdFactory:
    """Boot VT-d kernels, checked at teardown by the pytest plugin's checker;
    ``allow_stale`` declares the stale translation use the test provokes."""

    def make(
        cmdline: str = "",
        config: dict[str, Any] | None = None,
        scope: Any = "all",
        allow_stale: bool = False,
    ) -> Vtd:
        k, m = boot_vtd(cmdline, config, scope)
        iommulab_checks.track(k)
        if allow_stale:
            iommulab_expect.stale()
        return Vtd(k, m)

    return make


@pytest.fixture
def vtd(make_vtd: VtdFactory) -> Vtd:
    """The default machine booted with an empty command line."""
    return make_vtd()
