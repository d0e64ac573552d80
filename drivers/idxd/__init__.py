"""Intel DSA/IAA driver (drivers/dma/idxd/). Not written yet: issue 7.

Loaded as a built-in module; until the driver lands it contributes no hooks.
"""
