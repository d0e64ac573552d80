"""The generic IOMMU page-table algorithm (drivers/iommu/generic_pt/iommu_pt.h and
pt_iter.h): ``map_pages``, ``unmap_pages``, ``iova_to_phys`` and ``deinit`` over a
radix table whose shape and entry encoding come from a :class:`PtFormat`.

Newer than the 6.12 baseline: the library was merged after 6.12 (in the 6.19 cycle,
late 2025, as far as this was checked: from memory, not against a release tag),
with AMD v1 and VT-d first/second stage converted to it; 6.12's drivers each carry
their own page-table code, which stays the default here (``iommu.pt=driver``).
``iommu.pt=generic`` boots the intel_iommu and arm_smmu_v3 drivers on this code.

Tables are IOMMU page-table pages (``iommu_alloc_page_node``,
:mod:`kernel.iommu.iommu_pages`), entries little-endian words in RAM at the format's
bit positions, so the hardware models walk them unchanged; every entry store goes
through the page-table ownership sanitizer (:func:`kernel.mm.pgtable_write64`).

The contract (each part tested on every format):

- mapping over a live translation fails with ``EADDRINUSE``; a range beyond the
  table's VA width, or an output address beyond its OA width, fails with ``ERANGE``;
- leaves are as large as the format and the domain's ``pgsize_bitmap`` allow;
- a lower table that a larger leaf replaces (it must be empty) and a table that an
  unmap empties go on the ``iommu_iotlb_gather`` free list and are freed by whoever
  syncs the gather, after the IOTLB flush - never before.

Differences from upstream:

- ``map_pages`` returns the bytes mapped (the project's op convention) and on an
  error first clears the leaves it wrote in this call, so a failed call changes no
  translation and the errno (EADDRINUSE, ERANGE, ENOMEM) reaches ``iommu_map``
  intact. Upstream leaves the partial leaves and reports ``*mapped``; its
  ``iommu_map`` then unmaps them, which ends the same way.
- The top level is fixed at init (no ``PT_FEAT_DYNAMIC_TOP``), tables are coherent
  (no ``PT_FEAT_DMA_INCOHERENT``), and leaves are the levels' natural sizes (no
  contiguous-entry hints).
- ``unmap_pages`` adds ``max(requested, unmapped)`` to the gather: when it removes a
  whole large leaf beyond the requested length, the flush covers all of it.
- How the map path's own gather (empty tables replaced by a block) is synced is
  the owner's ``iotlb_sync`` callable (``iommu_iotlb_sync`` on the domain unless the
  driver passes another), because 6.12's SMMUv3 ``iotlb_sync`` frees no list.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from kernel.bug import WARN_ON
from kernel.errno import EADDRINUSE, EINVAL, ENOMEM, ENXIO, ERANGE, KernelError
from kernel.iommu.generic_pt.pt_common import (
    PT_BITS_PER_LEVEL,
    PT_ENTRY_EMPTY,
    PT_ENTRY_OA,
    PT_ENTRY_TABLE,
    PT_FEAT_FLUSH_RANGE,
    PT_FEAT_FLUSH_RANGE_NO_GAPS,
    PT_FEAT_SIGN_EXTEND,
    PT_ITEMS_PER_TABLE,
    PtFormat,
    PtIommuCfg,
    pt_item_lg2sz,
)
from kernel.iommu.iommu_h import (
    IOMMU_READ,
    IOMMU_WRITE,
    IommuDomain,
    IommuDomainGeometry,
    IommuIotlbGather,
    iommu_iotlb_gather_add_range,
    iommu_iotlb_sync,
)
from kernel.iommu.iommu_pages import iommu_alloc_page_node, iommu_put_pages_list
from kernel.mm import GFP_KERNEL, PAGE_OFFSET, current_mm, pgtable_write64

_LAST = PT_ITEMS_PER_TABLE - 1
_TABLE = struct.Struct(f"<{PT_ITEMS_PER_TABLE}Q")

Sync = Callable[[IommuIotlbGather], None] | None
"""How a table's owner flushes a gather and frees its list (None: ``iommu_iotlb_sync``)."""


