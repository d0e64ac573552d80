"""The AMD IOMMU v1 host page table (drivers/iommu/generic_pt/fmt/amdv1.h; AMD I/O
Virtualization Technology spec 2.2.3 "I/O Page Tables for Host Translations").

Every present entry has PR and a NextLevel field: a table pointer names the level
of the table below (generic level + 0, i.e. mode numbering), a leaf has NextLevel 0
(a page of the level's natural size) or 7 (a larger power-of-two page encoded in
the low address bits). IR/IW are ANDed along the walk, so tables carry both and the
leaf decides; FC forces coherence. The top level is the DTE's Mode - 1, chosen by
the driver (``starting_level``).

Leaves written here are natural-size ones (4 KiB, 2 MiB, 1 GiB; 512 GiB pages are
not offered, as upstream, for a hardware erratum). Upstream also writes NextLevel-7
runs for the power-of-two sizes between; here such an entry is only recognised (a
leaf: mapping over it is EADDRINUSE) and its base decoded.
"""

from __future__ import annotations

from attrs import define, field

from kernel.bitfield import BIT, FIELD_GET, FIELD_PREP, GENMASK
from kernel.errno import EINVAL
from kernel.iommu.generic_pt.iommu_pt import PtIommu, Sync, pt_iommu_init
from kernel.iommu.generic_pt.pt_common import (
    PT_ENTRY_EMPTY,
    PT_ENTRY_OA,
    PT_ENTRY_TABLE,
    PT_FEAT_FLUSH_RANGE,
    PT_FEAT_FLUSH_RANGE_NO_GAPS,
    PT_FEAT_FMT_START,
    PtFormat,
    PtIommuCfg,
)
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE, IommuDomain
from kernel.mm import GFP_KERNEL

AMDV1PT_FMT_PR = BIT(0)
AMDV1PT_FMT_D = BIT(6)
AMDV1PT_FMT_NEXT_LEVEL = GENMASK(11, 9)
AMDV1PT_FMT_OA = GENMASK(51, 12)
AMDV1PT_FMT_FC = BIT(60)
AMDV1PT_FMT_IR = BIT(61)
AMDV1PT_FMT_IW = BIT(62)
AMDV1PT_FMT_NL_DEFAULT = 0
AMDV1PT_FMT_NL_SIZE = 7

PT_FEAT_AMDV1_FORCE_COHERENCE = PT_FEAT_FMT_START + 1


class Amdv1Format(PtFormat):
    """``amdv1pt_*``."""

    name = "amdv1"
    PT_MAX_OUTPUT_ADDRESS_LG2 = 52
    PT_MAX_VA_ADDRESS_LG2 = 64
    PT_MAX_TOP_LEVEL = 5
    SUPPORTED_FEATURES = (
        BIT(PT_FEAT_FLUSH_RANGE)
        | BIT(PT_FEAT_FLUSH_RANGE_NO_GAPS)
        | BIT(PT_FEAT_AMDV1_FORCE_COHERENCE)
    )

    def __init__(self, features: int, starting_level: int) -> None:
        super().__init__(features)
        self.starting_level = starting_level

    def fmt_init(self, cfg: PtIommuCfg) -> int:
        """``amdv1pt_iommu_fmt_init``: the driver's starting level (1..5)."""
        if not 1 <= self.starting_level <= self.PT_MAX_TOP_LEVEL:
            raise EINVAL(f"amdv1: starting level {self.starting_level} not supported")
        if cfg.hw_max_vasz_lg2 < 21:
            raise EINVAL(f"amdv1: {cfg.hw_max_vasz_lg2}-bit VA not supported")
        return self.starting_level

    def entry_type(self, entry: int, level: int) -> int:
        if not entry & AMDV1PT_FMT_PR:
            return PT_ENTRY_EMPTY
        nl = FIELD_GET(AMDV1PT_FMT_NEXT_LEVEL, entry)
        if level == 0 or nl in (AMDV1PT_FMT_NL_DEFAULT, AMDV1PT_FMT_NL_SIZE):
            return PT_ENTRY_OA
        return PT_ENTRY_TABLE

    def table_pa(self, entry: int) -> int:
        return entry & AMDV1PT_FMT_OA

    def entry_oa_lg2sz(self, entry: int, level: int) -> int:
        """A NextLevel-7 run's size is coded as the trailing ones of its OA field:
        n ones = 2^(n + 13) bytes."""
        if FIELD_GET(AMDV1PT_FMT_NEXT_LEVEL, entry) == AMDV1PT_FMT_NL_SIZE:
            pfn = (entry & AMDV1PT_FMT_OA) >> 12
            return 12 + (pfn ^ (pfn + 1)).bit_length()
        return 12 + 9 * level

    def entry_oa(self, entry: int, level: int) -> int:
        return entry & AMDV1PT_FMT_OA & ~((1 << self.entry_oa_lg2sz(entry, level)) - 1)

    def leaf_entry(self, oa: int, level: int, attrs: int) -> int:
        return AMDV1PT_FMT_PR | (oa & AMDV1PT_FMT_OA) | attrs

    def table_entry(self, table_pa: int, level: int) -> int:
        """``amdv1pt_install_table``: NextLevel names the lower table's mode."""
        return (
            AMDV1PT_FMT_PR
            | FIELD_PREP(AMDV1PT_FMT_NEXT_LEVEL, level)
            | table_pa
            | AMDV1PT_FMT_IR
            | AMDV1PT_FMT_IW
        )

    def set_prot(self, prot: int) -> int:
        """``amdv1pt_iommu_set_prot``."""
        bits = AMDV1PT_FMT_FC if self.feature(PT_FEAT_AMDV1_FORCE_COHERENCE) else 0
        if prot & IOMMU_READ:
            bits |= AMDV1PT_FMT_IR
        if prot & IOMMU_WRITE:
            bits |= AMDV1PT_FMT_IW
        return bits


@define
class PtIommuAmdv1Cfg:
    """``struct pt_iommu_amdv1_cfg``."""

    common: PtIommuCfg = field(factory=PtIommuCfg)
    starting_level: int = 2


@define
class PtIommuAmdv1HwInfo:
    """``struct pt_iommu_amdv1_hw_info``: the DTE's Host Page Table Root and Mode."""

    host_pt_root: int
    mode: int


def pt_iommu_amdv1_init(
    domain: IommuDomain, cfg: PtIommuAmdv1Cfg, gfp: int = GFP_KERNEL, iotlb_sync: Sync = None
) -> PtIommu:
    """``pt_iommu_amdv1_init``."""
    fmt = Amdv1Format(cfg.common.features, cfg.starting_level)
    return pt_iommu_init(fmt, cfg.common, domain, gfp, iotlb_sync)


def pt_iommu_amdv1_hw_info(table: PtIommu) -> PtIommuAmdv1HwInfo:
    """``pt_iommu_amdv1_hw_info``."""
    return PtIommuAmdv1HwInfo(table.top_table, table.top_level + 1)
