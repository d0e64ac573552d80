"""The DMA mapping API (kernel/dma/mapping.c, include/linux/dma-mapping.h).

Each call dispatches to dma-direct (no IOMMU, or an identity default domain:
``dev.dma_iommu`` is False) or to dma-iommu, and reports to DMA-API debug.
``dma_map_*`` return ``DMA_MAPPING_ERROR`` on failure and drivers must call
:func:`dma_mapping_error`, as in C. An invalid direction is ``BUG_ON`` in C; here
it prints the BUG line and raises EINVAL, before any state changes.

Differences from Linux: memory is coherent (x86), so ``dma_sync_*`` only feed
DMA-API debug; ``dma_alloc_coherent`` returns ``(cpu_addr, dma_handle)`` (C's out
parameter) with ``cpu_addr`` None on failure; a size of 0 (which C passes down
unchecked) is refused with a WARN_ON_ONCE and ``DMA_MAPPING_ERROR``; an address
that is neither direct-mapped nor vmalloc cannot be resolved to a page, so after
DMA-API debug reports it the map fails.
"""

from __future__ import annotations

from attrs import define

from kernel.bug import WARN_ON_ONCE
from kernel.context import current
from kernel.device import Device, dev_name
from kernel.dma import debug
from kernel.dma.debug import DMA_DEBUG_KEY, DMA_DEBUG_OFF
from kernel.dma.direct import (
    dma_direct_alloc,
    dma_direct_free,
    dma_direct_map_phys,
    dma_direct_map_resource,
    dma_direct_supported,
    dma_direct_sync_single_for_cpu,
    dma_direct_sync_single_for_device,
    dma_direct_unmap_phys,
)
from kernel.dma.direction import (
    DIR2NAME,
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_BIT_MASK,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_NONE,
    DMA_TO_DEVICE,
    VALID_DMA_DIRECTIONS,
    valid_dma_direction,
)
from kernel.dma.scatterlist import Scatterlist, SgTable, sg_alloc_table, sg_set_page
from kernel.dma.swiotlb import (
    is_swiotlb_active,
    is_swiotlb_buffer,
    is_swiotlb_force_bounce,
    swiotlb_max_mapping_size,
)
from kernel.dma.trace import (
    trace_dma_alloc,
    trace_dma_free,
    trace_dma_map_page,
    trace_dma_map_sg,
    trace_dma_sync_sg_for_cpu,
    trace_dma_sync_sg_for_device,
    trace_dma_sync_single_for_cpu,
    trace_dma_sync_single_for_device,
    trace_dma_unmap_page,
    trace_dma_unmap_sg,
)
from kernel.errno import EINVAL, EIO, ENOMEM, ENXIO
from kernel.iommu.dma_iommu import (
    __iommu_dma_map,
    __iommu_dma_unmap,
    dev_use_swiotlb,
    dma_info_to_prot,
    iommu_dma_map_phys,
    iommu_dma_map_resource,
    iommu_dma_map_sg,
    iommu_dma_opt_mapping_size,
    iommu_dma_sync_single,
    iommu_dma_unmap_phys,
    iommu_dma_unmap_resource,
    iommu_dma_unmap_sg_runs,
)
from kernel.mm import (
    __GFP_ZERO,
    PAGE_ALIGN,
    PAGE_OFFSET,
    Page,
    alloc_pages_exact,
    current_mm,
    free_pages_exact,
    is_vmalloc_addr,
    page_address,
    virt_addr_valid,
    virt_to_page,
    virt_to_phys,
)
from kernel.printk import pr_emerg

__all__ = [
    "DMA_BIDIRECTIONAL",
    "DMA_BIT_MASK",
    "DMA_FROM_DEVICE",
    "DMA_MAPPING_ERROR",
    "DMA_NONE",
    "DMA_TO_DEVICE",
]

SZ_64K = 1 << 16
ULONG_MAX = (1 << 64) - 1


@define(eq=False)
class DeviceDmaParameters:
    """``struct device_dma_parameters``."""

    max_segment_size: int = SZ_64K
    segment_boundary_mask: int = ULONG_MAX


