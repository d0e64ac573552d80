"""drivers/iommu/iommufd/io_pagetable.c (Linux 6.12): ``struct io_pagetable``, the
IOVA space of an IOAS.

An io_pagetable holds the *areas* (each a range of IOVA backed by a slice of an
:class:`~kernel.iommufd.pages.IoptPages`), the *allowed* ranges user space set
(IOMMU_IOAS_ALLOW_IOVAS: automatic IOVAs come only from them), the *reserved*
ranges (each device's reserved regions, each domain's aperture outside its
geometry: nothing may be mapped there) and the *domains* every area is mapped into.

Errnos, as upstream: a fixed IOVA not aligned to ``iova_alignment`` or overlapping
a reserved range is EINVAL, overlapping an area EEXIST, ``iova + length`` wrapping
EOVERFLOW; no room for an automatic IOVA is ENOSPC; reserving over an area or an
allowed range, or allowing a reserved range, is EADDRINUSE; unmapping part of an
area, or nothing, is ENOENT; copying from a range not fully mapped is ENOENT.

Departures: intervals are kept in sorted containers instead of interval trees;
one thread, so no ``iova_rwsem``/``domains_rwsem``; accesses (``iommufd_access``
pins for emulated devices) are not modelled.
"""

from __future__ import annotations

from collections.abc import Iterator

from attrs import define, field
from sortedcontainers import SortedDict

from kernel.bug import WARN_ON
from kernel.device import Device
from kernel.errno import (
    EADDRINUSE,
    EEXIST,
    EINVAL,
    ENOENT,
    ENOMEM,
    ENOSPC,
    EOPNOTSUPP,
    EOVERFLOW,
    KernelError,
)
from kernel.fault_inject import should_fail
from kernel.iommu.iommu_h import ULONG_MAX, IommuDomain, IommuIotlbGather, iommu_iotlb_sync
from kernel.iommu.iommu_map import iommu_map, iommu_unmap
from kernel.iommu.iommu_resv import (
    IOMMU_RESV_DIRECT_RELAXABLE,
    IOMMU_RESV_SW_MSI,
    IommuResvRegion,
    iommu_get_resv_regions,
)
from kernel.iommufd.iova_bitmap import (
    IOMMU_DIRTY_NO_CLEAR,
    IommuDirtyBitmap,
    IommuDirtyOps,
    IovaBitmap,
    iova_bitmap_flush,
)
from kernel.iommufd.pages import (
    IoptPages,
    iopt_pages_phys_runs,
    iopt_pages_pin,
    iopt_pages_unpin,
    iopt_put_pages,
)
from kernel.mm import GFP_KERNEL, PAGE_SIZE


@define(eq=False)
class IoptArea:
    """``struct iopt_area``: ``[iova, last]`` backed by ``pages`` from byte
    ``start_byte`` (an offset from ``pages.uptr``)."""

    iova: int
    last: int
    pages: IoptPages = field(repr=False)
    start_byte: int
    iommu_prot: int
    filled: bool = False
    """Pinned and mapped into every domain of the io_pagetable."""

    @property
    def length(self) -> int:
        return self.last - self.iova + 1

    @property
    def page_offset(self) -> int:
        return self.start_byte % PAGE_SIZE

    @property
    def first_index(self) -> int:
        """``iopt_area_index``: the first page of ``pages`` the area uses."""
        return self.start_byte // PAGE_SIZE

    @property
    def npages(self) -> int:
        return (self.start_byte + self.length - 1) // PAGE_SIZE - self.first_index + 1


@define(eq=False)
class IoptReserved:
    """``struct iopt_reserved``: a range nothing may be mapped into, and its owner
    (a device for its reserved regions, a domain for its aperture)."""

    start: int
    last: int
    owner: object = field(repr=False)


@define(eq=False)
class IoPagetable:
    """``struct io_pagetable``."""

    areas: SortedDict = field(factory=SortedDict)  # type: ignore[type-arg]
    """iova -> :class:`IoptArea`."""
    allowed: list[tuple[int, int]] = field(factory=list)
    reserved: list[IoptReserved] = field(factory=list)
    domains: list[IommuDomain] = field(factory=list, repr=False)
    iova_alignment: int = 1
    disable_large_pages: bool = False

    def area_list(self) -> list[IoptArea]:
        return list(self.areas.values())


