"""The kernel's generic layers (printk, device model, PCI, mm, IOMMU core, DMA API)."""