def _bug_on_dir(dir: int) -> None:
    """``BUG_ON(!valid_dma_direction(dir))``. The streaming map/unmap calls test
    ``dir not in VALID_DMA_DIRECTIONS`` in line and call this only to report."""
    if not valid_dma_direction(dir):
        pr_emerg(f"kernel BUG at kernel/dma/mapping.c: !valid_dma_direction({dir})")
        raise EINVAL(f"invalid DMA direction {dir}")


def dma_map_direct(dev: Device) -> bool:
    """``dma_map_direct``: True unless ``dev->dma_iommu``."""
    return not dev.dma_iommu


def _size_ok(size: int) -> bool:
    return not WARN_ON_ONCE(size <= 0, "DMA-API: mapping of size 0")


# --------------------------------------------------------------------------- single/page


def _map_phys(dev: Device, phys: int, size: int, dir: int, attrs: int) -> int:
    """The body of ``dma_map_page_attrs`` on a physical address (what later kernels
    export as ``dma_map_phys``), for it and :func:`dma_map_single_attrs`; the callers
    checked the direction. ``dma_map_direct`` and ``dma_debug_disabled()`` are read
    in line."""
    if not dev.dma_mask:
        WARN_ON_ONCE(True)
        return DMA_MAPPING_ERROR
    if size <= 0:
        _size_ok(size)  # WARN_ON_ONCE
        return DMA_MAPPING_ERROR
    if dev.dma_iommu:
        addr = iommu_dma_map_phys(dev, phys, size, dir, attrs)
    else:
        addr = dma_direct_map_phys(dev, phys, size, dir, attrs)
    if trace_dma_map_page.enabled:
        trace_dma_map_page(
            device=dev_name(dev), dir=dir, dma_addr=addr, size=size, phys_addr=phys, attrs=attrs
        )
    if not current.kernel.subsys.get(DMA_DEBUG_KEY, DMA_DEBUG_OFF).disabled:
        debug.debug_dma_map_phys(dev, phys, size, dir, addr, attrs)
    return addr


def dma_map_page_attrs(
    dev: Device, page: Page, offset: int, size: int, dir: int, attrs: int = 0
) -> int:
    """``dma_map_page_attrs``."""
    if dir not in VALID_DMA_DIRECTIONS:
        _bug_on_dir(dir)
    return _map_phys(dev, page.phys + offset, size, dir, attrs)


def dma_map_page(dev: Device, page: Page, offset: int, size: int, dir: int) -> int:
    return dma_map_page_attrs(dev, page, offset, size, dir, 0)


def dma_unmap_page_attrs(dev: Device, addr: int, size: int, dir: int, attrs: int = 0) -> None:
    """``dma_unmap_page_attrs`` (``dma_map_direct`` and ``dma_debug_disabled()`` read
    in line)."""
    if dir not in VALID_DMA_DIRECTIONS:
        _bug_on_dir(dir)
    if dev.dma_iommu and addr != DMA_MAPPING_ERROR:
        iommu_dma_unmap_phys(dev, addr, size, dir, attrs)
    elif dev.dma_uses_io_tlb:
        dma_direct_unmap_phys(dev, addr, size, dir, attrs)
    if trace_dma_unmap_page.enabled:
        trace_dma_unmap_page(device=dev_name(dev), dir=dir, dma_addr=addr, size=size, attrs=attrs)
    if not current.kernel.subsys.get(DMA_DEBUG_KEY, DMA_DEBUG_OFF).disabled:
        debug.debug_dma_unmap_phys(dev, addr, size, dir)


def dma_unmap_page(dev: Device, addr: int, size: int, dir: int) -> None:
    dma_unmap_page_attrs(dev, addr, size, dir, 0)


def dma_map_single_attrs(dev: Device, ptr: int, size: int, dir: int, attrs: int = 0) -> int:
    """``dma_map_single_attrs``: DMA-API debug checks the address, then map its page
    (``virt_to_page(ptr)`` + ``offset_in_page(ptr)`` is ``__pa(ptr)`` in the direct map;
    a vmalloc address is resolved through its page)."""
    if dir not in VALID_DMA_DIRECTIONS:
        _bug_on_dir(dir)
    if not current.kernel.subsys.get(DMA_DEBUG_KEY, DMA_DEBUG_OFF).disabled:
        debug.debug_dma_map_single(dev, ptr, size)
    if virt_addr_valid(ptr):
        phys = ptr - PAGE_OFFSET
    elif is_vmalloc_addr(ptr):
        phys = virt_to_phys(ptr)
    else:
        return DMA_MAPPING_ERROR
    return _map_phys(dev, phys, size, dir, attrs)


