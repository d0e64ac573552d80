"""SMMUv3 reserved regions: the software MSI window, as ``arm_smmu_get_resv_regions``
reports it; dma-iommu leaves it in the IOVA space (it is the software that maps MSI
doorbells there), but reserves the PCI host-bridge window."""

from __future__ import annotations

from drivers.arm_smmu_v3.arm_smmu_v3 import MSI_IOVA_BASE, MSI_IOVA_LENGTH
from hw.machine import MMIO_WINDOW_BASE
from kernel.boot import Kernel
from kernel.iommu.dma_iommu import _cookie
from kernel.iommu.iommu import iommu_get_dma_domain
from kernel.iommu.iommu_resv import (
    IOMMU_RESV_SW_MSI,
    IommuResvRegion,
    iommu_get_resv_regions,
    iommu_group_show_resv_regions,
)
from kernel.iommu.iova import find_iova
from tests.drivers.arm_smmu_v3.machines import EDU_BDF
from tests.kernel.conftest import pdev_at


def test_group_lists_the_software_msi_window(k: Kernel) -> None:
    dev = pdev_at(EDU_BDF)
    assert dev.iommu_group is not None
    assert (
        iommu_group_show_resv_regions(dev.iommu_group)
        == "0x0000000008000000 0x00000000080fffff msi\n"
    )
    head: list[IommuResvRegion] = []
    iommu_get_resv_regions(dev, head)
    assert [(r.start, r.length, r.type) for r in head] == [
        (MSI_IOVA_BASE, MSI_IOVA_LENGTH, IOMMU_RESV_SW_MSI)
    ]


def test_dma_domain_reserves_the_pci_window_but_not_the_sw_msi_window(k: Kernel) -> None:
    dom = iommu_get_dma_domain(pdev_at(EDU_BDF))
    assert dom is not None
    iovad = _cookie(dom).iovad
    assert iovad is not None
    assert find_iova(iovad, MSI_IOVA_BASE >> 12) is None
    assert find_iova(iovad, MMIO_WINDOW_BASE >> 12) is not None
