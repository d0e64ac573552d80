"""Page-table formats for the generic algorithm (drivers/iommu/generic_pt/fmt/):
:mod:`.x86_64` (CPU paging and VT-d/AMD first stage), :mod:`.vtdss` (VT-d second
stage), :mod:`.armv8` (ARM LPAE stage 1, 4 KiB granule) and :mod:`.amdv1` (AMD
IOMMU v1)."""
