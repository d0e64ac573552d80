"""ARM VMSAv8-64 LPAE stage 1 with the 4 KiB granule (Arm ARM D8 "The AArch64
Virtual Memory System Architecture"), as SMMUv3 context descriptors use it.

Upstream's generic_pt has no ARMv8 format yet (one was posted with the library's
first series; upstream SMMUv3 still uses io-pgtable-arm): this is the project's, in
the same shape as the merged formats. Levels: generic level 0 = ARM level 3 (4 KiB
pages, type 0b11), 1 = ARM level 2 (2 MiB blocks, 0b01), 2 = ARM level 1 (1 GiB
blocks), 3 = ARM level 0 (tables only). Table descriptors are 0b11.

Leaf attributes follow what io-pgtable-arm writes for stage 1 (so the SMMUv3 model
sees the same descriptors from either generation): AF, nG, SH (inner shareable when
cacheable, outer otherwise), AttrIndx into the MAIR below (0 non-cacheable,
1 write-back, 2 device), AP[2] for read-only, AP[1] unless ``IOMMU_PRIV``, XN for
``IOMMU_NOEXEC``. :func:`pt_iommu_armv8_hw_info` gives what a CD needs: TTB0,
T0SZ, IPS and the MAIR.
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
    PtFormat,
    PtIommuCfg,
)
from kernel.iommu.iommu_h import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuDomain,
)
from kernel.mm import GFP_KERNEL

ARMV8_PT_TYPE_MASK = 0x3
ARMV8_PT_TYPE_BLOCK = 0x1
ARMV8_PT_TYPE_TABLE = 0x3
ARMV8_PT_TYPE_PAGE = 0x3
ARMV8_PT_OA = GENMASK(47, 12)
ARMV8_PT_ATTRINDX = GENMASK(4, 2)
ARMV8_PT_AP_UNPRIV = BIT(6)
ARMV8_PT_AP_RDONLY = BIT(7)
ARMV8_PT_SH_OS = 2 << 8
ARMV8_PT_SH_IS = 3 << 8
ARMV8_PT_AF = BIT(10)
ARMV8_PT_NG = BIT(11)
ARMV8_PT_XN = BIT(54)

ARMV8_MAIR_IDX_NC = 0
ARMV8_MAIR_IDX_CACHE = 1
ARMV8_MAIR_IDX_DEV = 2
ARMV8_MAIR_IDX_INC_OCACHE = 3
ARMV8_MAIR = (
    (0x44 << 8 * ARMV8_MAIR_IDX_NC)  # normal, non-cacheable
    | (0xFF << 8 * ARMV8_MAIR_IDX_CACHE)  # normal, write-back RW-allocate
    | (0x04 << 8 * ARMV8_MAIR_IDX_DEV)  # device nGnRE
    | (0xF4 << 8 * ARMV8_MAIR_IDX_INC_OCACHE)  # inner non-cacheable, outer write-back
)
ARMV8_TCR_IPS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5}


class Armv8Format(PtFormat):
    """LPAE stage 1, 4 KiB granule, up to 48 input and output bits."""

    name = "armv8"
    PT_MAX_OUTPUT_ADDRESS_LG2 = 48
    PT_MAX_VA_ADDRESS_LG2 = 48
    PT_MAX_TOP_LEVEL = 3

    def fmt_init(self, cfg: PtIommuCfg) -> int:
        """The top level for 32..48 input bits (T0SZ 32..16)."""
        vasz = cfg.hw_max_vasz_lg2
        if not 32 <= vasz <= self.PT_MAX_VA_ADDRESS_LG2:
            raise EOPNOTSUPP(f"armv8: {vasz}-bit input address not supported")
        if cfg.hw_max_oasz_lg2 not in ARMV8_TCR_IPS:
            raise EINVAL(f"armv8: {cfg.hw_max_oasz_lg2}-bit output address not supported")
        return -(-(vasz - 12) // 9) - 1

    def entry_type(self, entry: int, level: int) -> int:
        kind = entry & ARMV8_PT_TYPE_MASK
        if not kind & 1:
            return PT_ENTRY_EMPTY
        if level == 0 or kind == ARMV8_PT_TYPE_BLOCK:
            return PT_ENTRY_OA
        return PT_ENTRY_TABLE

    def table_pa(self, entry: int) -> int:
        return entry & ARMV8_PT_OA

    def entry_oa(self, entry: int, level: int) -> int:
        return entry & ARMV8_PT_OA & ~((1 << (12 + 9 * level)) - 1)

    def leaf_entry(self, oa: int, level: int, attrs: int) -> int:
        kind = ARMV8_PT_TYPE_PAGE if level == 0 else ARMV8_PT_TYPE_BLOCK
        return (oa & ARMV8_PT_OA) | attrs | kind

    def table_entry(self, table_pa: int, level: int) -> int:
        return table_pa | ARMV8_PT_TYPE_TABLE

    def set_prot(self, prot: int) -> int:
        """What ``arm_lpae_prot_to_pte`` gives a stage-1 leaf."""
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise EINVAL("armv8: a mapping needs read or write")
        bits = ARMV8_PT_NG | ARMV8_PT_AF
        if not prot & IOMMU_WRITE:
            bits |= ARMV8_PT_AP_RDONLY
        if not prot & IOMMU_PRIV:
            bits |= ARMV8_PT_AP_UNPRIV
        if prot & IOMMU_MMIO:
            bits |= ARMV8_MAIR_IDX_DEV << 2
        elif prot & IOMMU_CACHE:
            bits |= ARMV8_MAIR_IDX_CACHE << 2
        bits |= ARMV8_PT_SH_IS if prot & IOMMU_CACHE else ARMV8_PT_SH_OS
        if prot & IOMMU_NOEXEC:
            bits |= ARMV8_PT_XN
        return bits


@define
class PtIommuArmv8Cfg:
    """``struct pt_iommu_armv8_cfg`` (4 KiB granule)."""

    common: PtIommuCfg = field(factory=PtIommuCfg)


@define
class PtIommuArmv8HwInfo:
    """``struct pt_iommu_armv8_hw_info``: TTB0 and the TCR/MAIR fields a CD holds."""

    ttbr: int
    tsz: int
    ips: int
    mair: int


def pt_iommu_armv8_init(
    domain: IommuDomain, cfg: PtIommuArmv8Cfg, gfp: int = GFP_KERNEL, iotlb_sync: Sync = None
) -> PtIommu:
    """``pt_iommu_armv8_init`` (the 4 KiB granule)."""
    fmt = Armv8Format(cfg.common.features)
    return pt_iommu_init(fmt, cfg.common, domain, gfp, iotlb_sync)


def pt_iommu_armv8_hw_info(table: PtIommu) -> PtIommuArmv8HwInfo:
    """``pt_iommu_armv8_hw_info``: T0SZ from the VA width, IPS from the OA width."""
    return PtIommuArmv8HwInfo(
        table.top_table, 64 - table.max_vasz_lg2, ARMV8_TCR_IPS[table.max_oasz_lg2], ARMV8_MAIR
    )
