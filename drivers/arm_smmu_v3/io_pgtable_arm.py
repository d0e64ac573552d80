"""drivers/iommu/io-pgtable-arm.c: the ARM LPAE stage-1 page-table format (``ARM_64_LPAE_S1``)
with a 4 KiB granule, built as bytes in RAM.

``alloc_io_pgtable_ops`` sizes the table from the input address size (4 levels for
48 bits, start level from ``ias``), fills ``cfg`` with what a context descriptor
needs (``ttbr``, the TCR fields and the MAIR), and returns an :class:`ArmLpaeIoPgtable`
whose ``map_pages``/``unmap_pages``/``iova_to_phys`` mirror ``arm_lpae_map_pages``,
``arm_lpae_unmap_pages`` and ``arm_lpae_iova_to_phys``. TLB maintenance goes
through ``cfg.tlb`` (``struct iommu_flush_ops``): ``tlb_flush_walk`` when an unmap
frees a table, ``tlb_add_page`` for every leaf cleared, ``tlb_flush_all`` when the
tables are freed.

Descriptors (io-pgtable-arm.c): table = address | 0b11; level-3 page = address |
0b11; block (level 1/2) = address | 0b01; leaves carry AF, nG (stage 1), SH,
AttrIndx (MAIR index: 0 non-cacheable, 1 write-back, 2 device), AP[2] read-only
when the mapping is not writable, AP[1] (unprivileged) unless ``IOMMU_PRIV``, XN
for ``IOMMU_NOEXEC``.

Dirty tracking (``IO_PGTABLE_QUIRK_ARM_HD``): a writable leaf also gets DBM, so with
CD.HD the SMMU's first write leaves it writable-dirty (AP[2]=0, DBM=1);
``read_and_clear_dirty`` (``arm_lpae_read_and_clear_dirty``) reports those leaves
and makes them writable-clean again (AP[2]=1) unless IOMMU_DIRTY_NO_CLEAR.

Stage 2 (``ARM_64_LPAE_S2``, for a nesting parent under ``iommufd.viommu=on``):
leaves carry S2AP (read bit 6, write bit 7) and MemAttr instead of AP/nG/AttrIndx;
the walk controls go to ``cfg.vtcr`` and the root to ``cfg.vttbr``.

Differences from Linux: only the 4 KiB granule; ``map_pages`` keeps
going across table boundaries until ``pgcount`` pages are mapped (the core here
treats a short count as an error, Linux's loops on ``*mapped``); every leaf written
is a fault-injection point (``iommu_pgtable``, as the VT-d driver's page table does)
so a sweep can fail a mapping midway; a failed mapping returns the bytes mapped
before the failure, or raises when there are none. Tables come from
``iommu_alloc_page_node`` (as 6.12's ``__arm_lpae_alloc_pages``) and descriptors are
stored through the page-table ownership sanitizer (:func:`kernel.mm.pgtable_write64`).
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import define, field

from kernel.bitfield import BIT, GENMASK
from kernel.bug import WARN, WARN_ON
from kernel.errno import EEXIST, EINVAL, ENOMEM, ERANGE, KernelError
from kernel.fault_inject import should_fail
from kernel.iommu.iommu_h import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuIotlbGather,
)
from kernel.iommu.iommu_pages import (
    iommu_alloc_page_node,
    iommu_alloc_pages_node,
    iommu_free_page,
    iommu_free_pages,
)
from kernel.iommufd.iova_bitmap import (
    IOMMU_DIRTY_NO_CLEAR,
    IommuDirtyBitmap,
    iommu_dirty_bitmap_record,
)
from kernel.mm import GFP_KERNEL, pgtable_write64, phys_to_virt, read64, virt_to_phys

ARM_64_LPAE_S1 = "ARM_64_LPAE_S1"
ARM_64_LPAE_S2 = "ARM_64_LPAE_S2"
ARM_LPAE_S2_MAX_CONCAT_PAGES = 16

ARM_LPAE_MAX_LEVELS = 4
ARM_LPAE_GRANULE = 1 << 12
ARM_LPAE_BITS_PER_LEVEL = 9
ARM_LPAE_PTES_PER_TABLE = 512

ARM_LPAE_PTE_TYPE_MASK = 0x3
ARM_LPAE_PTE_TYPE_BLOCK = 1
ARM_LPAE_PTE_TYPE_TABLE = 3
ARM_LPAE_PTE_TYPE_PAGE = 3
ARM_LPAE_PTE_ADDR_MASK = GENMASK(47, 12)
ARM_LPAE_PTE_NSTABLE = BIT(63)
ARM_LPAE_PTE_XN = BIT(54)
ARM_LPAE_PTE_DBM = BIT(51)
ARM_LPAE_PTE_AF = BIT(10)
ARM_LPAE_PTE_SH_OS = 2 << 8
ARM_LPAE_PTE_SH_IS = 3 << 8
ARM_LPAE_PTE_NS = BIT(5)
ARM_LPAE_PTE_VALID = BIT(0)
ARM_LPAE_PTE_nG = BIT(11)
ARM_LPAE_PTE_AP_UNPRIV = 1 << 6
ARM_LPAE_PTE_AP_RDONLY = 2 << 6
ARM_LPAE_PTE_ATTRINDX_SHIFT = 2
ARM_LPAE_PTE_HAP_READ = 1 << 6
ARM_LPAE_PTE_HAP_WRITE = 2 << 6
ARM_LPAE_PTE_MEMATTR_OIWB = 0xF << 2
ARM_LPAE_PTE_MEMATTR_NC = 0x5 << 2
ARM_LPAE_PTE_MEMATTR_DEV = 0x1 << 2

IO_PGTABLE_QUIRK_ARM_HD = BIT(7)

ARM_LPAE_MAIR_ATTR_NC = 0x44
ARM_LPAE_MAIR_ATTR_WBRWA = 0xFF
ARM_LPAE_MAIR_ATTR_DEVICE = 0x04
ARM_LPAE_MAIR_ATTR_INC_OWBRWA = 0xF4
ARM_LPAE_MAIR_ATTR_IDX_NC = 0
ARM_LPAE_MAIR_ATTR_IDX_CACHE = 1
ARM_LPAE_MAIR_ATTR_IDX_DEV = 2
ARM_LPAE_MAIR_ATTR_IDX_INC_OCACHE = 3

ARM_LPAE_TCR_TG0_4K = 0
ARM_LPAE_TCR_SH_IS = 3
ARM_LPAE_TCR_RGN_WBWA = 1
ARM_LPAE_TCR_PS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}

SZ_4K = 1 << 12
SZ_2M = 1 << 21
SZ_1G = 1 << 30


def ARM_LPAE_MAIR_ATTR_SHIFT(n: int) -> int:
    return n << 3


class IommuFlushOps(Protocol):
    """``struct iommu_flush_ops``."""

    def tlb_flush_all(self) -> None: ...
    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None: ...
    def tlb_add_page(self, gather: IommuIotlbGather, iova: int, granule: int) -> None: ...


@define(eq=False)
class ArmLpaeS1Tcr:
    """``cfg->arm_lpae_s1_cfg.tcr``: the TTB0 walk attributes a CD copies."""

    tsz: int = 0
    tg: int = ARM_LPAE_TCR_TG0_4K
    irgn: int = ARM_LPAE_TCR_RGN_WBWA
    orgn: int = ARM_LPAE_TCR_RGN_WBWA
    sh: int = ARM_LPAE_TCR_SH_IS
    ips: int = 0


@define(eq=False)
class ArmLpaeS2Vtcr:
    """``cfg->arm_lpae_s2_cfg.vtcr``: the stage-2 walk controls an STE copies."""

    tsz: int = 0
    sl: int = 0
    tg: int = ARM_LPAE_TCR_TG0_4K
    irgn: int = ARM_LPAE_TCR_RGN_WBWA
    orgn: int = ARM_LPAE_TCR_RGN_WBWA
    sh: int = ARM_LPAE_TCR_SH_IS
    ps: int = 0


@define(eq=False)
class IoPgtableCfg:
    """``struct io_pgtable_cfg`` (the LPAE stage-1 and stage-2 parts)."""

    pgsize_bitmap: int
    ias: int
    oas: int
    tlb: IommuFlushOps
    coherent_walk: bool = True
    quirks: int = 0
    ttbr: int = 0
    tcr: ArmLpaeS1Tcr = field(factory=ArmLpaeS1Tcr)
    mair: int = 0
    vttbr: int = 0
    vtcr: ArmLpaeS2Vtcr = field(factory=ArmLpaeS2Vtcr)


def iopte_leaf(pte: int, lvl: int) -> bool:
    """``iopte_leaf``: a page at level 3, a block above it."""
    if lvl == ARM_LPAE_MAX_LEVELS - 1:
        return (pte & ARM_LPAE_PTE_TYPE_MASK) == ARM_LPAE_PTE_TYPE_PAGE
    return (pte & ARM_LPAE_PTE_TYPE_MASK) == ARM_LPAE_PTE_TYPE_BLOCK


def iopte_deref(pte: int) -> int:
    """``iopte_deref``: the kernel address of the next-level table."""
    return phys_to_virt(pte & ARM_LPAE_PTE_ADDR_MASK)


def ARM_LPAE_BLOCK_SIZE(lvl: int) -> int:
    return 1 << (12 + ARM_LPAE_BITS_PER_LEVEL * (ARM_LPAE_MAX_LEVELS - 1 - lvl))


class ArmLpaeIoPgtable:
    """``struct arm_lpae_io_pgtable`` + its ``io_pgtable_ops``."""

    def __init__(
        self,
        cfg: IoPgtableCfg,
        pgd: int,
        start_level: int,
        pgd_bits: int,
        fmt: str = ARM_64_LPAE_S1,
    ) -> None:
        self.cfg = cfg
        self.fmt = fmt
        self.pgd = pgd
        self.start_level = start_level
        self.pgd_bits = pgd_bits
        self.tables = 1
        """Table pages currently allocated (the pgd included)."""

    # -- helpers ---------------------------------------------------------------------------
    def _lvl_idx(self, iova: int, lvl: int) -> int:
        bits = self.pgd_bits if lvl == self.start_level else ARM_LPAE_BITS_PER_LEVEL
        shift = 12 + ARM_LPAE_BITS_PER_LEVEL * (ARM_LPAE_MAX_LEVELS - 1 - lvl)
        return (iova >> shift) & ((1 << bits) - 1)

    def _ptes_in_table(self, lvl: int) -> int:
        return 1 << (self.pgd_bits if lvl == self.start_level else ARM_LPAE_BITS_PER_LEVEL)

    def _alloc_table(self, gfp: int) -> int | None:
        """``__arm_lpae_alloc_pages``: one zeroed table page (coherent walk: no cache
        maintenance)."""
        table = iommu_alloc_page_node(0, gfp)
        if table is not None:
            self.tables += 1
        return table

    def _free_pgtable(self, lvl: int, table: int) -> None:
        """``__arm_lpae_free_pgtable``: the tables below ``table``, then ``table``."""
        if lvl < ARM_LPAE_MAX_LEVELS - 1:
            for i in range(self._ptes_in_table(lvl)):
                pte = read64(table + 8 * i)
                if pte and not iopte_leaf(pte, lvl):
                    self._free_pgtable(lvl + 1, iopte_deref(pte))
        if lvl == self.start_level:
            iommu_free_pages(table, max(0, self.pgd_bits - ARM_LPAE_BITS_PER_LEVEL))
        else:
            iommu_free_page(table)
        self.tables -= 1

    def prot_to_pte(self, prot: int) -> int:
        """``arm_lpae_prot_to_pte``: stage 1 (AP, nG, AttrIndx) or stage 2 (S2AP,
        MemAttr)."""
        if self.fmt == ARM_64_LPAE_S2:
            pte = 0
            if prot & IOMMU_READ:
                pte |= ARM_LPAE_PTE_HAP_READ
            if prot & IOMMU_WRITE:
                pte |= ARM_LPAE_PTE_HAP_WRITE
            if prot & IOMMU_MMIO:
                pte |= ARM_LPAE_PTE_MEMATTR_DEV
            elif prot & IOMMU_CACHE:
                pte |= ARM_LPAE_PTE_MEMATTR_OIWB
            else:
                pte |= ARM_LPAE_PTE_MEMATTR_NC
            pte |= ARM_LPAE_PTE_SH_IS if prot & IOMMU_CACHE else ARM_LPAE_PTE_SH_OS
            if prot & IOMMU_NOEXEC:
                pte |= ARM_LPAE_PTE_XN
            return pte | ARM_LPAE_PTE_AF
        pte = ARM_LPAE_PTE_nG
        if not prot & IOMMU_WRITE and prot & IOMMU_READ:
            pte |= ARM_LPAE_PTE_AP_RDONLY
        elif self.cfg.quirks & IO_PGTABLE_QUIRK_ARM_HD:
            pte |= ARM_LPAE_PTE_DBM
        if not prot & IOMMU_PRIV:
            pte |= ARM_LPAE_PTE_AP_UNPRIV
        if prot & IOMMU_MMIO:
            pte |= ARM_LPAE_MAIR_ATTR_IDX_DEV << ARM_LPAE_PTE_ATTRINDX_SHIFT
        elif prot & IOMMU_CACHE:
            pte |= ARM_LPAE_MAIR_ATTR_IDX_CACHE << ARM_LPAE_PTE_ATTRINDX_SHIFT
        pte |= ARM_LPAE_PTE_SH_IS if prot & IOMMU_CACHE else ARM_LPAE_PTE_SH_OS
        if prot & IOMMU_NOEXEC:
            pte |= ARM_LPAE_PTE_XN
        return pte | ARM_LPAE_PTE_AF

    # -- map ------------------------------------------------------------------------------
    def map_pages(
        self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, gfp: int
    ) -> int:
        """``arm_lpae_map_pages``: returns the bytes mapped (see the module docstring)."""
        cfg = self.cfg
        if WARN_ON(not pgsize or (pgsize & cfg.pgsize_bitmap) != pgsize or pgsize & (pgsize - 1)):
            raise EINVAL(f"io-pgtable-arm: bad page size {pgsize:#x}")
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            return 0
        end = iova + pgsize * pgcount - 1
        if WARN_ON(end >> cfg.ias or (paddr + pgsize * pgcount - 1) >> cfg.oas):
            raise ERANGE(f"io-pgtable-arm: iova {iova:#x} or paddr {paddr:#x} out of range")
        prot_pte = self.prot_to_pte(prot)
        mapped = 0
        while pgcount:
            done, err = self._map(
                iova, paddr, pgsize, pgcount, prot_pte, self.start_level, self.pgd, gfp
            )
            mapped += done * pgsize
            if err is not None:
                if mapped:
                    return mapped
                raise err
            iova += done * pgsize
            paddr += done * pgsize
            pgcount -= done
        return mapped

    def _map(
        self,
        iova: int,
        paddr: int,
        size: int,
        pgcount: int,
        prot_pte: int,
        lvl: int,
        table: int,
        gfp: int,
    ) -> tuple[int, KernelError | None]:
        """``__arm_lpae_map``: (entries mapped, error that stopped it)."""
        idx = self._lvl_idx(iova, lvl)
        ptep = table + 8 * idx
        if size == ARM_LPAE_BLOCK_SIZE(lvl):
            num = min(pgcount, self._ptes_in_table(lvl) - idx)
            return self._init_pte(iova, paddr, prot_pte, lvl, num, ptep, table)
        if WARN_ON(lvl >= ARM_LPAE_MAX_LEVELS - 1):
            return 0, EINVAL("io-pgtable-arm: no table below the last level")
        pte = read64(ptep)
        if not pte:
            child = self._alloc_table(gfp)
            if child is None:
                return 0, ENOMEM("io-pgtable-arm: no memory for a table")
            pte = virt_to_phys(child) | ARM_LPAE_PTE_TYPE_TABLE
            pgtable_write64(ptep, pte)
        elif iopte_leaf(pte, lvl):
            WARN(True, f"io-pgtable-arm: iova {iova:#x} is mapped by a block; unmap it first")
            return 0, EEXIST(f"iova {iova:#x} already mapped")
        return self._map(iova, paddr, size, pgcount, prot_pte, lvl + 1, iopte_deref(pte), gfp)

    def _init_pte(
        self, iova: int, paddr: int, prot_pte: int, lvl: int, num: int, ptep: int, table: int
    ) -> tuple[int, KernelError | None]:
        """``arm_lpae_init_pte``: ``num`` leaves; a table in the way is unmapped first
        (a block replacing tables), an existing leaf is EEXIST. The checks run before
        any leaf is written, so a refusal maps none of the ``num``."""
        sz = ARM_LPAE_BLOCK_SIZE(lvl)
        for i in range(num):
            old = read64(ptep + 8 * i)
            if old and iopte_leaf(old, lvl):
                WARN(True, f"io-pgtable-arm: iova {iova + i * sz:#x} already mapped")
                return 0, EEXIST(f"iova {iova + i * sz:#x} already mapped")
            if old and self._unmap(None, iova + i * sz, sz, 1, lvl, table) != sz:
                WARN(True, "io-pgtable-arm: could not replace a table by a block")
                return 0, EINVAL("table replacement failed")
        kind = ARM_LPAE_PTE_TYPE_PAGE if lvl == ARM_LPAE_MAX_LEVELS - 1 else ARM_LPAE_PTE_TYPE_BLOCK
        for i in range(num):
            if should_fail("iommu_pgtable"):
                return i, ENOMEM("iommu_pgtable")
            pgtable_write64(
                ptep + 8 * i, prot_pte | kind | ((paddr + i * sz) & ARM_LPAE_PTE_ADDR_MASK)
            )
        return num, None

    # -- unmap ----------------------------------------------------------------------------
    def unmap_pages(
        self, iova: int, pgsize: int, pgcount: int, gather: IommuIotlbGather | None
    ) -> int:
        """``arm_lpae_unmap_pages``: the bytes unmapped, up to the end of one table."""
        cfg = self.cfg
        if WARN_ON(not pgsize or (pgsize & cfg.pgsize_bitmap) != pgsize or not pgcount):
            return 0
        if WARN_ON((iova + pgsize * pgcount - 1) >> cfg.ias):
            return 0
        return self._unmap(gather, iova, pgsize, pgcount, self.start_level, self.pgd)

    def _unmap(
        self,
        gather: IommuIotlbGather | None,
        iova: int,
        size: int,
        pgcount: int,
        lvl: int,
        table: int,
    ) -> int:
        """``__arm_lpae_unmap``."""
        idx = self._lvl_idx(iova, lvl)
        ptep = table + 8 * idx
        pte = read64(ptep)
        if WARN_ON(not pte, f"io-pgtable-arm: unmap of unmapped iova {iova:#x}"):
            return 0
        if size == ARM_LPAE_BLOCK_SIZE(lvl):
            num = min(pgcount, self._ptes_in_table(lvl) - idx)
            i = 0
            while i < num:
                pte = read64(ptep + 8 * i)
                if WARN_ON(not pte, f"io-pgtable-arm: unmap of unmapped iova {iova + i * size:#x}"):
                    break
                if not iopte_leaf(pte, lvl):
                    pgtable_write64(ptep + 8 * i, 0)
                    self.cfg.tlb.tlb_flush_walk(iova + i * size, size, ARM_LPAE_GRANULE)
                    self._free_pgtable(lvl + 1, iopte_deref(pte))
                i += 1
            for j in range(i):
                pgtable_write64(ptep + 8 * j, 0)
            if gather is not None and not gather.queued:
                for j in range(i):
                    self.cfg.tlb.tlb_add_page(gather, iova + j * size, size)
            return i * size
        if iopte_leaf(pte, lvl):
            WARN(True, "Unmap of a partial large IOPTE is not allowed")
            return 0
        return self._unmap(gather, iova, size, pgcount, lvl + 1, iopte_deref(pte))

    # -- dirty tracking -------------------------------------------------------------------
    def read_and_clear_dirty(
        self, iova: int, size: int, flags: int, dirty: IommuDirtyBitmap
    ) -> None:
        """``arm_lpae_read_and_clear_dirty``: record every writable-dirty leaf (DBM set,
        AP[2] clear) of ``[iova, iova + size)`` and, unless IOMMU_DIRTY_NO_CLEAR, make it
        writable-clean; EINVAL without the HD quirk or outside the input range."""
        if not self.cfg.quirks & IO_PGTABLE_QUIRK_ARM_HD:
            raise EINVAL("io-pgtable: no dirty tracking quirk")
        if WARN_ON(not size or (iova + size - 1) >> self.cfg.ias):
            raise EINVAL("io-pgtable: dirty range")
        end = iova + size
        while iova < end:
            table = self.pgd
            for lvl in range(self.start_level, ARM_LPAE_MAX_LEVELS):
                ptep = table + 8 * self._lvl_idx(iova, lvl)
                pte = read64(ptep)
                block = ARM_LPAE_BLOCK_SIZE(lvl)
                if not pte or iopte_leaf(pte, lvl):
                    break
                table = iopte_deref(pte)
            base = iova & ~(block - 1)
            writable_dirty = pte & (ARM_LPAE_PTE_AP_RDONLY | ARM_LPAE_PTE_DBM) == ARM_LPAE_PTE_DBM
            if writable_dirty and iopte_leaf(pte, lvl):
                iommu_dirty_bitmap_record(dirty, base, block)
                if not flags & IOMMU_DIRTY_NO_CLEAR:
                    pgtable_write64(ptep, pte | ARM_LPAE_PTE_AP_RDONLY)
            iova = base + block

    # -- lookup ---------------------------------------------------------------------------
    def iova_to_phys(self, iova: int) -> int:
        """``arm_lpae_iova_to_phys``: 0 when nothing maps ``iova``."""
        if iova >> self.cfg.ias:
            return 0
        table = self.pgd
        for lvl in range(self.start_level, ARM_LPAE_MAX_LEVELS):
            pte = read64(table + 8 * self._lvl_idx(iova, lvl))
            if not pte:
                return 0
            if iopte_leaf(pte, lvl):
                size = ARM_LPAE_BLOCK_SIZE(lvl)
                return (pte & ARM_LPAE_PTE_ADDR_MASK & ~(size - 1)) | (iova & (size - 1))
            table = iopte_deref(pte)
        return 0  # pragma: no cover - a level-3 entry is a page or nothing

    def walk(self, iova: int) -> list[tuple[int, int, int]]:
        """(level, descriptor address, descriptor) for each level that maps ``iova``
        (for debug dumps)."""
        out: list[tuple[int, int, int]] = []
        table = self.pgd
        for lvl in range(self.start_level, ARM_LPAE_MAX_LEVELS):
            ptep = table + 8 * self._lvl_idx(iova, lvl)
            pte = read64(ptep)
            out.append((lvl, virt_to_phys(ptep), pte))
            if not pte or iopte_leaf(pte, lvl):
                break
            table = iopte_deref(pte)
        return out


def alloc_io_pgtable_ops(
    fmt: str, cfg: IoPgtableCfg, cookie: Any = None
) -> ArmLpaeIoPgtable | None:
    """``alloc_io_pgtable_ops(ARM_64_LPAE_S1 or ARM_64_LPAE_S2, cfg, cookie)``
    (``arm_64_lpae_alloc_pgtable_s1`` / ``_s2``): None on a bad configuration or no
    memory. Stage 2 concatenates a start-level-0 table of up to 16 entries into
    level 1, and fills ``cfg.vtcr`` / ``cfg.vttbr``."""
    if fmt not in (ARM_64_LPAE_S1, ARM_64_LPAE_S2):
        return None
    cfg.pgsize_bitmap &= SZ_4K | SZ_2M | SZ_1G
    if not cfg.pgsize_bitmap & SZ_4K or cfg.ias > 48 or cfg.oas > 48 or cfg.ias < 32:
        return None
    if fmt == ARM_64_LPAE_S2 and cfg.quirks:
        return None
    levels = -(-(cfg.ias - 12) // ARM_LPAE_BITS_PER_LEVEL)
    start_level = ARM_LPAE_MAX_LEVELS - levels
    pgd_bits = cfg.ias - (12 + ARM_LPAE_BITS_PER_LEVEL * (levels - 1))
    if (
        fmt == ARM_64_LPAE_S2
        and start_level == 0
        and 1 << pgd_bits <= (ARM_LPAE_S2_MAX_CONCAT_PAGES)
    ):
        pgd_bits += ARM_LPAE_BITS_PER_LEVEL
        start_level += 1
    pgd_order = max(0, pgd_bits - ARM_LPAE_BITS_PER_LEVEL)
    pgd = iommu_alloc_pages_node(0, GFP_KERNEL, pgd_order)
    if pgd is None:
        return None
    if fmt == ARM_64_LPAE_S2:
        sl = start_level + 1  # the SL0 encoding of the 4 KiB granule
        cfg.vtcr = ArmLpaeS2Vtcr(tsz=64 - cfg.ias, sl=~sl & 3, ps=ARM_LPAE_TCR_PS[cfg.oas])
        cfg.vttbr = virt_to_phys(pgd)
        return ArmLpaeIoPgtable(cfg, pgd, start_level, pgd_bits, fmt)
    cfg.tcr = ArmLpaeS1Tcr(tsz=64 - cfg.ias, ips=ARM_LPAE_TCR_PS[cfg.oas])
    cfg.mair = (
        (ARM_LPAE_MAIR_ATTR_NC << ARM_LPAE_MAIR_ATTR_SHIFT(ARM_LPAE_MAIR_ATTR_IDX_NC))
        | (ARM_LPAE_MAIR_ATTR_WBRWA << ARM_LPAE_MAIR_ATTR_SHIFT(ARM_LPAE_MAIR_ATTR_IDX_CACHE))
        | (ARM_LPAE_MAIR_ATTR_DEVICE << ARM_LPAE_MAIR_ATTR_SHIFT(ARM_LPAE_MAIR_ATTR_IDX_DEV))
        | (
            ARM_LPAE_MAIR_ATTR_INC_OWBRWA
            << ARM_LPAE_MAIR_ATTR_SHIFT(ARM_LPAE_MAIR_ATTR_IDX_INC_OCACHE)
        )
    )
    cfg.ttbr = virt_to_phys(pgd)
    return ArmLpaeIoPgtable(cfg, pgd, start_level, pgd_bits)


def free_io_pgtable_ops(ops: ArmLpaeIoPgtable | None) -> None:
    """``free_io_pgtable_ops``: flush the whole TLB context, then free every table."""
    if ops is None:
        return
    ops.cfg.tlb.tlb_flush_all()
    ops._free_pgtable(ops.start_level, ops.pgd)
