"""Reserved IOVA regions: the ``iommu_resv_region`` list of include/linux/iommu.h and
the reserved-region part of drivers/iommu/iommu.c (Linux 6.12).

A vendor driver reports, per device, the address ranges a DMA domain must treat
specially (``iommu_ops.get_resv_regions``): ranges firmware needs identity-mapped
(``IOMMU_RESV_DIRECT``, ``IOMMU_RESV_DIRECT_RELAXABLE`` — VT-d RMRRs), ranges the
IOMMU never translates (``IOMMU_RESV_MSI`` — the x86 interrupt window
0xFEE00000-0xFEEFFFFF), ranges that must not be used at all
(``IOMMU_RESV_RESERVED``), and the IOVA window software maps MSI doorbells into
(``IOMMU_RESV_SW_MSI`` — SMMUv3's 0x8000000). The core merges the regions of a
group's devices (:func:`iommu_get_group_resv_regions`, shown in sysfs as
``/sys/kernel/iommu_groups/N/reserved_regions``), maps the direct ones into a DMA
default domain (:func:`iommu_create_device_direct_mappings`), and dma-iommu keeps
every region out of the IOVA allocator (``iova_reserve_iommu_regions``).

Differences from Linux: a region list is a Python list instead of a ``list_head``;
regions carry no ``free`` callback (no driver here allocates extra per-region
state), so :func:`iommu_put_resv_regions` only empties the list.
"""

from __future__ import annotations

from typing import Protocol, cast

from attrs import define

from kernel.bug import WARN_ON
from kernel.device import Device, dev_name
from kernel.errno import EINVAL
from kernel.iommu.iommu_h import (
    __IOMMU_DOMAIN_DMA_API,
    IOMMU_DOMAIN_BLOCKED,
    IommuDomain,
    IommuGroup,
    has_optional_op,
    iommu_flush_iotlb_all,
)
from kernel.mm import GFP_KERNEL
from kernel.printk import dev_warn

# enum iommu_resv_type
IOMMU_RESV_DIRECT = 0
"""Memory firmware set up for the device: must stay identity-mapped."""
IOMMU_RESV_DIRECT_RELAXABLE = 1
"""Like DIRECT, but the device may be moved to a domain without the mapping."""
IOMMU_RESV_RESERVED = 2
"""Never usable as an IOVA."""
IOMMU_RESV_MSI = 3
"""Hardware MSI window: not translated by the IOMMU."""
IOMMU_RESV_SW_MSI = 4
"""IOVA window software maps MSI doorbells into."""

RESV_TYPE_STRING = {
    IOMMU_RESV_DIRECT: "direct",
    IOMMU_RESV_DIRECT_RELAXABLE: "direct-relaxable",
    IOMMU_RESV_RESERVED: "reserved",
    IOMMU_RESV_MSI: "msi",
    IOMMU_RESV_SW_MSI: "msi",
}
"""``iommu_group_resv_type_string``: both MSI kinds print as ``msi``, as in Linux."""


@define(eq=False)
class IommuResvRegion:
    """``struct iommu_resv_region``: ``[start, start + length - 1]`` with the IOMMU
    protection flags a direct mapping uses and the region type."""

    start: int
    length: int
    prot: int
    type: int

    @property
    def end(self) -> int:
        return self.start + self.length - 1


class SupportsGetResvRegions(Protocol):
    """The optional ``iommu_ops.get_resv_regions(dev, head)``: append the device's
    regions to ``head``."""

    def get_resv_regions(self, dev: Device, head: list[IommuResvRegion]) -> None: ...


def iommu_alloc_resv_region(start: int, length: int, prot: int, type: int) -> IommuResvRegion:
    """``iommu_alloc_resv_region`` (no allocation failure: nothing is taken from the
    kernel's allocators for a region here)."""
    return IommuResvRegion(start, length, prot, type)


def iommu_get_resv_regions(dev: Device, head: list[IommuResvRegion]) -> None:
    """``iommu_get_resv_regions``: the driver's regions for ``dev`` appended to ``head``
    (nothing for a device not behind an IOMMU, or a driver without the op)."""
    param = dev.iommu
    if param is None or param.iommu_dev is None or param.iommu_dev.ops is None:
        return
    ops = param.iommu_dev.ops
    if has_optional_op(ops, "get_resv_regions"):
        cast(SupportsGetResvRegions, ops).get_resv_regions(dev, head)


def iommu_put_resv_regions(dev: Device, head: list[IommuResvRegion]) -> None:
    """``iommu_put_resv_regions``: release every region of the list."""
    head.clear()