dma_map_single = dma_map_single_attrs
"""``dma_map_single(dev, ptr, size, dir)``: C's macro for ``attrs`` 0."""


def dma_unmap_single_attrs(dev: Device, addr: int, size: int, dir: int, attrs: int = 0) -> None:
    dma_unmap_page_attrs(dev, addr, size, dir, attrs)


def dma_unmap_single(dev: Device, addr: int, size: int, dir: int) -> None:
    dma_unmap_page_attrs(dev, addr, size, dir, 0)


def dma_mapping_error(dev: Device, dma_addr: int) -> int:
    """``dma_mapping_error``: -ENOMEM for the error cookie, else 0 (marks the
    DMA-API debug entry as checked)."""
    if not current.kernel.subsys.get(DMA_DEBUG_KEY, DMA_DEBUG_OFF).disabled:
        debug.debug_dma_mapping_error(dev, dma_addr)
    return -ENOMEM.errno if dma_addr == DMA_MAPPING_ERROR else 0


# --------------------------------------------------------------------------- scatterlists


def dma_map_sg_attrs(
    dev: Device, sgl: list[Scatterlist], nents: int, dir: int, attrs: int = 0
) -> int:
    """``dma_map_sg_attrs``: the number of DMA segments, 0 on failure. Through
    dma-iommu the entries are merged into IOVA-contiguous segments (fewer than
    ``nents``); dma-direct maps each entry on its own."""
    _bug_on_dir(dir)
    if WARN_ON_ONCE(not dev.dma_mask) or nents <= 0 or nents > len(sgl):
        return 0
    segs = sgl[:nents]
    if any(not _size_ok(sg.length) for sg in segs):
        return 0
    if dma_map_direct(dev):
        for i, sg in enumerate(segs):
            addr = dma_direct_map_phys(dev, sg.phys, sg.length, dir, attrs)
            if addr == DMA_MAPPING_ERROR:
                for done in segs[:i]:
                    done.dma_address = done.dma_length = 0
                return 0
            sg.dma_address, sg.dma_length = addr, sg.length
    else:
        ents = iommu_dma_map_sg(dev, segs, nents, dir, attrs)
        if ents <= 0:
            return 0
        if trace_dma_map_sg.enabled:
            trace_dma_map_sg(
                device=dev_name(dev),
                dir=dir,
                dma_addrs=tuple(sg.dma_address for sg in segs[:ents]),
                sizes=tuple(sg.dma_length for sg in segs[:ents]),
                phys_addrs=tuple(sg.phys for sg in segs[:ents]),
                attrs=attrs,
            )
        debug.debug_dma_map_sg(dev, sgl, nents, ents, dir, attrs)
        return ents
    if trace_dma_map_sg.enabled:
        trace_dma_map_sg(
            device=dev_name(dev),
            dir=dir,
            dma_addrs=tuple(sg.dma_address for sg in segs),
            sizes=tuple(sg.dma_length for sg in segs),
            phys_addrs=tuple(sg.phys for sg in segs),
            attrs=attrs,
        )
    debug.debug_dma_map_sg(dev, sgl, nents, nents, dir, attrs)
    return nents


def dma_map_sg(dev: Device, sgl: list[Scatterlist], nents: int, dir: int) -> int:
    return dma_map_sg_attrs(dev, sgl, nents, dir, 0)


