"""IOVA allocator (drivers/iommu/iova.c, include/linux/iova.h).

Ranges are page-frame intervals ``[pfn_lo, pfn_hi]`` kept in a
:class:`sortedcontainers.SortedDict` (``pfn_lo -> pfn_hi``) in place of the rbtree,
with the permanent anchor at :data:`IOVA_ANCHOR`. Allocation is top-down from the
cached node (``cached_node`` above 4 GiB, ``cached32_node`` below), size-aligned
when asked, with the retry from the limit and ``max32_alloc_size`` of iova.c.
``alloc_iova_fast``/``free_iova_fast`` go through per-order range caches
(``IOVA_RANGE_CACHE_MAX_SIZE`` orders, magazines of ``IOVA_MAG_SIZE`` pfns, a
loaded and a previous magazine for the one CPU, and a depot).

Differences from Linux: one CPU, so one ``cpu_rcache`` per order; the depot is
unbounded and not trimmed by delayed work; ``alloc_iova`` returns the pfn_lo
(or 0 on failure) instead of a ``struct iova *``.
"""

from __future__ import annotations

from attrs import define, field
from sortedcontainers import SortedDict

from kernel.bug import WARN
from kernel.fault_inject import should_fail

IOVA_ANCHOR = (1 << 64) - 1
IOVA_RANGE_CACHE_MAX_SIZE = 6
IOVA_MAG_SIZE = 127


def _fls_long(x: int) -> int:
    return x.bit_length()


def order_base_2(n: int) -> int:
    return (n - 1).bit_length() if n > 1 else 0


def roundup_pow_of_two(n: int) -> int:
    return 1 << order_base_2(n)


@define(eq=False)
class IovaRcache:
    """``struct iova_rcache`` for one order: the CPU's loaded/prev magazines and the depot."""

    loaded: list[int] = field(factory=list)
    prev: list[int] = field(factory=list)
    depot: list[list[int]] = field(factory=list)


@define(eq=False)
class IovaDomain:
    """``struct iova_domain``."""

    granule: int
    start_pfn: int
    dma_32bit_pfn: int
    tree: SortedDict[int, int] = field(factory=SortedDict)
    cached_node: int = IOVA_ANCHOR
    cached32_node: int = IOVA_ANCHOR
    max32_alloc_size: int = 0
    rcaches: list[IovaRcache] | None = None
    shift: int = 0
    """``iova_shift()``: ``__ffs(granule)``, computed once by :func:`init_iova_domain`."""
    reserved: set[int] = field(factory=set)
    """pfn_lo of the ranges :func:`reserve_iova` inserted (never handed out, not leaks)."""

    def live_ranges(self) -> int:
        """Allocated ranges not parked in a range cache (the leak count); reserved
        ranges are not counted."""
        cached = len(self.reserved)
        if self.rcaches is not None:
            for rc in self.rcaches:
                cached += len(rc.loaded) + len(rc.prev) + sum(len(m) for m in rc.depot)
        return len(self.tree) - 1 - cached


def iova_shift(iovad: IovaDomain) -> int:
    return iovad.shift


def iova_mask(iovad: IovaDomain) -> int:
    return iovad.granule - 1


def iova_offset(iovad: IovaDomain, iova: int) -> int:
    return iova & iova_mask(iovad)


def iova_align(iovad: IovaDomain, size: int) -> int:
    return (size + iovad.granule - 1) & ~(iovad.granule - 1)


def iova_pfn(iovad: IovaDomain, iova: int) -> int:
    return iova >> iova_shift(iovad)


def init_iova_domain(granule: int, start_pfn: int) -> IovaDomain:
    """``init_iova_domain``: ``granule`` must be a power of two (≤ PAGE_SIZE in C)."""
    if granule <= 0 or granule & (granule - 1):
        raise ValueError(f"IOVA granule {granule:#x} is not a power of two")
    shift = (granule & -granule).bit_length() - 1
    iovad = IovaDomain(granule, start_pfn, (1 << 32) >> shift, shift=shift)
    iovad.max32_alloc_size = iovad.dma_32bit_pfn
    iovad.tree[IOVA_ANCHOR] = IOVA_ANCHOR
    return iovad


def iova_domain_init_rcaches(iovad: IovaDomain) -> None:
    iovad.rcaches = [IovaRcache() for _ in range(IOVA_RANGE_CACHE_MAX_SIZE)]


def put_iova_domain(iovad: IovaDomain) -> None:
    """``put_iova_domain``: drop every range and cache."""
    iovad.rcaches = None
    iovad.reserved.clear()
    iovad.tree.clear()
    iovad.tree[IOVA_ANCHOR] = IOVA_ANCHOR
    iovad.cached_node = iovad.cached32_node = IOVA_ANCHOR


