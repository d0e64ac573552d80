"""The VT-d second-stage format (drivers/iommu/generic_pt/fmt/vtdss.h; VT-d spec 3.7
"Second-Stage Translation" and 9.8 "Second-Stage Paging Entries").

No present bit: an entry is live when R or W is set. Table entries carry R|W, leaves
the mapping's R/W (and SNP with ``PT_FEAT_VTDSS_FORCE_COHERENCE``) and the page-size
bit above level 0. 3, 4 or 5 levels (top level 2..4) for 39, 48 or 57 VA bits; the
context/PASID entry's AW field is ``top_level - 1``.
"""

from __future__ import annotations

from attrs import define, field

from kernel.bitfield import BIT, GENMASK
from kernel.errno import EINVAL, EOPNOTSUPP
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

VTDSS_FMT_R = BIT(0)
VTDSS_FMT_W = BIT(1)
VTDSS_FMT_PS = BIT(7)
VTDSS_FMT_A = BIT(8)
VTDSS_FMT_D = BIT(9)
VTDSS_FMT_SNP = BIT(11)
VTDSS_FMT_OA = GENMASK(51, 12)

PT_FEAT_VTDSS_FORCE_COHERENCE = PT_FEAT_FMT_START
PT_FEAT_VTDSS_FORCE_WRITEABLE = PT_FEAT_FMT_START + 1


class VtdssFormat(PtFormat):
    """``vtdss_pt_*``."""

    name = "vtdss"
    PT_MAX_OUTPUT_ADDRESS_LG2 = 52
    PT_MAX_VA_ADDRESS_LG2 = 57
    PT_MAX_TOP_LEVEL = 4
    SUPPORTED_FEATURES = (
        BIT(PT_FEAT_FLUSH_RANGE)
        | BIT(PT_FEAT_FLUSH_RANGE_NO_GAPS)
        | BIT(PT_FEAT_VTDSS_FORCE_COHERENCE)
        | BIT(PT_FEAT_VTDSS_FORCE_WRITEABLE)
    )

    def fmt_init(self, cfg: PtIommuCfg) -> int:
        """``vtdss_pt_iommu_fmt_init``."""
        vasz = cfg.hw_max_vasz_lg2
        if vasz > self.PT_MAX_VA_ADDRESS_LG2 or vasz <= 30:
            raise EOPNOTSUPP(f"vtdss: {vasz}-bit VA not supported")
        return 4 if vasz > 48 else 3 if vasz > 39 else 2

    def entry_type(self, entry: int, level: int) -> int:
        if not entry & (VTDSS_FMT_R | VTDSS_FMT_W):
            return PT_ENTRY_EMPTY
        if level == 0 or (level <= 2 and entry & VTDSS_FMT_PS):
            return PT_ENTRY_OA
        return PT_ENTRY_TABLE

    def table_pa(self, entry: int) -> int:
        return entry & VTDSS_FMT_OA

    def entry_oa(self, entry: int, level: int) -> int:
        return entry & VTDSS_FMT_OA & ~((1 << (12 + 9 * level)) - 1)

    def leaf_entry(self, oa: int, level: int, attrs: int) -> int:
        entry = (oa & VTDSS_FMT_OA) | attrs
        return entry | VTDSS_FMT_PS if level else entry

    def table_entry(self, table_pa: int, level: int) -> int:
        return VTDSS_FMT_R | VTDSS_FMT_W | table_pa

    def set_prot(self, prot: int) -> int:
        """``vtdss_pt_iommu_set_prot``: R and W as asked (one of them is needed: it
        is what makes the entry present), SNP when coherence is forced; a nesting
        parent refuses read-only mappings (erratum 772415)."""
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise EINVAL("vtdss: a mapping needs read or write")
        bits = (VTDSS_FMT_R if prot & IOMMU_READ else 0) | (
            VTDSS_FMT_W if prot & IOMMU_WRITE else 0
        )
        if self.feature(PT_FEAT_VTDSS_FORCE_COHERENCE):
            bits |= VTDSS_FMT_SNP
        if self.feature(PT_FEAT_VTDSS_FORCE_WRITEABLE) and not prot & IOMMU_WRITE:
            raise EINVAL("vtdss: read-only mapping refused on a nesting parent")
        return bits


@define
class PtIommuVtdssCfg:
    """``struct pt_iommu_vtdss_cfg``."""

    common: PtIommuCfg = field(factory=PtIommuCfg)


@define
class PtIommuVtdssHwInfo:
    """``struct pt_iommu_vtdss_hw_info``: SSPTPTR and the AW field."""

    ssptptr: int
    aw: int


def pt_iommu_vtdss_init(
    domain: IommuDomain, cfg: PtIommuVtdssCfg, gfp: int = GFP_KERNEL, iotlb_sync: Sync = None
) -> PtIommu:
    """``pt_iommu_vtdss_init``."""
    fmt = VtdssFormat(cfg.common.features)
    return pt_iommu_init(fmt, cfg.common, domain, gfp, iotlb_sync)


def pt_iommu_vtdss_hw_info(table: PtIommu) -> PtIommuVtdssHwInfo:
    """``pt_iommu_vtdss_hw_info``."""
    return PtIommuVtdssHwInfo(table.top_table, table.top_level - 1)
