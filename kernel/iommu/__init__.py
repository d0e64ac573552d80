"""The IOMMU subsystem: types and vendor protocols (iommu_h.py, include/linux/iommu.h),
core (iommu.py, iommu.c), unit registration and binding (iommu_device.py), device
fault reporting (io_pgfault.py), PASID attach (pasid.py), SVA (iommu_sva.py), IOVA
allocator (iova.py) and dma-iommu (dma_iommu.py).

Importing the package registers the core's initcalls (``iommu_subsys_init`` at
SUBSYS, ``iommu_bind_units`` at ROOTFS).
"""

from kernel.iommu import (
    dma_iommu,
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
    "io_pgfault",
    "iommu",
    "iommu_device",
    "iommu_h",
    "iommu_sva",
    "iova",
    "pasid",
]