# --------------------------------------------------------------------------- lookups


def iopt_area_iter(iopt: IoPagetable, start: int, last: int) -> Iterator[IoptArea]:
    """``iopt_for_each_area``: areas intersecting ``[start, last]`` in IOVA order."""
    areas = iopt.areas
    i = areas.bisect_right(start)
    if i:
        prev: IoptArea = areas.peekitem(i - 1)[1]
        if prev.last >= start:
            yield prev
    for key in areas.islice(i):
        if key > last:
            return
        yield areas[key]


def _reserved_hit(iopt: IoPagetable, start: int, last: int) -> IoptReserved | None:
    return next((r for r in iopt.reserved if r.start <= last and start <= r.last), None)


def _allowed_hit(iopt: IoPagetable, start: int, last: int) -> bool:
    return any(a <= last and start <= b for a, b in iopt.allowed)


# --------------------------------------------------------------------------- IOVA choice


def iopt_check_iova(iopt: IoPagetable, iova: int, length: int) -> None:
    """``iopt_check_iova``: a fixed IOVA must be aligned, not wrap, miss the reserved
    ranges (EINVAL) and miss every area (EEXIST)."""
    if iova & (iopt.iova_alignment - 1):
        raise EINVAL(f"IOVA {iova:#x} not aligned to {iopt.iova_alignment:#x}")
    last = iova + length - 1
    if last > ULONG_MAX:
        raise EOVERFLOW(f"IOVA {iova:#x} + {length:#x} wraps")
    if _reserved_hit(iopt, iova, last) is not None:
        raise EINVAL(f"IOVA range {iova:#x}-{last:#x} is reserved")
    if next(iopt_area_iter(iopt, iova, last), None) is not None:
        raise EEXIST(f"IOVA range {iova:#x}-{last:#x} is already mapped")


def _holes(iopt: IoPagetable) -> Iterator[tuple[int, int]]:
    """Free IOVA spans: allowed (or everything) minus reserved ranges and areas."""
    used = sorted(
        [(r.start, r.last) for r in iopt.reserved] + [(a.iova, a.last) for a in iopt.areas.values()]
    )
    for lo, hi in sorted(iopt.allowed) or [(0, ULONG_MAX)]:
        at = lo
        for s, e in used:
            if e < at or s > hi:
                continue
            if s > at:
                yield at, s - 1
            at = max(at, e + 1)
            if at > hi:
                break
        if at <= hi:
            yield at, hi


