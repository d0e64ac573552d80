"""Hardware models: what a real machine is. Knows nothing of the kernel.

Submodules are imported explicitly (``hw.memory``, ``hw.vtd`` ...); this package
imports none of them so that ``hw.bus`` stays the kernel's only door.
"""
