"""The DMA API: mapping.py (dma_map_* ...), direct.py (dma-direct), debug.py (DMA-API
debug), dmaengine.py, scatterlist.py, direction.py.

Importing the package registers DMA-API debug's initcall; the other modules are
imported by their users (mapping.py depends on kernel.iommu, which depends on
direction.py here).
"""

from kernel.dma import debug

__all__ = ["debug"]