def dma_unmap_sg_attrs(
    dev: Device, sgl: list[Scatterlist], nents: int, dir: int, attrs: int = 0
) -> None:
    """``dma_unmap_sg_attrs``: ``nents`` as passed to dma_map_sg."""
    _bug_on_dir(dir)
    if trace_dma_unmap_sg.enabled:
        phys = tuple(sg.phys for sg in sgl[:nents])
        trace_dma_unmap_sg(device=dev_name(dev), dir=dir, phys_addrs=phys, attrs=attrs)
    debug.debug_dma_unmap_sg(dev, sgl, nents, dir)
    mapped = [sg for sg in sgl[:nents] if sg.dma_length]
    if not dma_map_direct(dev) and mapped:
        last = mapped[-1]
        iommu_dma_unmap_sg_runs(dev, mapped[0].dma_address, last.dma_address + last.dma_length)
    elif dev.dma_uses_io_tlb:
        for sg in mapped:
            dma_direct_unmap_phys(dev, sg.dma_address, sg.dma_length, dir, attrs)
    for sg in mapped:
        sg.dma_address = sg.dma_length = 0


def dma_unmap_sg(dev: Device, sgl: list[Scatterlist], nents: int, dir: int) -> None:
    dma_unmap_sg_attrs(dev, sgl, nents, dir, 0)


def dma_map_sgtable(dev: Device, sgt: SgTable, dir: int, attrs: int = 0) -> None:
    """``dma_map_sgtable``: raises (C returns -EINVAL/-ENOMEM) and sets ``sgt.nents``."""
    n = dma_map_sg_attrs(dev, sgt.sgl, sgt.orig_nents, dir, attrs)
    if n <= 0:
        raise ENOMEM("dma_map_sgtable")
    sgt.nents = n


def dma_unmap_sgtable(dev: Device, sgt: SgTable, dir: int, attrs: int = 0) -> None:
    dma_unmap_sg_attrs(dev, sgt.sgl, sgt.orig_nents, dir, attrs)


# --------------------------------------------------------------------------- syncs


def _sync_single(dev: Device, addr: int, size: int, dir: int, to_cpu: bool) -> None:
    """The bounce-buffer copies of a sync (nothing else to do on coherent x86)."""
    if not dev.dma_uses_io_tlb:
        return
    if not dma_map_direct(dev):
        iommu_dma_sync_single(dev, addr, size, dir, to_cpu)
    elif to_cpu:
        dma_direct_sync_single_for_cpu(dev, addr, size, dir)
    else:
        dma_direct_sync_single_for_device(dev, addr, size, dir)


def dma_sync_single_for_cpu(dev: Device, addr: int, size: int, dir: int) -> None:
    """``dma_sync_single_for_cpu``: a bounced buffer is copied back here."""
    _bug_on_dir(dir)
    _sync_single(dev, addr, size, dir, True)
    if trace_dma_sync_single_for_cpu.enabled:
        trace_dma_sync_single_for_cpu(device=dev_name(dev), dir=dir, dma_addr=addr, size=size)
    debug.debug_dma_sync_single(dev, addr, size, dir, True)


def dma_sync_single_for_device(dev: Device, addr: int, size: int, dir: int) -> None:
    """``dma_sync_single_for_device``: the CPU's writes go to the bounce buffer."""
    _bug_on_dir(dir)
    _sync_single(dev, addr, size, dir, False)
    if trace_dma_sync_single_for_device.enabled:
        trace_dma_sync_single_for_device(device=dev_name(dev), dir=dir, dma_addr=addr, size=size)
    debug.debug_dma_sync_single(dev, addr, size, dir, False)


def dma_sync_single_range_for_cpu(dev: Device, addr: int, offset: int, size: int, dir: int) -> None:
    dma_sync_single_for_cpu(dev, addr + offset, size, dir)


def dma_sync_single_range_for_device(
    dev: Device, addr: int, offset: int, size: int, dir: int
) -> None:
    dma_sync_single_for_device(dev, addr + offset, size, dir)


def _sync_sg_fields(dev: Device, sgl: list[Scatterlist], nelems: int) -> dict[str, object]:
    segs = sgl[:nelems]
    return {
        "device": dev_name(dev),
        "dma_addrs": tuple(sg.dma_address for sg in segs),
        "sizes": tuple(sg.dma_length for sg in segs),
    }


def dma_sync_sg_for_cpu(dev: Device, sgl: list[Scatterlist], nelems: int, dir: int) -> None:
    _bug_on_dir(dir)
    if dev.dma_uses_io_tlb and dma_map_direct(dev):
        for sg in sgl[:nelems]:
            dma_direct_sync_single_for_cpu(dev, sg.dma_address, sg.dma_length, dir)
    if trace_dma_sync_sg_for_cpu.enabled:
        trace_dma_sync_sg_for_cpu(dir=dir, **_sync_sg_fields(dev, sgl, nelems))
    debug.debug_dma_sync_sg(dev, sgl, nelems, dir, True)


