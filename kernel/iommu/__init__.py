"""The IOMMU subsystem: core (iommu.py), PASID attach (pasid.py), SVA (iommu_sva.py),
IOVA allocator (iova.py), dma-iommu (dma_iommu.py) and the generic page table
(generic_pt/, selected with ``iommu.pt=generic``).

Importing the package registers the core's initcalls (``iommu_subsys_init`` at
SUBSYS, ``iommu_bind_units`` at ROOTFS).
"""

from kernel.iommu import dma_iommu, generic_pt, iommu, iommu_sva, iova, pasid

__all__ = ["dma_iommu", "generic_pt", "iommu", "iommu_sva", "iova", "pasid"]
