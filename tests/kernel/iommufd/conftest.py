"""Fixtures for the iommufd tests: a kernel per IOMMU vendor (VT-d, SMMUv3) with a
DSA and nothing bound to it, and a VMM process (a task with its own address space)
holding an open iommufd, the DSA's VFIO device file and anonymous memory it
mapped; the pytest plugin's checker shuts the kernel down at teardown and fails
the test on a WARN, a stale translation use or a leaked allocation."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from attrs import define

from hw.machine import build_machine
from iommulab.presets import DSA_BDF, PRESETS
from kernel.boot import Kernel, boot
from kernel.fs import ksys_mmap
from kernel.iommufd.uapi_helpers import Iommufd
from kernel.mmap import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    do_mprotect,
    do_munmap,
)
from kernel.pci import PciDev, pci_get_devices
from kernel.sched import CAP_SYS_RESOURCE, TaskStruct, do_exit, user_process_create
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
    """The VMM process: its task, its iommufd, the DSA's device file."""

    kernel: Kernel
    task: TaskStruct
    fd: Iommufd
    vfio: VfioDeviceFile

    @classmethod
    def start(cls, kernel: Kernel) -> Vmm:
        """A new process that opens ``/dev/iommu`` and the DSA's VFIO cdev. It holds
        CAP_SYS_RESOURCE (it may pick IOMMU_OPTION_RLIMIT_MODE) but not CAP_IPC_LOCK,
        so its pins are charged against its RLIMIT_MEMLOCK (8 MiB)."""
        task = user_process_create("vmm", frozenset({CAP_SYS_RESOURCE}))
        return cls(kernel, task, Iommufd.open(task), vfio_device_fops_cdev_open(pdev()))

    def buffer(self, size: int, fill: int | None = None, prot: int = PROT_READ | PROT_WRITE) -> int:
        """``mmap`` of anonymous memory (demand-zero: nothing is faulted in unless
        ``fill`` writes a pattern to every page, before ``mprotect`` to ``prot``)."""
        rw = PROT_READ | PROT_WRITE
        flags = MAP_PRIVATE | MAP_ANONYMOUS
        addr = ksys_mmap(self.task, 0, size, rw if fill is not None else prot, flags, -1)
        if fill is not None:
            self.write(addr, bytes((fill + i) & 0xFF for i in range(256)) * (size // 256))
            if prot != rw:
                assert self.task.mm is not None
                do_mprotect(self.task.mm, addr, size, prot)
        return addr

    def munmap(self, addr: int, size: int) -> None:
        assert self.task.mm is not None
        do_munmap(self.task.mm, addr, size)

    def write(self, uptr: int, data: bytes) -> None:
        self.fd.write(uptr, data)

    def read(self, uptr: int, size: int) -> bytes:
        return self.fd.read(uptr, size)

    def close(self) -> None:
        """The process exits: its device file and iommufd close, its memory goes."""
        self.vfio.close()
        self.fd.close()
        do_exit(self.task)


@pytest.fixture(params=sorted(VENDORS))
def vendor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def vmm(vendor: str, iommulab_checks: KernelChecks) -> Iterator[Vmm]:
    k = iommulab_checks.track(boot_vendor(vendor))
    with k:
        v = Vmm.start(k)
        yield v
        v.close()
