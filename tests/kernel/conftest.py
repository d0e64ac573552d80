"""Fixtures for the IOMMU core and DMA API tests: machines with the mock IOMMU
model, and booted kernels with the mock vendor plugin, checked at teardown by the
pytest plugin's checker (``iommulab_checks``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from hw import machine as hw_machine
from hw.machine import build_machine
from kernel.boot import Kernel, boot, current_kernel
from kernel.mm import GFP_KERNEL, kfree, kmalloc
from kernel.pci import PciDev, pci_enable_device, pci_get_devices, pci_set_master
from tests.kernel.iommu import mock_iommu

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks


EDU_BDF = "0000:00:03.0"
PASID_BDF = "0000:00:04.0"
PASID_EDU_KIND = {"pasid_edu": "tests.kernel.iommu.mock_hw:PasidEdu"}
"""The test-only PASID-capable edu device kind (also registered while a fail_nth
sweep module counts its points at collection time, with ``mock.patch.dict``)."""


@pytest.fixture(autouse=True)
def _mock_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind, where in PASID_EDU_KIND.items():
        monkeypatch.setitem(hw_machine.DEVICE_KINDS, kind, where)


def machine_spec(
    iommu: bool = True,
    pasid_width: int = 20,
    devices: list[dict[str, Any]] | None = None,
    ram: str = "64M",
) -> dict[str, Any]:
    devs = (
        devices
        if devices is not None
        else [
            {"kind": "edu", "bdf": EDU_BDF},
            {"kind": "pasid_edu", "bdf": PASID_BDF, "config": {"pasid_width": 8}},
        ]
    )
    spec: dict[str, Any] = {"name": "test", "ram": ram, "devices": devs}
    if iommu:
        spec["iommus"] = [
            {
                "kind": "mock",
                "name": "mock0",
                "scope": "all",
                "config": {"pasid_width": pasid_width},
            }
        ]
    return spec


def boot_kernel(cmdline: str = "", **kw: Any) -> Kernel:
    m = build_machine(machine_spec(**kw))
    return boot(
        m,
        cmdline,
        builtins=(),
        entry_points=False,
        extra_plugins=[("mock_iommu", mock_iommu)],
    )


def pdev_at(bdf: str) -> PciDev:
    dev = next(d for d in pci_get_devices() if str(d.addr) == bdf)
    pci_enable_device(dev)
    pci_set_master(dev)
    return dev


KernelFactory = Callable[..., Kernel]


@pytest.fixture
def make_kernel(iommulab_checks: KernelChecks) -> KernelFactory:
    """Boot kernels, checked at teardown by the pytest plugin's checker."""

    def make(cmdline: str = "", **kw: Any) -> Kernel:
        return iommulab_checks.track(boot_kernel(cmdline, **kw))

    return make


_scratch_buffers: list[tuple[Kernel, int]] = []


def scratch_buffer(size: int) -> int:
    """A kmalloc'd buffer the test uses as a driver would (to map, to DMA into). It
    is the test's, not the kernel's: freed when the test ends, before the teardown
    check looks for leaks, so tests need not free it on every path."""
    buf = kmalloc(size, GFP_KERNEL)
    assert buf is not None
    _scratch_buffers.append((current_kernel(), buf))
    return buf


@pytest.fixture(autouse=True)
def _free_scratch_buffers(iommulab_checks: KernelChecks) -> Iterator[None]:
    yield
    for k, buf in reversed(_scratch_buffers):
        if k.up:
            k.activate()
            kfree(buf)
    _scratch_buffers.clear()


def take_warnings(k: Kernel) -> list[str]:
    """The WARN messages so far, clearing them (they were expected)."""
    msgs = [w.message for w in k.warn.warnings]
    k.warn.warnings.clear()
    return msgs
