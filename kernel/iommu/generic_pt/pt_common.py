"""What every page-table format tells the generic algorithm (drivers/iommu/generic_pt/
pt_common.h, pt_defs.h, include/linux/generic_pt/common.h).

A format is a :class:`PtFormat` subclass: how big a table is and what one entry at a
given level means (empty, a pointer to a lower table, or an output address), how to
write a leaf and a table pointer, how ``IOMMU_READ``/``IOMMU_WRITE``/... become
descriptor bits, and how many levels a configured VA width needs. The algorithm in
:mod:`kernel.iommu.generic_pt.iommu_pt` never looks at a bit itself.

Levels are numbered as upstream numbers them: level 0 holds the smallest pages (the
4 KiB PTEs), each level above covers 9 more address bits, the top level is the one
the hardware's table pointer names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from attrs import define

from kernel.bitfield import BIT
from kernel.errno import EINVAL

# enum pt_entry_type
PT_ENTRY_EMPTY = 0
PT_ENTRY_TABLE = 1
PT_ENTRY_OA = 2

# enum pt_features (the generic ones; formats number theirs from PT_FEAT_FMT_START)
PT_FEAT_DMA_INCOHERENT = 0
PT_FEAT_FULL_VA = 1
PT_FEAT_DYNAMIC_TOP = 2
PT_FEAT_SIGN_EXTEND = 3
PT_FEAT_FLUSH_RANGE = 4
PT_FEAT_FLUSH_RANGE_NO_GAPS = 5
PT_FEAT_FMT_START = 6

PT_GRANULE_LG2SZ = 12
PT_TABLEMEM_LG2SZ = 12
PT_ITEM_WORD_SIZE = 8
PT_BITS_PER_LEVEL = PT_TABLEMEM_LG2SZ - 3
PT_ITEMS_PER_TABLE = 1 << PT_BITS_PER_LEVEL


@define
class PtIommuCfg:
    """``struct pt_iommu_cfg``: the features the driver asks for and the widths its
    hardware walks (``hw_max_vasz_lg2`` input bits, ``hw_max_oasz_lg2`` output bits)."""

    features: int = 0
    hw_max_vasz_lg2: int = 0
    hw_max_oasz_lg2: int = 52


def pt_item_lg2sz(level: int) -> int:
    """``pt_table_item_lg2sz`` for the 4 KiB-granule, 512-entry formats: the log2 of
    the span one entry at ``level`` translates."""
    return PT_GRANULE_LG2SZ + PT_BITS_PER_LEVEL * level


class PtFormat(ABC):
    """One page-table format (the per-format ``pt_*`` inline functions of
    generic_pt/fmt/<fmt>.h). Subclasses set the class constants and override the
    entry functions; an instance belongs to one table, so a format may keep
    per-table state (its feature bits)."""

    name = "?"
    PT_MAX_OUTPUT_ADDRESS_LG2 = 52
    PT_MAX_VA_ADDRESS_LG2 = 57
    PT_MAX_TOP_LEVEL = 4
    SUPPORTED_FEATURES = BIT(PT_FEAT_FLUSH_RANGE) | BIT(PT_FEAT_FLUSH_RANGE_NO_GAPS)

    def __init__(self, features: int) -> None:
        self.features = features

    def feature(self, feat: int) -> bool:
        """``pt_feature``."""
        return bool(self.features & BIT(feat))

    # -- table shape -------------------------------------------------------------------
    def can_have_leaf(self, level: int) -> bool:
        """``pt_can_have_leaf``: 4 KiB, 2 MiB and 1 GiB leaves (levels 0..2)."""
        return level <= 2

    @abstractmethod
    def fmt_init(self, cfg: PtIommuCfg) -> int:
        """``pt_iommu_fmt_init``: the top level for ``cfg``'s VA width; raises
        EINVAL/EOPNOTSUPP for a width the format cannot walk."""

    # -- entries -----------------------------------------------------------------------
    @abstractmethod
    def entry_type(self, entry: int, level: int) -> int:
        """``pt_load_entry_raw``: PT_ENTRY_EMPTY / PT_ENTRY_TABLE / PT_ENTRY_OA."""
        ...

    @abstractmethod
    def table_pa(self, entry: int) -> int:
        """``pt_table_pa``: the physical address of the lower table."""
        ...

    @abstractmethod
    def entry_oa(self, entry: int, level: int) -> int:
        """``pt_entry_oa``: the output address of a leaf (aligned to its size)."""
        ...

    def entry_oa_lg2sz(self, entry: int, level: int) -> int:
        """``pt_entry_oa_lg2sz``: log2 of the size of the page a leaf maps (its
        level's span unless the format encodes a larger run)."""
        return pt_item_lg2sz(level)

    @abstractmethod
    def leaf_entry(self, oa: int, level: int, attrs: int) -> int:
        """``pt_install_leaf_entry``: the leaf value for ``oa`` at ``level``."""
        ...

    @abstractmethod
    def table_entry(self, table_pa: int, level: int) -> int:
        """``pt_install_table``: the value of an entry at ``level`` pointing at a
        lower table."""
        ...

    @abstractmethod
    def set_prot(self, prot: int) -> int:
        """``pt_iommu_set_prot``: descriptor bits for ``IOMMU_*`` flags; EINVAL for a
        combination the format cannot express."""
        ...

    def check_features(self, features: int) -> None:
        """``pt_init`` refuses feature bits the format does not implement."""
        if features & ~self.SUPPORTED_FEATURES:
            raise EINVAL(f"{self.name}: unsupported page-table features {features:#x}")
