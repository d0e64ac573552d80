"""Fixtures for the arm_smmu_v3 driver tests: kernels booted on the ``smmuv3``
machine (checked at teardown by the pytest plugin's checker), and helpers that look at what the
hardware did: commands the SMMU executed, STEs and CDs in RAM, device-side DMA."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.arm_smmu_v3 import arm_smmu_smmus
from drivers.arm_smmu_v3.entry_writer import arm_smmu_get_cd_ptr, arm_smmu_get_step_for_sid
from drivers.arm_smmu_v3.structs import ArmSmmuDevice, ArmSmmuMaster, dev_iommu_priv_get
from hw.bus import DmaFault, PciAddr
from hw.machine import Machine
from hw.smmuv3 import Smmuv3Unit
from kernel.bitfield import FIELD_GET
from kernel.boot import Kernel
from kernel.delay import udelay
from kernel.dma.mapping import dma_map_single, dma_mapping_error
from kernel.mm import GFP_KERNEL, kmalloc, read64
from kernel.pci import PciDev
from tests.drivers.arm_smmu_v3.machines import DSA_BDF, EDU_BDF, boot_smmuv3
from tests.kernel.conftest import pdev_at

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks


Boot = Callable[..., Kernel]


@pytest.fixture
def smmu_boot(iommulab_checks: KernelChecks) -> Boot:
    """Boot SMMUv3 kernels, checked at teardown by the pytest plugin's checker."""

    def make(cmdline: str = "", smmu_config: dict[str, Any] | None = None, **kw: Any) -> Kernel:
        return iommulab_checks.track(boot_smmuv3(cmdline, smmu_config, **kw))

    return make


@pytest.fixture
def k(smmu_boot: Boot) -> Kernel:
    return smmu_boot("trace_event=hw_smmuv3:command,hw_smmuv3:stale_translation")


def machine(k: Kernel) -> Machine:
    m = k.machine
    assert isinstance(m, Machine)
    return m


def unit(k: Kernel) -> Smmuv3Unit:
    u = machine(k).iommus["smmu0"]
    assert isinstance(u, Smmuv3Unit)
    return u


def smmu() -> ArmSmmuDevice:
    return arm_smmu_smmus()[0]


def dsa() -> PciDev:
    return pdev_at(DSA_BDF)


def edu() -> PciDev:
    return pdev_at(EDU_BDF)


def master(dev: PciDev) -> ArmSmmuMaster:
    return dev_iommu_priv_get(dev)


def ste(dev: PciDev) -> list[int]:
    """The device's STE as it is in RAM."""
    m = master(dev)
    ptr = arm_smmu_get_step_for_sid(m.smmu, m.sids[0])
    return [read64(ptr + 8 * i) for i in range(8)]


def cd(dev: PciDev, ssid: int) -> list[int]:
    """CD ``ssid`` of the device's CD table, as it is in RAM."""
    ptr = arm_smmu_get_cd_ptr(master(dev), ssid)
    assert ptr is not None
    return [read64(ptr + 8 * i) for i in range(8)]


def cd_asid(words: list[int]) -> int:
    return FIELD_GET(r.CTXDESC_CD_0_ASID, words[0])


def cd_ttb0(words: list[int]) -> int:
    return words[1] & r.CTXDESC_CD_1_TTB0_MASK


def ste_field(words: list[int], dw: int, mask: int) -> int:
    return FIELD_GET(mask, words[dw])


Command = tuple[str, int, int]


def commands(k: Kernel, prefetch: bool = False) -> list[Command]:
    """Every command the SMMU executed so far (``hw_smmuv3:command`` trace), without
    the PREFETCH_CONFIG hints unless asked (they run whenever the queue next moves)."""
    out: list[Command] = []
    for e in k.tracer.events("hw_smmuv3:command"):
        if e.fields["op"] == "PREFETCH_CONFIG" and not prefetch:
            continue
        dw = e.fields["dw"]
        assert isinstance(dw, tuple)
        out.append((str(e.fields["op"]), int(dw[0]), int(dw[1])))
    return out


def device_dma(
    k: Kernel, bdf: str, iova: int, size: int, pasid: int | None = None, write: bool = False
) -> DmaFault | None:
    """The device at ``bdf`` reads (or writes zeros to) ``size`` bytes at ``iova``, with
    ``pasid`` as its PASID (SSV=1) when given; time advances so events are handled."""
    pdev_at(bdf)  # enabled, bus master
    fn = machine(k).functions[PciAddr.parse(bdf)]
    if write:
        _, fault = fn.dma_write(pasid, False, iova, bytes(size))
    else:
        _, fault = fn.dma_read(pasid, False, iova, size)
    udelay(1)
    return fault


def map_buffer(dev: PciDev, size: int, direction: int) -> tuple[int, int]:
    """A kmalloc'd buffer mapped with ``dma_map_single``: (kernel address, IOVA)."""
    buf = kmalloc(size, GFP_KERNEL)
    assert buf is not None
    iova = dma_map_single(dev, buf, size, direction)
    assert not dma_mapping_error(dev, iova)
    return buf, iova


__all__ = ["DSA_BDF", "EDU_BDF"]
