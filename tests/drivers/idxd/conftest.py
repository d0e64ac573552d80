"""Fixtures for the idxd driver tests: machines (dma-direct, the mock IOMMU, and
VT-d presets), and booted kernels with the idxd module, checked at teardown by the
pytest plugin's checker (``iommulab_checks``): no unexpected WARN or stale
translation use, and after shutdown no allocation left that boot did not leave."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

import drivers.idxd as idxd_plugin
from drivers.idxd.idxd import IdxdDevice
from drivers.idxd.init import idxd_find
from hw.dsa.device import DsaDevice
from hw.machine import Machine, build_machine
from iommulab.presets import DSA_BDF, PRESETS
from kernel.boot import Kernel, boot
from kernel.hookspecs import hookimpl
from kernel.module import InitLevel, KernelModule
from kernel.pci import pci_enable_pasid, pci_get_devices, pci_pasid_features
from tests.kernel.iommu import mock_iommu

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks


class MockPasidEnable:
    """What a vendor driver's ``probe_finalize`` does that the mock vendor leaves
    out: enable the PCI PASID capability with the features the device has."""

    @staticmethod
    @hookimpl
    def iommulab_modules() -> Sequence[KernelModule]:
        def init() -> None:
            for pdev in pci_get_devices():
                if pdev.pasid_cap and not pdev.pasid_enabled:
                    pci_enable_pasid(pdev, pci_pasid_features(pdev))

        return [KernelModule("mock_pasid_enable", init=init, level=InitLevel.ROOTFS)]


def mock_spec(dsa: dict[str, Any] | None = None, pasid_width: int = 20) -> dict[str, Any]:
    return {
        "name": "mock-dsa",
        "ram": "256M",
        "devices": [{"kind": "dsa", "bdf": DSA_BDF, "config": dsa or {}}],
        "iommus": [
            {
                "kind": "mock",
                "name": "mock0",
                "scope": "all",
                "config": {"pasid_width": pasid_width},
            }
        ],
    }


def direct_spec(dsa: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = dict(PRESETS["no-iommu-dsa"])
    spec["devices"] = [{"kind": "dsa", "bdf": DSA_BDF, "config": dsa or {}}]
    return spec


def boot_idxd(spec: dict[str, Any], cmdline: str = "", with_intel: bool = False) -> Kernel:
    """Boot ``spec`` with idxd (and the mock vendor when the machine has one)."""
    plugins: list[tuple[str, object]] = [("idxd", idxd_plugin)]
    builtins: tuple[str, ...] = ()
    if any(u.get("kind") == "mock" for u in spec.get("iommus", [])):
        plugins += [("mock_iommu", mock_iommu), ("mock_pasid_enable", MockPasidEnable)]
    if with_intel:
        builtins = ("drivers.intel_iommu",)
    return boot(
        build_machine(spec), cmdline, builtins=builtins, entry_points=False, extra_plugins=plugins
    )


def dsa_hw(k: Kernel) -> DsaDevice:
    m = k.machine
    assert isinstance(m, Machine)
    return next(f for f in m.functions.values() if isinstance(f, DsaDevice))


Boot = Callable[..., Kernel]


@pytest.fixture
def make_kernel(iommulab_checks: KernelChecks) -> Boot:
    """Boot kernels, checked at teardown by the pytest plugin's checker."""

    def make(spec: dict[str, Any] | None = None, cmdline: str = "", **kw: Any) -> Kernel:
        k = boot_idxd(spec if spec is not None else direct_spec(), cmdline, **kw)
        return iommulab_checks.track(k)

    return make


def take_warnings(k: Kernel) -> list[str]:
    msgs = [w.message for w in k.warn.warnings]
    k.warn.warnings.clear()
    return msgs


def dsa0() -> IdxdDevice:
    return idxd_find("dsa0")