def iopt_alloc_iova(iopt: IoPagetable, uptr: int, length: int) -> int:
    """``iopt_alloc_iova``: the lowest free IOVA with the alignment the length and
    the user address allow (at least ``iova_alignment``); ENOSPC when none fits."""
    if not length or length & (iopt.iova_alignment - 1):
        raise EINVAL(f"length {length:#x} not aligned to {iopt.iova_alignment:#x}")
    align = 1 << (length - 1).bit_length()
    if uptr:
        align = min(align, uptr & -uptr)
    align = max(align, PAGE_SIZE if uptr % PAGE_SIZE == 0 else 1, iopt.iova_alignment)
    page_offset = uptr % PAGE_SIZE
    for lo, hi in _holes(iopt):
        iova = (lo + align - 1) & ~(align - 1)
        if page_offset and iopt.iova_alignment == 1:
            iova = ((lo - page_offset + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) + page_offset
        if iova >= lo and iova + length - 1 <= hi:
            return iova
    raise ENOSPC(f"no free IOVA range of {length:#x} bytes")


# --------------------------------------------------------------------------- filling domains


def _map_area(iopt: IoPagetable, area: IoptArea, domain: IommuDomain) -> None:
    """``iopt_area_fill_domain``'s mapping: the area's pinned runs into ``domain``,
    one page at a time when large pages are disabled."""
    iova = area.iova - area.page_offset
    done = 0
    try:
        for phys, n in iopt_pages_phys_runs(area.pages, area.first_index, area.npages):
            if iopt.disable_large_pages:
                for i in range(n):
                    iommu_map(
                        domain, iova + i * PAGE_SIZE, phys + i * PAGE_SIZE, PAGE_SIZE,
                        area.iommu_prot, GFP_KERNEL,
                    )  # fmt: skip
                    done += PAGE_SIZE
            else:
                iommu_map(domain, iova, phys, n * PAGE_SIZE, area.iommu_prot, GFP_KERNEL)
                done += n * PAGE_SIZE
            iova += n * PAGE_SIZE
    except KernelError:
        if done:
            iommu_unmap(domain, area.iova - area.page_offset, done)
        raise


def _unmap_area(area: IoptArea, domain: IommuDomain) -> None:
    size = area.npages * PAGE_SIZE
    got = iommu_unmap(domain, area.iova - area.page_offset, size)
    WARN_ON(got != size, f"iommufd: unmapped {got:#x} of {size:#x}")


def iopt_area_fill_domains(iopt: IoPagetable, area: IoptArea) -> None:
    """``iopt_area_fill_domains``: pin the area's pages and map them into every
    domain; undone completely on failure. Nothing to do without domains."""
    if not iopt.domains or area.filled:
        return
    iopt_pages_pin(area.pages)
    done: list[IommuDomain] = []
    try:
        for d in iopt.domains:
            _map_area(iopt, area, d)
            done.append(d)
    except KernelError:
        for d in done:
            _unmap_area(area, d)
        iopt_pages_unpin(area.pages)
        raise
    area.filled = True


def iopt_area_unfill_domains(iopt: IoPagetable, area: IoptArea) -> None:
    """``iopt_area_unfill_domains``: unmap from every domain and unpin."""
    if not area.filled:
        return
    for d in iopt.domains:
        _unmap_area(area, d)
    iopt_pages_unpin(area.pages)
    area.filled = False


def _domain_alignment(domain: IommuDomain) -> int:
    bitmap = domain.pgsize_bitmap
    return max(bitmap & -bitmap, PAGE_SIZE)


def iopt_table_add_domain(iopt: IoPagetable, domain: IommuDomain) -> None:
    """``iopt_table_add_domain``: reserve what lies outside the domain's aperture,
    raise the IOVA alignment to its smallest page (EADDRINUSE if an area breaks
    either), then map every area into it; all undone on failure."""
    if WARN_ON(domain in iopt.domains):
        raise EINVAL("domain already in the io_pagetable")
    align = max(iopt.iova_alignment, _domain_alignment(domain))
    for a in iopt.areas.values():
        if a.iova & (align - 1) or a.page_offset & (align - 1):
            raise EADDRINUSE(f"area at {a.iova:#x} is not aligned to {align:#x}")
    geo = domain.geometry
    if geo.aperture_start:
        iopt_reserve_iova(iopt, 0, geo.aperture_start - 1, domain)
    if geo.aperture_end < ULONG_MAX:
        try:
            iopt_reserve_iova(iopt, geo.aperture_end + 1, ULONG_MAX, domain)
        except KernelError:
            iopt_remove_reserved_iova(iopt, domain)
            raise
    old_align = iopt.iova_alignment
    iopt.iova_alignment = align
    pinned: list[IoptArea] = []
    mapped: list[IoptArea] = []
    try:
        for a in iopt.areas.values():
            if not a.filled:
                iopt_pages_pin(a.pages)
                a.filled = True
                pinned.append(a)
            _map_area(iopt, a, domain)
            mapped.append(a)
    except KernelError:
        for a in mapped:
            _unmap_area(a, domain)
        for a in pinned:
            iopt_pages_unpin(a.pages)
            a.filled = False
        iopt.iova_alignment = old_align
        iopt_remove_reserved_iova(iopt, domain)
        raise
    iopt.domains.append(domain)


def iopt_table_remove_domain(iopt: IoPagetable, domain: IommuDomain) -> None:
    """``iopt_table_remove_domain``: unmap every area from ``domain``; with the last
    domain gone the pages are unpinned. Its aperture reservation goes too."""
    if WARN_ON(domain not in iopt.domains):
        return
    last = len(iopt.domains) == 1
    for a in iopt.areas.values():
        if last:
            iopt_area_unfill_domains(iopt, a)
        elif a.filled:
            _unmap_area(a, domain)
    iopt.domains.remove(domain)
    iopt_remove_reserved_iova(iopt, domain)
    iopt_calculate_iova_alignment(iopt)  # only ever lowers it here


# --------------------------------------------------------------------------- map / unmap


@define(eq=False)
class IoptPagesList:
    """``struct iopt_pages_list``: a slice of pages to map (``start_byte`` from the
    pages' first page, ``length`` bytes)."""

    pages: IoptPages
    start_byte: int
    length: int


def iopt_map_pages(
    iopt: IoPagetable, pages_list: list[IoptPagesList], length: int, iova: int | None, prot: int
) -> int:
    """``iopt_map_pages``: areas for the slices at ``iova`` (None: allocate one),
    filled into every domain; returns the IOVA. On failure nothing is left."""
    if not length:
        raise EINVAL("map of length 0")
    if iova is None:
        first = pages_list[0]
        iova = iopt_alloc_iova(iopt, first.pages.uptr + first.start_byte, length)
    else:
        iopt_check_iova(iopt, iova, length)
    made: list[IoptArea] = []
    try:
        at = iova
        for elm in pages_list:
            if should_fail("kmalloc"):
                raise ENOMEM("iopt_area (injected)")
            area = IoptArea(at, at + elm.length - 1, elm.pages, elm.start_byte, prot)
            if area.iova & (iopt.iova_alignment - 1) or area.page_offset & (
                iopt.iova_alignment - 1
            ):
                raise EINVAL(f"area at {area.iova:#x} breaks the IOVA alignment")
            elm.pages.users += 1
            iopt.areas[area.iova] = area
            made.append(area)
            iopt_area_fill_domains(iopt, area)
            at += elm.length
    except KernelError:
        for area in made:
            iopt_area_unfill_domains(iopt, area)
            del iopt.areas[area.iova]
            area.pages.users -= 1  # the caller's list still holds the pages
        raise
    return iova


def iopt_unmap_iova(iopt: IoPagetable, iova: int, length: int) -> int:
    """``iopt_unmap_iova``: remove every area inside ``[iova, iova + length)``;
    ENOENT when an area sticks out of the range or nothing was there."""
    if not length:
        raise EINVAL("unmap of length 0")
    last = iova + length - 1
    if last > ULONG_MAX:
        raise EOVERFLOW(f"IOVA {iova:#x} + {length:#x} wraps")
    return _unmap_range(iopt, iova, last)


def _unmap_range(iopt: IoPagetable, start: int, last: int) -> int:
    victims = list(iopt_area_iter(iopt, start, last))
    for a in victims:
        if a.iova < start or a.last > last:
            raise ENOENT(f"area {a.iova:#x}-{a.last:#x} is not inside the unmap range")
    if not victims:
        raise ENOENT(f"nothing mapped in {start:#x}-{last:#x}")
    unmapped = 0
    for a in victims:
        iopt_area_unfill_domains(iopt, a)
        del iopt.areas[a.iova]
        iopt_put_pages(a.pages)
        unmapped += a.length
    return unmapped


def iopt_unmap_all(iopt: IoPagetable) -> int:
    """``iopt_unmap_all``: every area (0 and no error when there are none)."""
    if not iopt.areas:
        return 0
    return _unmap_range(iopt, 0, ULONG_MAX)


def iopt_get_pages(iopt: IoPagetable, iova: int, length: int) -> list[IoptPagesList]:
    """``iopt_get_pages``: the slices backing ``[iova, iova + length)``; ENOENT if
    any byte of it is not mapped."""
    if not length:
        raise EINVAL("length 0")
    last = iova + length - 1
    if last > ULONG_MAX:
        raise EOVERFLOW(f"IOVA {iova:#x} + {length:#x} wraps")
    out: list[IoptPagesList] = []
    at = iova
    for a in iopt_area_iter(iopt, iova, last):
        if a.iova > at:
            break
        end = min(a.last, last)
        out.append(IoptPagesList(a.pages, a.start_byte + (at - a.iova), end - at + 1))
        at = end + 1
    if at <= last:
        raise ENOENT(f"IOVA {at:#x} is not mapped")
    return out


def iopt_area_split(iopt: IoPagetable, area: IoptArea, iova: int) -> None:
    """``iopt_area_split``: cut ``area`` so that a new area starts at ``iova``. A
    filled area can only be cut where its domains mapped single pages (large pages
    disabled), else EINVAL; the cut must be aligned (EINVAL)."""
    if iova <= area.iova or iova > area.last:
        return
    if iova & (max(iopt.iova_alignment, PAGE_SIZE if area.filled else 1) - 1):
        raise EINVAL(f"cut at {iova:#x} is not aligned")
    if area.filled and not iopt.disable_large_pages:
        raise EINVAL("cannot split an area that may be mapped with large pages")
    if should_fail("kmalloc"):
        raise ENOMEM("iopt_area split (injected)")
    rest = IoptArea(
        iova, area.last, area.pages, area.start_byte + (iova - area.iova), area.iommu_prot
    )
    area.last = iova - 1
    area.pages.users += 1
    if area.filled:
        iopt_pages_pin(area.pages)
        rest.filled = True
    iopt.areas[rest.iova] = rest


def iopt_cut_iova(iopt: IoPagetable, iovas: list[int]) -> None:
    """``iopt_cut_iova``: make an area boundary after each of ``iovas`` (the VFIO
    type1 compatibility path's partial unmap, with large pages disabled)."""
    for cut in iovas:
        area = next(iopt_area_iter(iopt, cut, cut), None)
        if area is not None and cut < area.last:
            iopt_area_split(iopt, area, cut + 1)


# --------------------------------------------------------------------------- allowed / reserved


def iopt_set_allow_iova(iopt: IoPagetable, ranges: list[tuple[int, int]]) -> None:
    """``iopt_set_allow_iova``: replace the allowed ranges; EINVAL for an inverted
    range, EADDRINUSE when one covers a reserved range."""
    for start, last in ranges:
        if start > last:
            raise EINVAL(f"allowed range {start:#x}-{last:#x} is inverted")
        if _reserved_hit(iopt, start, last) is not None:
            raise EADDRINUSE(f"allowed range {start:#x}-{last:#x} covers a reserved range")
    iopt.allowed = list(ranges)


def iopt_reserve_iova(iopt: IoPagetable, start: int, last: int, owner: object) -> None:
    """``iopt_reserve_iova``: EADDRINUSE over an area or an allowed range."""
    if _allowed_hit(iopt, start, last):
        raise EADDRINUSE(f"reserved range {start:#x}-{last:#x} is in an allowed range")
    if next(iopt_area_iter(iopt, start, last), None) is not None:
        raise EADDRINUSE(f"reserved range {start:#x}-{last:#x} is mapped")
    if should_fail("kmalloc"):
        raise ENOMEM("iopt_reserved (injected)")
    iopt.reserved.append(IoptReserved(start, last, owner))


def iopt_remove_reserved_iova(iopt: IoPagetable, owner: object) -> None:
    """``iopt_remove_reserved_iova``: every range ``owner`` reserved."""
    iopt.reserved = [r for r in iopt.reserved if r.owner is not owner]


def iopt_table_enforce_dev_resv_regions(iopt: IoPagetable, dev: Device) -> int | None:
    """``iopt_table_enforce_dev_resv_regions``: reserve ``dev``'s reserved regions
    (DIRECT_RELAXABLE ones excepted) owned by ``dev``; returns the SW_MSI window's
    start if the driver reports one. All or nothing."""
    regions: list[IommuResvRegion] = []
    iommu_get_resv_regions(dev, regions)
    sw_msi: int | None = None
    try:
        for r in regions:
            if r.type == IOMMU_RESV_DIRECT_RELAXABLE:
                continue
            if r.type == IOMMU_RESV_SW_MSI:
                sw_msi = r.start
            iopt_reserve_iova(iopt, r.start, r.start + r.length - 1, dev)
    except KernelError:
        iopt_remove_reserved_iova(iopt, dev)
        raise
    return sw_msi


def iopt_calculate_iova_alignment(iopt: IoPagetable) -> None:
    """``iopt_calculate_iova_alignment``: PAGE_SIZE with large pages disabled (an
    area must then be cuttable at any page), else 1, raised to every domain's
    smallest page. Raising it over an area that breaks it is EADDRINUSE."""
    new = PAGE_SIZE if iopt.disable_large_pages else 1
    for d in iopt.domains:
        new = max(new, _domain_alignment(d))
    if new > iopt.iova_alignment:
        for a in iopt.areas.values():
            if a.iova & (new - 1) or a.page_offset & (new - 1):
                raise EADDRINUSE(f"area at {a.iova:#x} is not aligned to {new:#x}")
    iopt.iova_alignment = new


def iopt_disable_large_pages(iopt: IoPagetable) -> None:
    """``iopt_disable_large_pages``: EINVAL once areas are mapped into domains; the
    IOVA alignment becomes at least PAGE_SIZE (EADDRINUSE, and large pages stay
    enabled, if an area is not aligned to it)."""
    if iopt.disable_large_pages:
        return
    if iopt.domains and iopt.areas:
        raise EINVAL("large pages can only be disabled before mapping")
    iopt.disable_large_pages = True
    try:
        iopt_calculate_iova_alignment(iopt)
    except KernelError:
        iopt.disable_large_pages = False
        raise


def iopt_enable_large_pages(iopt: IoPagetable) -> None:
    """``iopt_enable_large_pages``: the alignment drops back to the domains'."""
    iopt.disable_large_pages = False
    iopt_calculate_iova_alignment(iopt)


# --------------------------------------------------------------------------- dirty tracking


def _dirty_ops(domain: IommuDomain) -> IommuDirtyOps:
    ops: IommuDirtyOps | None = domain.dirty_ops
    if ops is None:
        raise EOPNOTSUPP("the domain does not track dirty pages")
    return ops


def iopt_clear_dirty_data(iopt: IoPagetable, domain: IommuDomain) -> None:
    """``iopt_clear_dirty_data``: clear every dirty bit the domain's tables hold for
    the areas (no bitmap), then flush what was cleared."""
    ops = _dirty_ops(domain)
    gather = IommuIotlbGather()
    dirty = IommuDirtyBitmap(None, gather)
    for a in iopt.areas.values():
        ops.read_and_clear_dirty(domain, a.iova, a.length, 0, dirty)
    iommu_iotlb_sync(domain, gather)


def iopt_set_dirty_tracking(iopt: IoPagetable, domain: IommuDomain, enable: bool) -> None:
    """``iopt_set_dirty_tracking``: EOPNOTSUPP for a domain without dirty ops; enabling
    first clears stale dirty bits so the first report starts clean."""
    ops = _dirty_ops(domain)
    if enable:
        iopt_clear_dirty_data(iopt, domain)
    ops.set_dirty_tracking(domain, enable)


def iommufd_check_iova_range(iopt: IoPagetable, iova: int, length: int, page_size: int) -> None:
    """``iommufd_check_iova_range``: the bitmap's range must not wrap (EOVERFLOW) and
    must be aligned to the IOVA alignment and to its page size (EINVAL)."""
    last = iova + length - 1
    if length == 0 or last > ULONG_MAX:
        raise EOVERFLOW(f"dirty range {iova:#x} + {length:#x}")
    align = iopt.iova_alignment
    if iova & (align - 1) or (last + 1) & (align - 1):
        raise EINVAL(f"dirty range {iova:#x}-{last:#x} not aligned to {align:#x}")
    if not page_size:
        raise EINVAL("bitmap page size 0")
    if iova & (page_size - 1) or (last + 1) & (page_size - 1):
        raise EINVAL(f"dirty range {iova:#x}-{last:#x} not aligned to page size {page_size:#x}")


def iopt_read_and_clear_dirty_data(
    iopt: IoPagetable, domain: IommuDomain, flags: int, bitmap: IovaBitmap
) -> None:
    """``iopt_read_and_clear_dirty_data``: the domain's dirty pages inside the areas of
    the bitmap's range set in the user bitmap, and (unless NO_CLEAR) cleared in the
    tables with their IOTLB entries flushed."""
    iommufd_check_iova_range(iopt, bitmap.iova, bitmap.length, bitmap.page_size)
    ops = _dirty_ops(domain)
    if should_fail("kmalloc"):
        raise ENOMEM("iova_bitmap (injected)")
    gather = IommuIotlbGather()
    dirty = IommuDirtyBitmap(bitmap, gather)
    last = bitmap.iova + bitmap.length - 1
    for a in iopt_area_iter(iopt, bitmap.iova, last):
        start = max(a.iova, bitmap.iova)
        ops.read_and_clear_dirty(domain, start, min(a.last, last) - start + 1, flags, dirty)
    if not flags & IOMMU_DIRTY_NO_CLEAR:
        iommu_iotlb_sync(domain, gather)
    iova_bitmap_flush(bitmap)