def dma_sync_sg_for_device(dev: Device, sgl: list[Scatterlist], nelems: int, dir: int) -> None:
    _bug_on_dir(dir)
    if dev.dma_uses_io_tlb and dma_map_direct(dev):
        for sg in sgl[:nelems]:
            dma_direct_sync_single_for_device(dev, sg.dma_address, sg.dma_length, dir)
    if trace_dma_sync_sg_for_device.enabled:
        trace_dma_sync_sg_for_device(dir=dir, **_sync_sg_fields(dev, sgl, nelems))
    debug.debug_dma_sync_sg(dev, sgl, nelems, dir, False)


# --------------------------------------------------------------------------- coherent


def dma_alloc_attrs(dev: Device, size: int, gfp: int, attrs: int = 0) -> tuple[int | None, int]:
    """``dma_alloc_attrs``: ``(cpu_addr, dma_handle)``; ``(None, DMA_MAPPING_ERROR)``
    on failure."""
    if WARN_ON_ONCE(not dev.coherent_dma_mask) or not _size_ok(size):
        return None, DMA_MAPPING_ERROR
    if dma_map_direct(dev):
        vaddr, handle = dma_direct_alloc(dev, size, gfp)
    else:
        vaddr = alloc_pages_exact(size, gfp | __GFP_ZERO)
        handle = DMA_MAPPING_ERROR
        if vaddr is not None:
            prot = dma_info_to_prot(DMA_BIDIRECTIONAL, True, attrs)
            handle = __iommu_dma_map(dev, vaddr - PAGE_OFFSET, size, prot, dev.coherent_dma_mask)
            if handle == DMA_MAPPING_ERROR:
                free_pages_exact(vaddr, size)
                vaddr = None
    if trace_dma_alloc.enabled:
        trace_dma_alloc(
            device=dev_name(dev),
            dir=DMA_BIDIRECTIONAL,
            dma_addr=handle if vaddr is not None else 0,
            size=size,
            virt_addr=vaddr or 0,
            flags=gfp,
            attrs=attrs,
        )
    if vaddr is None:
        return None, DMA_MAPPING_ERROR
    debug.debug_dma_alloc_coherent(dev, size, handle, vaddr - PAGE_OFFSET)
    return vaddr, handle


def dma_alloc_coherent(dev: Device, size: int, gfp: int) -> tuple[int | None, int]:
    return dma_alloc_attrs(dev, size, gfp, 0)


def dma_free_attrs(
    dev: Device, size: int, cpu_addr: int | None, dma_handle: int, attrs: int = 0
) -> None:
    """``dma_free_attrs``: traced first (a NULL ``cpu_addr`` too), then a NULL ``cpu_addr``
    (a failed allocation) returns before DMA-API debugging sees the call, as in Linux."""
    if trace_dma_free.enabled:
        trace_dma_free(
            device=dev_name(dev),
            dir=DMA_BIDIRECTIONAL,
            dma_addr=dma_handle,
            size=size,
            virt_addr=cpu_addr or 0,
            attrs=attrs,
        )
    if not cpu_addr:
        return
    debug.debug_dma_free_coherent(dev, size, cpu_addr - PAGE_OFFSET, dma_handle)
    if dma_map_direct(dev):
        dma_direct_free(dev, size, cpu_addr, dma_handle)
    else:
        __iommu_dma_unmap(dev, dma_handle, size)
        free_pages_exact(cpu_addr, size)


def dma_free_coherent(dev: Device, size: int, cpu_addr: int | None, dma_handle: int) -> None:
    dma_free_attrs(dev, size, cpu_addr, dma_handle, 0)


# --------------------------------------------------------------------------- pages, resources