def _alloc_range(iovad: IovaDomain, size: int, limit_pfn: int, size_aligned: bool) -> int:
    """``__alloc_and_insert_iova_range``; ``limit_pfn`` is exclusive here. 0 = failure."""
    tree = iovad.tree
    keys = tree.keys()  # SortedKeysView: indexable, bisect via the dict
    align_mask = ~0
    if size_aligned:
        align_mask <<= _fls_long(size - 1)
    if limit_pfn <= iovad.dma_32bit_pfn and size >= iovad.max32_alloc_size:
        return 0
    cached = iovad.cached32_node if limit_pfn <= iovad.dma_32bit_pfn else iovad.cached_node
    idx = tree.bisect_left(cached)
    curr_lo = keys[idx]
    retry_pfn = tree[curr_lo] + 1 if curr_lo != IOVA_ANCHOR else IOVA_ANCHOR
    high_pfn = limit_pfn
    low_pfn = iovad.start_pfn
    while True:
        while True:
            high_pfn = min(high_pfn, curr_lo)
            new_pfn = (high_pfn - size) & align_mask
            idx -= 1
            if idx < 0:
                break
            curr_lo = keys[idx]
            if not (new_pfn <= tree[curr_lo] and new_pfn >= low_pfn):
                break
        if high_pfn < size or new_pfn < low_pfn:
            if low_pfn == iovad.start_pfn and retry_pfn < limit_pfn:
                high_pfn = limit_pfn
                low_pfn = retry_pfn
                idx = tree.bisect_left(limit_pfn)
                curr_lo = keys[idx]
                continue
            iovad.max32_alloc_size = size
            return 0
        break
    tree[new_pfn] = new_pfn + size - 1
    if limit_pfn > iovad.dma_32bit_pfn:
        iovad.cached_node = new_pfn
    else:
        iovad.cached32_node = new_pfn
    return new_pfn


def alloc_iova(iovad: IovaDomain, size: int, limit_pfn: int, size_aligned: bool) -> int:
    """``alloc_iova``: ``size`` pfns at or below ``limit_pfn``; returns pfn_lo or 0."""
    if size <= 0 or should_fail("alloc_iova"):
        return 0
    return _alloc_range(iovad, size, limit_pfn + 1, size_aligned)


def find_iova(iovad: IovaDomain, pfn: int) -> tuple[int, int] | None:
    """``find_iova``: the range containing ``pfn``."""
    tree = iovad.tree
    idx = tree.bisect_right(pfn) - 1
    if idx < 0:
        return None
    lo = tree.keys()[idx]
    hi = tree[lo]
    if lo == IOVA_ANCHOR or pfn > hi:
        return None
    return lo, hi


def _delete_update(iovad: IovaDomain, lo: int, hi: int) -> None:
    keys = iovad.tree.keys()
    nxt = keys[iovad.tree.bisect_right(lo)]
    c32 = iovad.cached32_node
    if lo == c32 or (hi < iovad.dma_32bit_pfn and lo >= c32):
        iovad.cached32_node = nxt
    if lo < iovad.dma_32bit_pfn:
        iovad.max32_alloc_size = iovad.dma_32bit_pfn
    if lo >= iovad.cached_node:
        iovad.cached_node = nxt


def __free_iova_range(iovad: IovaDomain, lo: int) -> None:
    hi = iovad.tree[lo]
    _delete_update(iovad, lo, hi)
    del iovad.tree[lo]


def free_iova(iovad: IovaDomain, pfn: int) -> None:
    """``free_iova``: free the range containing ``pfn`` (a WARN-free no-op if none, as C)."""
    found = find_iova(iovad, pfn)
    if found is not None:
        __free_iova_range(iovad, found[0])


def _rcache_get(iovad: IovaDomain, size: int, limit_pfn: int) -> int:
    """``iova_rcache_get``/``__iova_rcache_get``/``iova_magazine_pop``: a cached pfn of
    ``size``'s order at or below ``limit_pfn``, or 0. The magazine is scanned from the
    top as C does; ``size`` is already a power of two (``alloc_iova_fast``)."""
    order = (size - 1).bit_length()  # order_base_2(size)
    rcaches = iovad.rcaches
    if rcaches is None or order >= IOVA_RANGE_CACHE_MAX_SIZE:
        return 0
    rc = rcaches[order]
    if not rc.loaded:
        if rc.prev:
            rc.loaded, rc.prev = rc.prev, rc.loaded
        elif rc.depot:
            rc.loaded = rc.depot.pop()
        else:
            return 0
    mag = rc.loaded
    if mag[-1] <= limit_pfn:  # the scan's first step, and the common case
        return mag.pop()
    for i in range(len(mag) - 2, -1, -1):
        if mag[i] <= limit_pfn:
            pfn = mag[i]
            mag[i] = mag[-1]
            mag.pop()
            return pfn
    return 0


