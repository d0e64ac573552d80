"""The domain map/unmap API of drivers/iommu/iommu.c: ``iommu_map``,
``iommu_map_sg``, ``iommu_sync_map``, ``iommu_unmap``, ``iommu_unmap_fast``,
``iommu_iova_to_phys`` and the page-size splitting (``iommu_pgsize``) they share.

Split from kernel/iommu/iommu.py (groups, attach, probe) where the C file's concern
changes from devices to a domain's page tables; behaviour is 6.12's, as documented
on each function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from kernel.bug import WARN_ON
from kernel.errno import EINVAL, ENODEV, ENOMEM, EOVERFLOW, KernelError
from kernel.iommu.iommu_h import (
    __IOMMU_DOMAIN_PAGING,
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_IDENTITY,
    ULONG_MAX,
    IommuDomain,
    IommuIotlbGather,
    IommuPagingDomainOps,
    has_optional_op,
    iommu_iotlb_sync,
)
from kernel.printk import pr_err
from kernel.trace import trace_map, trace_unmap

if TYPE_CHECKING:
    from kernel.dma.scatterlist import Scatterlist


_ADDR_END = ULONG_MAX + 1
"""One past the last 64-bit address: ``addr + size - 1 > ULONG_MAX`` is ``addr + size >
_ADDR_END``."""


def iommu_pgsize(domain: IommuDomain, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """``iommu_pgsize``: the biggest page size that fits alignment and size, and how
    many of them to map before a bigger page size becomes possible. (``__fls``/``__ffs``
    and ``GENMASK`` are written out with ``int.bit_length``: this runs per map and unmap.)"""
    bitmap = domain.pgsize_bitmap
    addr_merge = paddr | iova
    pgsizes = bitmap & ((1 << size.bit_length()) - 1)  # GENMASK(__fls(size), 0)
    if addr_merge:
        pgsizes &= (1 << (addr_merge & -addr_merge).bit_length()) - 1  # GENMASK(__ffs(), 0)
    if not pgsizes:
        WARN_ON(True)
        return 0, 0
    idx = pgsizes.bit_length() - 1
    pgsize = 1 << idx
    bigger = bitmap & -(pgsize << 1)  # bitmap & ~GENMASK(idx, 0)
    if bigger:
        nxt = bigger & -bigger  # BIT(__ffs(bigger))
        offset = nxt - (addr_merge & (nxt - 1))
        if offset + nxt <= size:
            size = offset
    return pgsize, size >> idx


def __iommu_map(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int, gfp: int) -> None:
    """``__iommu_map``. Linux's order of checks: a non-paging domain is EINVAL (no
    WARN), then a paging domain without map support is a driver bug (WARN, ENODEV),
    then alignment, size and overflow. One smallest page (every ``dma_map_single`` of
    a page) takes the loop once without :func:`iommu_pgsize`."""
    if not domain.type & __IOMMU_DOMAIN_PAGING:
        raise EINVAL(f"domain type {domain.type:#x} is not a paging domain")
    ops: Any = domain.ops
    try:
        map_pages = ops.map_pages
    except AttributeError:  # a NULL ops->map_pages (the attribute read is has_optional_op)
        map_pages = None
    bitmap = domain.pgsize_bitmap
    if map_pages is None or bitmap == 0:
        WARN_ON(True)
        raise ENODEV("domain cannot map")
    min_pagesz = bitmap & -bitmap
    if (iova | paddr | size) & (min_pagesz - 1):
        pr_err(
            f"unaligned: iova {iova:#x} pa {paddr:#018x} size {size:#x} min_pagesz {min_pagesz:#x}"
        )
        raise EINVAL("unaligned iommu_map")
    if size == 0:
        raise EINVAL("iommu_map of size 0")
    if iova + size > _ADDR_END or paddr + size > _ADDR_END:
        raise EOVERFLOW(f"iommu_map: iova {iova:#x} + size {size:#x} overflows")
    if size == min_pagesz:  # the loop below, once, with iommu_pgsize's (min_pagesz, 1)
        mapped = map_pages(domain, iova, paddr, size, 1, prot, gfp)
        if mapped < size:
            if mapped:
                iommu_unmap(domain, iova, mapped)
            raise ENOMEM(f"map_pages stopped after {mapped:#x} of {size:#x}")
        if trace_map.enabled:
            trace_map(iova=iova, paddr=paddr, size=mapped)
        return
    orig_iova = iova
    mapped_total = 0
    try:
        while size:
            if size == min_pagesz:  # the last smallest page (iova and paddr stay aligned)
                pgsize, count = min_pagesz, 1
            else:
                pgsize, count = iommu_pgsize(domain, iova, paddr, size)
            mapped = map_pages(domain, iova, paddr, pgsize, count, prot, gfp)
            mapped_total += mapped
            if mapped < pgsize * count:
                raise ENOMEM(f"map_pages stopped after {mapped:#x} of {pgsize * count:#x}")
            if trace_map.enabled:
                trace_map(iova=iova, paddr=paddr, size=mapped)
            iova += mapped
            paddr += mapped
            size -= mapped
    except KernelError:
        if mapped_total:
            iommu_unmap(domain, orig_iova, mapped_total)
        raise


def iommu_map(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int, gfp: int) -> None:
    """``iommu_map``: split into page-size runs (``pgsize_bitmap``), map them, then
    ``iotlb_sync_map``; a failure unmaps everything this call mapped."""
    __iommu_map(domain, iova, paddr, size, prot, gfp)
    ops: Any = domain.ops
    try:
        sync_map = ops.iotlb_sync_map
    except AttributeError:  # a NULL ops->iotlb_sync_map
        sync_map = None
    if sync_map is not None:
        try:
            sync_map(domain, iova, size)
        except KernelError:
            iommu_unmap(domain, iova, size)
            raise


def iommu_map_sg(
    domain: IommuDomain,
    iova: int,
    sgl: Sequence[Scatterlist],
    nents: int,
    prot: int,
    gfp: int,
) -> int:
    """``iommu_map_sg``: map the first ``nents`` entries back to back from ``iova``,
    each run of physically contiguous neighbours in one ``__iommu_map``, then ONE
    ``iotlb_sync_map`` over everything mapped. Returns the bytes mapped, or -errno
    with everything this call mapped unmapped again (each failing ``__iommu_map``
    unrolls its own part first).

    As 6.12, the run in progress is flushed by a pass over the last entry once more
    (C's ``while (i <= nents)``), so a run is left unmapped only when that entry
    starts where the run ends (a zero-length last entry): the result is then short
    and the caller sees fewer bytes than it asked for. Differs: there are no P2PDMA
    bus-address entries to skip (``sg_dma_is_bus_address``) and no GFP-flag WARN
    (as :func:`iommu_map` here)."""
    sync_map = getattr(domain.ops, "iotlb_sync_map", None)
    mapped = start = length = 0
    try:
        for i in range(nents):
            sg = sgl[i]
            s_phys = sg.phys
            if length and s_phys != start + length:
                __iommu_map(domain, iova + mapped, start, length, prot, gfp)
                mapped += length
                length = 0
            if length:
                length += sg.length
            else:
                length, start = sg.length, s_phys
        if length and sgl[nents - 1].phys != start + length:
            __iommu_map(domain, iova + mapped, start, length, prot, gfp)
            mapped += length
        if sync_map is not None:
            sync_map(domain, iova, mapped)
    except KernelError as e:
        iommu_unmap(domain, iova, mapped)
        return -e.errno
    return mapped


iommu_map_nosync = __iommu_map
"""``iommu_map_nosync`` (newer than 6.12, for the two-step IOVA API): map without
``iotlb_sync_map``; the caller syncs with :func:`iommu_sync_map`."""


def iommu_sync_map(domain: IommuDomain, iova: int, size: int) -> None:
    """``iommu_sync_map`` (newer than 6.12): the domain's ``iotlb_sync_map``."""
    sync_map = getattr(domain.ops, "iotlb_sync_map", None)
    if sync_map is not None:
        sync_map(domain, iova, size)


def iommu_unmap_fast(domain: IommuDomain, iova: int, size: int, gather: IommuIotlbGather) -> int:
    """``iommu_unmap_fast`` with ``__iommu_unmap`` folded in (one frame per dma_unmap):
    unmap page-size runs into ``gather``; the caller syncs it (or queues it). Returns
    the bytes unmapped, 0 for a non-paging domain or a bad range. One smallest page
    (every ``dma_unmap_single`` of a page) is unmapped before the loop."""
    if not domain.type & __IOMMU_DOMAIN_PAGING:
        return 0
    ops: Any = domain.ops
    try:
        unmap_pages = ops.unmap_pages
    except AttributeError:  # a NULL ops->unmap_pages
        unmap_pages = None
    bitmap = domain.pgsize_bitmap
    if unmap_pages is None or bitmap == 0:
        WARN_ON(True)
        return 0
    min_pagesz = bitmap & -bitmap
    if iova + size > _ADDR_END:
        return 0
    if (iova | size) & (min_pagesz - 1):
        pr_err(f"unaligned: iova {iova:#x} size {size:#x} min_pagesz {min_pagesz:#x}")
        return 0
    unmapped = 0
    if size == min_pagesz:  # the loop's first pass, which ends it unless the answer is short
        got: int = unmap_pages(domain, iova, size, 1, gather)
        if got and trace_unmap.enabled:
            trace_unmap(iova=iova, size=size, unmapped_size=got)
        if not got or got >= size:
            return got
        iova += got
        unmapped = got
    while unmapped < size:
        left = size - unmapped
        if left == min_pagesz and not iova & (min_pagesz - 1):
            pgsize, count = min_pagesz, 1  # iommu_pgsize's answer for one smallest page
        else:
            pgsize, count = iommu_pgsize(domain, iova, iova, left)
        got = unmap_pages(domain, iova, pgsize, count, gather)
        if not got:
            break
        if trace_unmap.enabled:
            trace_unmap(iova=iova, size=pgsize * count, unmapped_size=got)
        iova += got
        unmapped += got
    return unmapped


def iommu_unmap(domain: IommuDomain, iova: int, size: int) -> int:
    """``iommu_unmap``: returns the bytes unmapped (0 for a range not mapped, as C)."""
    gather = IommuIotlbGather()
    ret = iommu_unmap_fast(domain, iova, size, gather)
    iommu_iotlb_sync(domain, gather)
    return ret


def iommu_iova_to_phys(domain: IommuDomain, iova: int) -> int:
    """``iommu_iova_to_phys``: identity domains translate to themselves; 0 if unmapped,
    and 0 for a domain whose ops have no ``iova_to_phys`` (blocked, SVA)."""
    if domain.type == IOMMU_DOMAIN_IDENTITY:
        return iova
    ops = domain.ops
    if domain.type == IOMMU_DOMAIN_BLOCKED or not has_optional_op(ops, "iova_to_phys"):
        return 0
    return cast(IommuPagingDomainOps, ops).iova_to_phys(domain, iova)