def __dma_alloc_pages(dev: Device, size: int, dir: int, gfp: int) -> tuple[Page | None, int]:
    if WARN_ON_ONCE(not dev.coherent_dma_mask) or not _size_ok(size):
        return None, DMA_MAPPING_ERROR
    size = PAGE_ALIGN(size)
    if dma_map_direct(dev):
        vaddr, handle = dma_direct_alloc(dev, size, gfp)
        if vaddr is None:
            return None, DMA_MAPPING_ERROR
        return virt_to_page(vaddr), handle
    # dma_common_alloc_pages: pages from the allocator, mapped as one streaming page.
    vaddr = alloc_pages_exact(size, gfp | __GFP_ZERO)
    if vaddr is None:
        return None, DMA_MAPPING_ERROR
    page = virt_to_page(vaddr)
    handle = iommu_dma_map_phys(dev, page.phys, size, dir, DMA_ATTR_SKIP_CPU_SYNC)
    if handle == DMA_MAPPING_ERROR:
        free_pages_exact(vaddr, size)
        return None, DMA_MAPPING_ERROR
    return page, handle


def dma_alloc_pages(dev: Device, size: int, dir: int, gfp: int) -> tuple[Page | None, int]:
    """``dma_alloc_pages``: zeroed, physically contiguous pages mapped for streaming
    DMA in ``dir``; ``(page, dma_handle)`` (C's out parameter), ``(None,
    DMA_MAPPING_ERROR)`` on failure. The caller owns the syncs, as for a streaming
    mapping. DMA-API debug records a "noncoherent" entry."""
    _bug_on_dir(dir)
    page, handle = __dma_alloc_pages(dev, size, dir, gfp)
    if page is not None:
        debug.debug_dma_alloc_pages(dev, page.phys, PAGE_ALIGN(size), dir, handle, 0)
    return page, handle


def dma_free_pages(dev: Device, size: int, page: Page, dma_handle: int, dir: int) -> None:
    """``dma_free_pages``."""
    size = PAGE_ALIGN(size)
    debug.debug_dma_free_pages(dev, page.phys, size, dir, dma_handle)
    if not dma_map_direct(dev):
        iommu_dma_unmap_phys(dev, dma_handle, size, dir, DMA_ATTR_SKIP_CPU_SYNC)
    free_pages_exact(page_address(page), size)


def dma_alloc_noncoherent(dev: Device, size: int, dir: int, gfp: int) -> tuple[int | None, int]:
    """``dma_alloc_noncoherent``: :func:`dma_alloc_pages` returning the kernel virtual
    address (x86 has no separate non-coherent allocator)."""
    page, handle = dma_alloc_pages(dev, size, dir, gfp)
    return (None, handle) if page is None else (page_address(page), handle)


def dma_free_noncoherent(dev: Device, size: int, vaddr: int, dma_handle: int, dir: int) -> None:
    """``dma_free_noncoherent``."""
    dma_free_pages(dev, size, virt_to_page(vaddr), dma_handle, dir)


def dma_map_resource(dev: Device, phys_addr: int, size: int, dir: int, attrs: int = 0) -> int:
    """``dma_map_resource``: a physical MMIO range (a peer device's BAR) for this
    device's DMA. RAM is refused with a WARN, as ``pfn_valid`` makes Linux do."""
    _bug_on_dir(dir)
    if WARN_ON_ONCE(not dev.dma_mask) or not _size_ok(size):
        return DMA_MAPPING_ERROR
    if WARN_ON_ONCE(0 <= phys_addr < current_mm().mem.size, "dma_map_resource of RAM"):
        return DMA_MAPPING_ERROR
    if dma_map_direct(dev):
        addr = dma_direct_map_resource(dev, phys_addr, size, dir, attrs)
    else:
        addr = iommu_dma_map_resource(dev, phys_addr, size, dir, attrs)
    debug.debug_dma_map_resource(dev, phys_addr, size, dir, addr, attrs)
    return addr


def dma_unmap_resource(dev: Device, addr: int, size: int, dir: int, attrs: int = 0) -> None:
    """``dma_unmap_resource``."""
    _bug_on_dir(dir)
    if not dma_map_direct(dev) and addr != DMA_MAPPING_ERROR:
        iommu_dma_unmap_resource(dev, addr, size, dir, attrs)
    debug.debug_dma_unmap_resource(dev, addr, size, dir)