def _rcache_insert(iovad: IovaDomain, pfn: int, size: int) -> bool:
    """``iova_rcache_insert``/``__iova_rcache_insert``: park ``pfn`` in its order's
    loaded magazine (swapping in ``prev`` or moving a full one to the depot)."""
    order = (size - 1).bit_length()  # order_base_2(size), size a power of two
    rcaches = iovad.rcaches
    if rcaches is None or order >= IOVA_RANGE_CACHE_MAX_SIZE:
        return False
    rc = rcaches[order]
    if len(rc.loaded) >= IOVA_MAG_SIZE:
        if len(rc.prev) < IOVA_MAG_SIZE:
            rc.loaded, rc.prev = rc.prev, rc.loaded
        else:
            if should_fail("iova_magazine"):
                return False
            rc.depot.append(rc.loaded)
            rc.loaded = []
    rc.loaded.append(pfn)
    return True


def free_cached_iovas(iovad: IovaDomain) -> None:
    """``free_cpu_cached_iovas`` + ``free_global_cached_iovas``: everything cached back
    into the tree."""
    for rc in iovad.rcaches or ():
        for mag in [rc.loaded, rc.prev, *rc.depot]:
            for pfn in mag:
                free_iova(iovad, pfn)
        rc.loaded, rc.prev, rc.depot = [], [], []


def alloc_iova_fast(iovad: IovaDomain, size: int, limit_pfn: int, flush_rcache: bool) -> int:
    """``alloc_iova_fast``: sizes below 2^(MAX-1) are rounded up to a power of two and
    tried in the range cache first; on failure, optionally flush the caches and retry.
    The cache's common answer (the loaded magazine's top pfn fits the limit: the
    first step of :func:`_rcache_get`'s scan) is taken here without a call."""
    if size == 1:  # one granule (every single-page map): order 0, no rounding
        order = 0
    elif size <= 0:
        return 0
    else:
        if size < (1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)):
            size = 1 << (size - 1).bit_length()  # roundup_pow_of_two(size)
        order = (size - 1).bit_length()  # order_base_2(size)
    rcaches = iovad.rcaches
    if rcaches is not None and order < IOVA_RANGE_CACHE_MAX_SIZE:
        mag = rcaches[order].loaded
        if mag and mag[-1] <= limit_pfn - size + 1:
            return mag.pop()
        pfn = _rcache_get(iovad, size, limit_pfn - size + 1)
        if pfn:
            return pfn
    pfn = alloc_iova(iovad, size, limit_pfn, True)
    if not pfn and flush_rcache and rcaches is not None:
        free_cached_iovas(iovad)
        pfn = alloc_iova(iovad, size, limit_pfn, True)
    return pfn


def free_iova_fast(iovad: IovaDomain, pfn: int, size: int) -> None:
    """``free_iova_fast``: to the range cache when it takes the size, else the tree.
    A loaded magazine with room takes ``pfn`` here (``__iova_rcache_insert``'s common
    case); the rest of :func:`_rcache_insert` runs only when it is full."""
    if size == 1:  # one granule: order 0, no rounding
        order = 0
    else:
        if size < (1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)):
            size = 1 << (size - 1).bit_length() if size > 1 else 1  # roundup_pow_of_two(size)
        order = (size - 1).bit_length()  # order_base_2(size), size a power of two
    # dma-iommu frees by pfn_lo, a tree key: a dict lookup answers; bisect otherwise.
    if (pfn not in iovad.tree or pfn == IOVA_ANCHOR) and find_iova(iovad, pfn) is None:
        WARN(True, f"iova: free of unallocated pfn {pfn:#x}")
        return
    rcaches = iovad.rcaches
    if rcaches is not None and order < IOVA_RANGE_CACHE_MAX_SIZE:
        mag = rcaches[order].loaded
        if len(mag) < IOVA_MAG_SIZE:
            mag.append(pfn)
            return
        if _rcache_insert(iovad, pfn, size):
            return
    free_iova(iovad, pfn)


def reserve_iova(iovad: IovaDomain, pfn_lo: int, pfn_hi: int) -> bool:
    """``reserve_iova``: keep ``[pfn_lo, pfn_hi]`` out of allocation. A reservation
    that overlaps existing ranges extends the first of them downwards and inserts
    what sticks out above (``__adjust_overlap_range``), so reserving twice or
    reserving overlapping windows is harmless. False (with a WARN) for pfns beyond
    the address space, as C returns NULL."""
    shift = iova_shift(iovad)
    if WARN((pfn_lo | pfn_hi) > ((1 << 64) - 1) >> shift, "reserve_iova: pfn beyond 64 bits"):
        return False
    tree = iovad.tree
    overlap = False
    for lo in list(tree.irange(maximum=pfn_hi)):
        hi = tree[lo]
        if lo == IOVA_ANCHOR or hi < pfn_lo:
            if overlap:
                break
            continue
        if pfn_lo < lo:  # grow the existing range down to the reservation's start
            del tree[lo]
            tree[pfn_lo] = hi
            if lo in iovad.reserved:
                iovad.reserved.discard(lo)
                iovad.reserved.add(pfn_lo)
            lo = pfn_lo
        if pfn_hi <= hi:
            return True
        pfn_lo = hi + 1
        overlap = True
    tree[pfn_lo] = pfn_hi
    iovad.reserved.add(pfn_lo)
    return True
