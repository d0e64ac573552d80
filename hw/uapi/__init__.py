"""Kernel UAPI ABIs mirrored in Python (``include/uapi/linux/*``).

Self-contained: nothing here imports from the rest of ``hw``, so the kernel and
drivers can re-export these modules through ``kernel.uapi`` unchanged.
"""
