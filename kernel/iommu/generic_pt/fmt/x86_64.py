"""The x86-64 4/5-level paging format (drivers/iommu/generic_pt/fmt/x86_64.h).

The CPU's own process and kernel page tables, VT-d first-stage tables and AMD's v2
(guest) tables all use it, so this module is the one home of its entry encoding:
present, R/W, U/S, accessed, dirty, page size and XD at the SDM's bit positions
(Intel SDM vol. 3 "4-Level Paging and 5-Level Paging", VT-d spec 9.7). Levels as
generic_pt numbers them: 0 = PTE, 1 = PDE (2 MiB), 2 = PDPTE (1 GiB), 3 = PML4E,
4 = PML5E.

``PT_FEAT_SIGN_EXTEND`` gives the canonical lower/upper split; the IOMMU domain
uses the lower half.
"""

from __future__ import annotations

from attrs import define, field

from kernel.bitfield import BIT, GENMASK
from kernel.errno import EINVAL
from kernel.iommu.generic_pt.iommu_pt import PtIommu, Sync, pt_iommu_init
from kernel.iommu.generic_pt.pt_common import (
    PT_ENTRY_EMPTY,
    PT_ENTRY_OA,
    PT_ENTRY_TABLE,
    PT_FEAT_FLUSH_RANGE,
    PT_FEAT_FLUSH_RANGE_NO_GAPS,
    PT_FEAT_SIGN_EXTEND,
    PtFormat,
    PtIommuCfg,
)
from kernel.iommu.iommu_h import IOMMU_WRITE, IommuDomain
from kernel.mm import GFP_KERNEL

X86_64_FMT_P = BIT(0)
X86_64_FMT_RW = BIT(1)
X86_64_FMT_U = BIT(2)
X86_64_FMT_A = BIT(5)
X86_64_FMT_D = BIT(6)
X86_64_FMT_PS = BIT(7)
X86_64_FMT_OA = GENMASK(51, 12)
X86_64_FMT_XD = BIT(63)


class X86_64Format(PtFormat):
    """``x86_64_pt_*``."""

    name = "x86_64"
    PT_MAX_OUTPUT_ADDRESS_LG2 = 52
    PT_MAX_VA_ADDRESS_LG2 = 57
    PT_MAX_TOP_LEVEL = 4
    SUPPORTED_FEATURES = (
        BIT(PT_FEAT_SIGN_EXTEND) | BIT(PT_FEAT_FLUSH_RANGE) | BIT(PT_FEAT_FLUSH_RANGE_NO_GAPS)
    )

    def fmt_init(self, cfg: PtIommuCfg) -> int:
        """``x86_64_pt_iommu_fmt_init``: 31..57 VA bits, top level 2..4."""
        if not 31 <= cfg.hw_max_vasz_lg2 <= 57:
            raise EINVAL(f"x86_64: {cfg.hw_max_vasz_lg2}-bit VA not supported")
        return (cfg.hw_max_vasz_lg2 - 31) // 9 + 2

    def entry_type(self, entry: int, level: int) -> int:
        if not entry & X86_64_FMT_P:
            return PT_ENTRY_EMPTY
        if level == 0 or (level <= 2 and entry & X86_64_FMT_PS):
            return PT_ENTRY_OA
        return PT_ENTRY_TABLE

    def table_pa(self, entry: int) -> int:
        return entry & X86_64_FMT_OA

    def entry_oa(self, entry: int, level: int) -> int:
        return entry & X86_64_FMT_OA & ~((1 << (12 + 9 * level)) - 1)

    def leaf_entry(self, oa: int, level: int, attrs: int) -> int:
        entry = X86_64_FMT_P | (oa & X86_64_FMT_OA) | attrs
        return entry | X86_64_FMT_PS if level else entry

    def table_entry(self, table_pa: int, level: int) -> int:
        return X86_64_FMT_P | X86_64_FMT_RW | X86_64_FMT_U | X86_64_FMT_A | table_pa

    def set_prot(self, prot: int) -> int:
        """``x86_64_pt_iommu_set_prot``: user, accessed; writable leaves also dirty
        (the format has no write-only, a readable page is present)."""
        bits = X86_64_FMT_U | X86_64_FMT_A
        if prot & IOMMU_WRITE:
            bits |= X86_64_FMT_RW | X86_64_FMT_D
        return bits


@define
class PtIommuX86_64Cfg:
    """``struct pt_iommu_x86_64_cfg``."""

    common: PtIommuCfg = field(factory=PtIommuCfg)


@define
class PtIommuX86_64HwInfo:
    """``struct pt_iommu_x86_64_hw_info``: the top table and the number of levels."""

    gcr3_pt: int
    levels: int


def pt_iommu_x86_64_init(
    domain: IommuDomain, cfg: PtIommuX86_64Cfg, gfp: int = GFP_KERNEL, iotlb_sync: Sync = None
) -> PtIommu:
    """``pt_iommu_x86_64_init``."""
    fmt = X86_64Format(cfg.common.features)
    return pt_iommu_init(fmt, cfg.common, domain, gfp, iotlb_sync)


def pt_iommu_x86_64_hw_info(table: PtIommu) -> PtIommuX86_64HwInfo:
    """``pt_iommu_x86_64_hw_info``."""
    return PtIommuX86_64HwInfo(table.top_table, table.top_level + 1)