def iommu_insert_resv_region(new: IommuResvRegion, regions: list[IommuResvRegion]) -> None:
    """``iommu_insert_resv_region``: insert a copy of ``new`` sorted by start (then
    type), then merge overlapping or adjacent regions of ``new``'s type; regions of
    other types are kept as they are, even where they overlap."""
    nr = iommu_alloc_resv_region(new.start, new.length, new.prot, new.type)
    at = next(
        (
            i
            for i, it in enumerate(regions)
            if nr.start < it.start or (nr.start == it.start and nr.type <= it.type)
        ),
        len(regions),
    )
    regions.insert(at, nr)
    stack: list[IommuResvRegion] = []
    for it in regions:
        if it.type != new.type:
            stack.append(it)
            continue
        top = next((t for t in reversed(stack) if t.type == it.type), None)
        if top is None or it.start > top.end + 1:
            stack.append(it)
            continue
        top.length = max(top.end, it.end) - top.start + 1
    regions[:] = stack


def iommu_get_group_resv_regions(group: IommuGroup, head: list[IommuResvRegion]) -> None:
    """``iommu_get_group_resv_regions``: every device's regions merged into ``head``."""
    with group.mutex:
        for dev in group.devices:
            dev_regions: list[IommuResvRegion] = []
            iommu_get_resv_regions(dev, dev_regions)
            for entry in dev_regions:
                iommu_insert_resv_region(entry, head)
            iommu_put_resv_regions(dev, dev_regions)


def iommu_group_show_resv_regions(group: IommuGroup) -> str:
    """``iommu_group_show_resv_regions``: the sysfs ``reserved_regions`` file, one
    ``0x<start> 0x<end> <type>`` line per merged region (16 hex digits each)."""
    regions: list[IommuResvRegion] = []
    iommu_get_group_resv_regions(group, regions)
    return "".join(f"0x{r.start:016x} 0x{r.end:016x} {RESV_TYPE_STRING[r.type]}\n" for r in regions)


def iommu_create_device_direct_mappings(domain: IommuDomain, dev: Device) -> None:
    """``iommu_create_device_direct_mappings``: identity-map ``dev``'s DIRECT and
    DIRECT_RELAXABLE regions into a DMA domain (page-aligned outward, skipping pages
    already mapped — regions of several devices may overlap), then flush the IOTLB.
    A DIRECT region marks the device ``require_direct`` for any domain type."""
    from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map

    is_dma = bool(domain.type & __IOMMU_DOMAIN_DMA_API)
    pg_size = domain.pgsize_bitmap & -domain.pgsize_bitmap  # lowest page size, 0 if none
    if WARN_ON(is_dma and not domain.pgsize_bitmap):
        raise EINVAL("DMA domain without page sizes")
    mappings: list[IommuResvRegion] = []
    iommu_get_resv_regions(dev, mappings)
    try:
        for entry in mappings:
            if entry.type == IOMMU_RESV_DIRECT and dev.iommu is not None:
                dev.iommu.require_direct = True
            if entry.type not in (IOMMU_RESV_DIRECT, IOMMU_RESV_DIRECT_RELAXABLE) or not is_dma:
                continue
            start = (entry.start + pg_size - 1) & -pg_size
            end = (entry.start + entry.length + pg_size - 1) & -pg_size
            run = 0
            addr = start
            while addr <= end:
                if addr != end and not iommu_iova_to_phys(domain, addr):
                    run += pg_size
                    addr += pg_size
                    continue
                if run:
                    iommu_map(domain, addr - run, addr - run, run, entry.prot, GFP_KERNEL)
                    run = 0
                addr += pg_size
        if mappings and is_dma:
            iommu_flush_iotlb_all(domain)
    finally:
        iommu_put_resv_regions(dev, mappings)


def iommu_check_require_direct(group: IommuGroup, dev: Device, new: IommuDomain) -> None:
    """The ``require_direct`` test at the top of ``__iommu_device_set_domain``: a
    device with a DIRECT region may not be put behind a blocking domain (it has no
    1:1 mapping) — EINVAL with Linux's warning."""
    if (
        dev.iommu is not None
        and dev.iommu.require_direct
        and (new.type == IOMMU_DOMAIN_BLOCKED or new is group.blocking_domain)
    ):
        dev_warn(
            dev,
            "Firmware has requested this device have a 1:1 IOMMU mapping, rejecting "
            "configuring the device without a 1:1 mapping. Contact your platform vendor.",
        )
        raise EINVAL(f"{dev_name(dev)}: requires a direct mapping")
