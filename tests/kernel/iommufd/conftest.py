"""Fixtures for the iommufd tests: a kernel per IOMMU vendor (VT-d, SMMUv3) with a
DSA and nothing bound to it, an open iommufd, the DSA's VFIO device file, and user
buffers; the pytest plugin's checker shuts the kernel down at teardown and fails
the test on a WARN, a stale translation use or a leaked allocation."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from attrs import define, field

from hw.machine import build_machine
from iommulab.presets import DSA_BDF, PRESETS
from kernel.boot import Kernel, boot
from kernel.iommufd.uapi_helpers import Iommufd
from kernel.mm import alloc_pages_exact, free_pages_exact, memory_write
from kernel.pci import PciDev, pci_get_devices
from kernel.vfio.device_cdev import VfioDeviceFile, vfio_device_fops_cdev_open

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks

VENDORS = {"vtd": ("default", "drivers.intel_iommu"), "smmuv3": ("smmuv3", "drivers.arm_smmu_v3")}


def boot_vendor(vendor: str, config: dict[str, object] | None = None) -> Kernel:
    """Boot the vendor's preset with only its IOMMU driver; ``config`` replaces the
    IOMMU unit's configuration (``{"slads": True}`` for VT-d dirty tracking)."""
    preset, driver = VENDORS[vendor]
    spec = copy.deepcopy(PRESETS[preset])
    if config is not None:
        spec["iommus"][0]["config"] = config
    return boot(build_machine(spec), "", builtins=(driver,), entry_points=False)


def pdev(bdf: str = DSA_BDF) -> PciDev:
    return next(d for d in pci_get_devices() if str(d.addr) == bdf)


@define(eq=False)
class Vmm:
    """What a test's user space holds: the iommufd, the DSA's device file, buffers."""

    kernel: Kernel
    fd: Iommufd
    vfio: VfioDeviceFile
    buffers: list[tuple[int, int]] = field(factory=list)

    def buffer(self, size: int, fill: int | None = None) -> int:
        """User memory (the stand-in: page-aligned kernel memory)."""
        addr = alloc_pages_exact(size, 0)
        assert addr is not None
        self.buffers.append((addr, size))
        if fill is not None:
            memory_write(addr, bytes((fill + i) & 0xFF for i in range(256)) * (size // 256))
        return addr

    def close(self) -> None:
        self.vfio.close()
        self.fd.close()
        for addr, size in self.buffers:
            free_pages_exact(addr, size)
        self.buffers.clear()


@pytest.fixture(params=sorted(VENDORS))
def vendor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def vmm(vendor: str, iommulab_checks: KernelChecks) -> Iterator[Vmm]:
    k = iommulab_checks.track(boot_vendor(vendor))
    with k:
        v = Vmm(k, Iommufd.open(), vfio_device_fops_cdev_open(pdev()))
        yield v
        v.close()