def _gather_is_disjoint(gather: IommuIotlbGather, iova: int, size: int) -> bool:
    """``iommu_iotlb_gather_is_disjoint``."""
    start, end = iova, iova + size - 1
    return bool(gather.end) and (end + 1 < gather.start or start > gather.end + 1)


class PtIommu:
    """``struct pt_iommu`` with its ``struct pt_common``: one table of one format
    serving one domain.

    ``top_table`` is the physical address of the top table, ``top_level`` its level;
    ``iotlb_sync`` flushes a gather and frees its list (the map path calls it when a
    block replaced empty tables)."""

    def __init__(
        self,
        fmt: PtFormat,
        domain: IommuDomain,
        top_table: int,
        top_level: int,
        max_vasz_lg2: int,
        max_oasz_lg2: int,
        iotlb_sync: Sync = None,
    ) -> None:
        self.fmt = fmt
        self.domain = domain
        self.top_table = top_table
        self.top_level = top_level
        self.max_vasz_lg2 = max_vasz_lg2
        self.max_oasz_lg2 = max_oasz_lg2
        self.sign_extend = fmt.feature(PT_FEAT_SIGN_EXTEND)
        self.iotlb_sync: Callable[[IommuIotlbGather], None] = iotlb_sync or (
            lambda gather: iommu_iotlb_sync(domain, gather)
        )
        self.tables = 1
        """Table pages in use, the top one included."""

    # -- ranges ---------------------------------------------------------------------------
    def _va_mask(self) -> int:
        return (1 << self.max_vasz_lg2) - 1

    def check_range(self, va: int, last: int) -> bool:
        """``pt_check_range``: ``[va, last]`` lies in the table's VA space (with
        ``PT_FEAT_SIGN_EXTEND`` either in the lower half or in the sign-extended
        upper half, never across the hole)."""
        if va > last or va < 0:
            return False
        if not self.sign_extend:
            return not last >> self.max_vasz_lg2
        half = 1 << (self.max_vasz_lg2 - 1)
        if last < half:
            return True
        top = (1 << 64) - half
        return va >= top and last < 1 << 64

    def possible_sizes(self) -> int:
        """``get_info``: the leaf sizes of the levels this table has."""
        bitmap = 0
        for level in range(self.top_level + 1):
            if self.fmt.can_have_leaf(level):
                bitmap |= 1 << pt_item_lg2sz(level)
        return bitmap & ((1 << self.max_oasz_lg2) - 1)

    # -- memory -------------------------------------------------------------------------
    def _table_alloc(self, gfp: int) -> int:
        """``table_alloc``: a zeroed table page (its physical address)."""
        page = iommu_alloc_page_node(0, gfp)
        if page is None:
            raise ENOMEM(f"{self.fmt.name}: no memory for a page-table page")
        self.tables += 1
        return page - PAGE_OFFSET

    def _collect_tables(self, table: int, level: int, out: list[int], check_mapped: bool) -> None:
        """``__collect_tables``: every table under ``table`` onto ``out`` (kernel
        addresses); EADDRINUSE with ``check_mapped`` when a leaf is found."""
        mem = current_mm().mem
        fmt = self.fmt
        for i, entry in enumerate(_TABLE.unpack(mem.read(table, _TABLE.size))):
            if not entry:
                continue
            kind = fmt.entry_type(entry, level)
            if kind == PT_ENTRY_TABLE:
                lower = fmt.table_pa(entry)
                self._collect_tables(lower, level - 1, out, check_mapped)
                out.append(lower + PAGE_OFFSET)
            elif kind == PT_ENTRY_OA and check_mapped:
                raise EADDRINUSE(f"{fmt.name}: a leaf lies under entry {i} of a table")

    def _gather_range_pages(
        self, gather: IommuIotlbGather, iova: int, size: int, freelist: list[int]
    ) -> None:
        """``gather_range_pages``: add the range to the gather (or sync first when the
        format must not flush across gaps) and splice the freed tables onto it."""
        fmt = self.fmt
        if fmt.feature(PT_FEAT_FLUSH_RANGE_NO_GAPS) and _gather_is_disjoint(gather, iova, size):
            self.iotlb_sync(gather)
            iommu_iotlb_gather_add_range(gather, iova, size)
        elif fmt.feature(PT_FEAT_FLUSH_RANGE) or fmt.feature(PT_FEAT_FLUSH_RANGE_NO_GAPS):
            iommu_iotlb_gather_add_range(gather, iova, size)
        if freelist:
            self.tables -= len(freelist)
            gather.freelist.extend(freelist)

    # -- iova_to_phys ---------------------------------------------------------------------
    def iova_to_phys(self, iova: int) -> int:
        """``pt_iommu_<fmt>_iova_to_phys``: the output address (with the offset inside
        the page), 0 when nothing translates ``iova``."""
        if not self.check_range(iova, iova):
            return 0
        mem = current_mm().mem
        fmt = self.fmt
        va = iova & self._va_mask()
        table = self.top_table
        for level in range(self.top_level, -1, -1):
            shift = pt_item_lg2sz(level)
            entry = mem.read_u64(table + (((va >> shift) & _LAST) << 3))
            kind = fmt.entry_type(entry, level)
            if kind == PT_ENTRY_OA:
                return fmt.entry_oa(entry, level) | (
                    va & ((1 << fmt.entry_oa_lg2sz(entry, level)) - 1)
                )
            if kind == PT_ENTRY_EMPTY:
                return 0
            table = fmt.table_pa(entry)
        return 0  # pragma: no cover - level 0 entries are leaves or empty

    # -- map ------------------------------------------------------------------------------
    def map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, gfp: int
    ) -> int:
        """``pt_iommu_<fmt>_map_pages``: map ``pgcount`` pages of ``pgsize``; returns
        the bytes mapped (all of them) or raises with nothing changed."""
        if WARN_ON(not prot & (IOMMU_READ | IOMMU_WRITE), "generic_pt: map without R/W"):
            raise EINVAL("mapping with neither read nor write permission")
        length = pgsize * pgcount
        if length <= 0:
            raise EINVAL(f"map of {pgcount} pages of {pgsize:#x}")
        if (paddr + length - 1) >> self.max_oasz_lg2:
            raise ERANGE(f"paddr {paddr:#x} + {length:#x} beyond {self.max_oasz_lg2} output bits")
        attrs = self.fmt.set_prot(prot)
        last = iova + length - 1
        if not self.check_range(iova, last):
            raise ERANGE(f"iova {iova:#x}..{last:#x} beyond the table's {self.max_vasz_lg2}-bit VA")
        leaf_lg2 = self._best_pgsize(iova, last, paddr)
        if not leaf_lg2:
            raise ENXIO(f"no page size fits iova {iova:#x} / paddr {paddr:#x} / {length:#x}")
        leaf_level = (leaf_lg2 - pt_item_lg2sz(0)) // PT_BITS_PER_LEVEL
        gather = IommuIotlbGather()
        written: list[int] = []
        mask = self._va_mask()
        try:
            self._map_level(
                self.top_table,
                self.top_level,
                iova & mask,
                last & mask,
                paddr,
                leaf_level,
                attrs,
                gfp,
                gather,
                written,
            )
        except KernelError:
            for slot in written:
                pgtable_write64(slot + PAGE_OFFSET, 0)
            raise
        finally:
            if gather.freelist:
                self.iotlb_sync(gather)
        return length

    def _best_pgsize(self, va: int, last: int, oa: int) -> int:
        """``pt_compute_best_pgsize``: log2 of the largest leaf size in the domain's
        bitmap that both addresses and the length are multiples of (every leaf of
        one call has that size)."""
        bitmap = self.possible_sizes() & self.domain.pgsize_bitmap
        length = last - va + 1
        best = 0
        while bitmap:
            size = bitmap & -bitmap
            bitmap ^= size
            if (va | oa | length) & (size - 1):
                break
            best = size.bit_length() - 1
        return best

    def _map_level(
        self,
        table: int,
        level: int,
        va: int,
        last: int,
        oa: int,
        leaf_level: int,
        attrs: int,
        gfp: int,
        gather: IommuIotlbGather,
        written: list[int],
    ) -> int:
        """``__map_range`` / ``__map_range_leaf``: map ``[va, last]`` below ``table``;
        returns the next output address."""
        mem = current_mm().mem
        fmt = self.fmt
        shift = pt_item_lg2sz(level)
        size = 1 << shift
        idx = (va >> shift) & _LAST
        slot = table + (idx << 3)
        if level == leaf_level:
            count = min(((last - va) >> shift) + 1, PT_ITEMS_PER_TABLE - idx)
            for _ in range(count):
                entry = mem.read_u64(slot)
                if entry:
                    kind = fmt.entry_type(entry, level)
                    if kind == PT_ENTRY_OA:
                        raise EADDRINUSE(f"iova {va:#x} is already mapped")
                    if kind == PT_ENTRY_TABLE:
                        self._clear_contig(slot, entry, level, va, size, gather)
                pgtable_write64(slot + PAGE_OFFSET, fmt.leaf_entry(oa, level, attrs))
                written.append(slot)
                slot += 8
                va += size
                oa += size
            return oa
        while True:
            entry = mem.read_u64(slot)
            kind = fmt.entry_type(entry, level) if entry else PT_ENTRY_EMPTY
            if kind == PT_ENTRY_OA:
                raise EADDRINUSE(f"iova {va:#x} lies in a {size:#x} leaf already mapped")
            if kind == PT_ENTRY_EMPTY:
                lower = self._table_alloc(gfp)
                pgtable_write64(slot + PAGE_OFFSET, fmt.table_entry(lower, level))
            else:
                lower = fmt.table_pa(entry)
            span_last = (va | (size - 1)) if (va | (size - 1)) < last else last
            oa = self._map_level(
                lower, level - 1, va, span_last, oa, leaf_level, attrs, gfp, gather, written
            )
            va = span_last + 1
            slot += 8
            idx += 1
            if va > last or idx == PT_ITEMS_PER_TABLE:
                return oa

    def _clear_contig(
        self, slot: int, entry: int, level: int, va: int, size: int, gather: IommuIotlbGather
    ) -> None:
        """``clear_contig``: a leaf at ``level`` replaces a lower table, which must map
        nothing; the table and the tables under it go through the gather."""
        lower = self.fmt.table_pa(entry)
        freelist: list[int] = []
        self._collect_tables(lower, level - 1, freelist, check_mapped=True)
        freelist.append(lower + PAGE_OFFSET)
        pgtable_write64(slot + PAGE_OFFSET, 0)
        self._gather_range_pages(gather, va & ~(size - 1), size, freelist)

    # -- unmap ----------------------------------------------------------------------------
    def unmap_pages(self, iova: int, pgsize: int, pgcount: int, gather: IommuIotlbGather) -> int:
        """``pt_iommu_<fmt>_unmap_pages``: clear leaves from ``iova`` on; returns the
        bytes unmapped. A leaf the range starts in the middle of, or a hole, ends the
        walk; a leaf larger than the rest of the range goes whole. Tables the range
        covers entirely go on ``gather.freelist``."""
        length = pgsize * pgcount
        last = iova + length - 1
        if length <= 0 or not self.check_range(iova, last):
            return 0
        freelist: list[int] = []
        mask = self._va_mask()
        unmapped, _ = self._unmap_level(
            self.top_table, self.top_level, iova & mask, last & mask, freelist
        )
        if unmapped or freelist:
            self._gather_range_pages(gather, iova, max(length, unmapped), freelist)
        return unmapped

    def _unmap_level(
        self, table: int, level: int, va: int, last: int, freelist: list[int]
    ) -> tuple[int, bool]:
        """``__unmap_range``: (bytes unmapped, whether the walk stopped early)."""
        mem = current_mm().mem
        fmt = self.fmt
        shift = pt_item_lg2sz(level)
        size = 1 << shift
        idx = (va >> shift) & _LAST
        slot = table + (idx << 3)
        unmapped = 0
        first = True
        while True:
            entry = mem.read_u64(slot)
            kind = fmt.entry_type(entry, level) if entry else PT_ENTRY_EMPTY
            if kind == PT_ENTRY_EMPTY:
                return unmapped, True
            if kind == PT_ENTRY_OA:
                if first and va & (size - 1):
                    return unmapped, True
                pgtable_write64(slot + PAGE_OFFSET, 0)
                unmapped += size
            else:
                base = va & ~(size - 1)
                span_last = base + size - 1
                covered = va == base and last >= span_last
                lower = fmt.table_pa(entry)
                got, stopped = self._unmap_level(
                    lower, level - 1, va, min(last, span_last), freelist
                )
                unmapped += got
                if stopped:
                    return unmapped, True
                if covered:
                    freelist.append(lower + PAGE_OFFSET)
                    pgtable_write64(slot + PAGE_OFFSET, 0)
            first = False
            va = (va & ~(size - 1)) + size
            slot += 8
            idx += 1
            if va > last or idx == PT_ITEMS_PER_TABLE:
                return unmapped, False

    # -- teardown -------------------------------------------------------------------------
    def deinit(self) -> None:
        """``pt_iommu_deinit``: free every table. The driver has already stopped the
        hardware using it and flushed what it cached."""
        pages: list[int] = []
        self._collect_tables(self.top_table, self.top_level, pages, check_mapped=False)
        pages.append(self.top_table + PAGE_OFFSET)
        iommu_put_pages_list(pages)
        self.tables = 0
        self.top_table = 0

    def walk(self, iova: int) -> list[tuple[int, int, int]]:
        """(level, entry's physical address, entry) down to the leaf or the first
        empty entry for ``iova`` (debug dumps)."""
        out: list[tuple[int, int, int]] = []
        if not self.check_range(iova, iova):
            return out
        mem = current_mm().mem
        va = iova & self._va_mask()
        table = self.top_table
        for level in range(self.top_level, -1, -1):
            slot = table + (((va >> pt_item_lg2sz(level)) & _LAST) << 3)
            entry = mem.read_u64(slot)
            out.append((level, slot, entry))
            if self.fmt.entry_type(entry, level) != PT_ENTRY_TABLE:
                break
            table = self.fmt.table_pa(entry)
        return out


