"""Intel VT-d IOMMU driver (drivers/iommu/intel/). Not written yet: issue 5.

Loaded as a built-in module; until the driver lands it contributes no hooks, so
VT-d units found in firmware stay unbound and their devices use dma-direct.
"""
