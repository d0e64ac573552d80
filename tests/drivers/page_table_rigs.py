"""Paging domains of both page-table generations on both vendors, for the tests that
hold them to one contract: a booted kernel (``iommu.pt=driver``, 6.12's driver code,
or ``iommu.pt=generic``), its machine, and the EDU device whose DMA goes through the
domain under test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from attrs import define

from hw.bus import DmaFault, PciAddr
from hw.machine import Machine
from hw.smmuv3 import Smmuv3Unit
from hw.vtd import VtdUnit
from iommulab.presets import EDU_BDF
from kernel.boot import Kernel
from kernel.iommu.iommu import (
    iommu_attach_device,
    iommu_detach_device,
    iommu_domain_free,
    iommu_paging_domain_alloc,
)
from kernel.iommu.iommu_h import IommuDomain
from kernel.pci import PciDev
from tests.drivers.arm_smmu_v3.machines import boot_smmuv3
from tests.drivers.intel_iommu.conftest import boot_vtd, pdev

GENERATIONS = {"driver": "", "generic": "iommu.pt=generic"}
"""The kernel parameter each page-table generation boots with."""

TARGETS = ("vtd-first-stage", "vtd-second-stage", "vtd-legacy", "smmuv3-stage1")
"""VT-d scalable mode first stage (x86_64 format) and second stage (vtdss), VT-d legacy
mode (vtdss under a context entry), SMMUv3 stage 1 (ARM LPAE)."""


@define(eq=False)
class Rig:
    """One booted kernel; ``generation`` is "driver" (6.12) or "generic"."""

    kernel: Kernel
    machine: Machine
    generation: str
    target: str

    @property
    def unit(self) -> VtdUnit | Smmuv3Unit:
        unit = next(iter(self.machine.iommus.values()))
        assert isinstance(unit, (VtdUnit, Smmuv3Unit))
        return unit

    @property
    def edu(self) -> PciDev:
        return pdev(EDU_BDF)

    def dma_read(self, iova: int, size: int) -> tuple[bytes, DmaFault | None]:
        fn = self.machine.functions[PciAddr.parse(EDU_BDF)]
        data, fault = fn.dma_read(None, False, iova, size)
        return bytes(data), fault

    def ram(self, phys: int, size: int) -> bytes:
        return bytes(self.machine.memory.read(phys, size))

    def domain(self) -> IommuDomain:
        """A paging domain attached to the EDU device."""
        dom = iommu_paging_domain_alloc(self.edu)
        iommu_attach_device(dom, self.edu)
        return dom

    def release(self, dom: IommuDomain) -> None:
        iommu_detach_device(dom, self.edu)
        iommu_domain_free(dom)

    def take_warnings(self) -> list[str]:
        msgs = [w.message for w in self.kernel.warn.warnings]
        self.kernel.warn.warnings.clear()
        return msgs


def boot_rig(generation: str, target: str) -> Rig:
    cmdline = GENERATIONS[generation]
    if target == "smmuv3-stage1":
        k = boot_smmuv3(cmdline, {"strict_stale": True})
        m = k.machine
    else:
        config = {"flts": False} if target == "vtd-second-stage" else {}
        legacy = " intel_iommu=sm_off" if target == "vtd-legacy" else ""
        k, m = boot_vtd(cmdline + legacy, config)
    assert isinstance(m, Machine)
    return Rig(k, m, generation, target)


def rig_fixture(generation: str, target: str) -> Iterator[Rig]:
    """Boot, hand over, then: no WARN left unclaimed, no page or object leaked, no
    stale translation used."""
    rig = boot_rig(generation, target)
    yield rig
    k = rig.kernel
    k.activate()
    unexpected = [w.message for w in k.warnings()]
    k.shutdown()
    leaks = [a.site for a in k.mm.live() if a.site != "init_task stack"]
    assert not unexpected, f"unexpected WARN: {unexpected}"
    assert not leaks, f"leaked at shutdown: {leaks}"
    assert rig.unit.stats.stale_uses == 0


@pytest.fixture(params=[(g, t) for g in GENERATIONS for t in TARGETS], ids="-".join)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """Every (generation, vendor/stage) pair."""
    generation, target = request.param
    yield from rig_fixture(generation, target)