def pt_iommu_init(
    fmt: PtFormat,
    cfg: PtIommuCfg,
    domain: IommuDomain,
    gfp: int = GFP_KERNEL,
    iotlb_sync: Sync = None,
) -> PtIommu:
    """``pt_iommu_init`` (behind ``pt_iommu_<fmt>_init``): check the configuration,
    allocate the top table, and give ``domain`` the table's page sizes and aperture
    (lower half only with ``PT_FEAT_SIGN_EXTEND``). Raises EINVAL/EOPNOTSUPP for a
    configuration the format cannot build, ENOMEM without a page."""
    fmt.check_features(cfg.features)
    top_level = fmt.fmt_init(cfg)
    vasz = min(cfg.hw_max_vasz_lg2, pt_item_lg2sz(top_level + 1))
    oasz = min(cfg.hw_max_oasz_lg2, fmt.PT_MAX_OUTPUT_ADDRESS_LG2)
    page = iommu_alloc_page_node(0, gfp)
    if page is None:
        raise ENOMEM(f"{fmt.name}: no memory for the top table")
    table = PtIommu(fmt, domain, page - PAGE_OFFSET, top_level, vasz, oasz, iotlb_sync)
    domain.pgsize_bitmap = table.possible_sizes()
    end_bits = vasz - 1 if table.sign_extend else vasz
    domain.geometry = IommuDomainGeometry(0, (1 << end_bits) - 1, True)
    return table