def dma_need_sync(dev: Device, dma_addr: int) -> bool:
    """``dma_need_sync``: whether ``dma_sync_*`` must be called for this mapping.
    x86 is cache-coherent, so only a swiotlb bounce buffer needs them."""
    if dma_map_direct(dev):
        return is_swiotlb_buffer(dev, dma_addr)
    return dev_use_swiotlb(dev)


def dma_get_sgtable(
    dev: Device, cpu_addr: int, dma_addr: int, size: int, attrs: int = 0
) -> SgTable:
    """``dma_get_sgtable_attrs`` (``dma_common_get_sgtable``): a one-entry table
    describing a coherent buffer's pages. Raises ENXIO for an address that is not
    in the direct map (C returns it)."""
    if not virt_addr_valid(cpu_addr):
        raise ENXIO(f"dma_get_sgtable: {cpu_addr:#x} is not a direct-mapped buffer")
    sgt = sg_alloc_table(1)
    sg_set_page(sgt.sgl[0], virt_to_page(cpu_addr), PAGE_ALIGN(size), 0)
    return sgt


SIZE_MAX = ULONG_MAX


def dma_max_mapping_size(dev: Device) -> int:
    """``dma_max_mapping_size``: one swiotlb segment where mappings may bounce
    (dma-direct with a mask below the end of RAM or forced bouncing; dma-iommu for
    untrusted devices), SIZE_MAX otherwise."""
    if dma_map_direct(dev):
        if is_swiotlb_active(dev) and (
            dev.dma_mask < current_mm().mem.size - 1 or is_swiotlb_force_bounce(dev)
        ):
            return swiotlb_max_mapping_size(dev)
        return SIZE_MAX
    return swiotlb_max_mapping_size(dev) if dev_use_swiotlb(dev) else SIZE_MAX


def dma_opt_mapping_size(dev: Device) -> int:
    """``dma_opt_mapping_size``: dma-iommu's IOVA range-cache limit, capped by
    :func:`dma_max_mapping_size`."""
    size = SIZE_MAX if dma_map_direct(dev) else iommu_dma_opt_mapping_size()
    return min(dma_max_mapping_size(dev), size)


# --------------------------------------------------------------------------- masks, parms


def dma_supported(dev: Device, mask: int) -> bool:
    """``dma_supported``: any mask through an IOMMU; dma-direct needs ZONE_DMA."""
    if dev.dma_iommu:
        return True
    return dma_direct_supported(dev, mask)


def dma_set_mask(dev: Device, mask: int) -> None:
    """``dma_set_mask``: EIO when unsupported (the mask is left unchanged)."""
    mask &= ULONG_MAX
    if not dev.dma_mask or not dma_supported(dev, mask):
        raise EIO(f"{dev.init_name}: DMA mask {mask:#x} not supported")
    dev.dma_mask = mask


def dma_set_coherent_mask(dev: Device, mask: int) -> None:
    mask &= ULONG_MAX
    if not dma_supported(dev, mask):
        raise EIO(f"{dev.init_name}: coherent DMA mask {mask:#x} not supported")
    dev.coherent_dma_mask = mask


def dma_set_mask_and_coherent(dev: Device, mask: int) -> None:
    """``dma_set_mask_and_coherent``."""
    dma_set_mask(dev, mask)
    dma_set_coherent_mask(dev, mask)


def dma_get_mask(dev: Device) -> int:
    return dev.dma_mask if dev.dma_mask else DMA_BIT_MASK(32)


def _parms(dev: Device) -> DeviceDmaParameters:
    if not isinstance(dev.dma_parms, DeviceDmaParameters):
        dev.dma_parms = DeviceDmaParameters()
    return dev.dma_parms


def dma_get_max_seg_size(dev: Device) -> int:
    return _parms(dev).max_segment_size


def dma_set_max_seg_size(dev: Device, size: int) -> None:
    _parms(dev).max_segment_size = size


def dma_get_seg_boundary(dev: Device) -> int:
    return _parms(dev).segment_boundary_mask


def dma_set_seg_boundary(dev: Device, mask: int) -> None:
    _parms(dev).segment_boundary_mask = mask


def dma_dir_name(dir: int) -> str:
    return DIR2NAME[dir]
