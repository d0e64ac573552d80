"""The IOMMU subsystem: types and vendor protocols (iommu_h.py, include/linux/iommu.h),
core (iommu.py, iommu.c), unit registration and binding (iommu_device.py), device
fault reporting (io_pgfault.py), PASID attach (pasid.py), SVA (iommu_sva.py), IOVA
allocator (iova.py), dma-iommu (dma_iommu.py) and the generic page table
(generic_pt/, selected with ``iommu.pt=generic``).

Importing the package registers the core's initcalls (``iommu_subsys_init`` at
SUBSYS, ``iommu_bind_units`` at ROOTFS).
"""

from kernel.iommu import (
    dma_iommu,
    generic_pt,
    io_pgfault,
    iommu,
    iommu_device,
    iommu_h,
    iommu_sva,
    iova,
    pasid,
)

__all__ = [
    "dma_iommu",
    "generic_pt",
    "io_pgfault",
    "iommu",
    "iommu_device",
    "iommu_h",
    "iommu_sva",
    "iova",
    "pasid",
]
