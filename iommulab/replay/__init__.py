"""``iommulab replay``: read a real kernel's DMA/IOMMU ftrace text, check it, and rebuild
its translation state (issue 18)."""
