"""The IOMMU subsystem: core (iommu.py), PASID attach (pasid.py), SVA (iommu_sva.py),
IOVA allocator (iova.py) and dma-iommu (dma_iommu.py).

Importing the package registers the core's initcalls (``iommu_subsys_init`` at
SUBSYS, ``iommu_bind_units`` at ROOTFS).
"""

from kernel.iommu import dma_iommu, iommu, iommu_sva, iova, pasid

__all__ = ["dma_iommu", "iommu", "iommu_sva", "iova", "pasid"]
