"""io-pgtable-arm's stage-2 format (``ARM_64_LPAE_S2``), which the SMMUv3 driver
uses for nesting parents under ``iommufd.viommu=on`` (Linux 6.13): the leaf bits
(S2AP, MemAttr, no nG/AP), the VTCR fields the STE copies, and the concatenated
start level."""

from __future__ import annotations

from drivers.arm_smmu_v3 import io_pgtable_arm as lpae
from drivers.arm_smmu_v3.io_pgtable_arm import IO_PGTABLE_QUIRK_ARM_HD
from kernel.boot import Kernel
from kernel.iommu.iommu import iommu_domain_free, iommu_paging_domain_alloc
from kernel.iommu.iommu_h import IOMMU_CACHE, IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE
from kernel.mm import virt_to_phys
from tests.drivers.arm_smmu_v3.conftest import edu


def _cfg(ias: int) -> lpae.IoPgtableCfg:
    dom = iommu_paging_domain_alloc(edu())
    return lpae.IoPgtableCfg(pgsize_bitmap=0x4020_1000, ias=ias, oas=48, tlb=dom)  # type: ignore[arg-type]


def test_stage_2_leaves_carry_s2ap_and_memattr(k: Kernel) -> None:
    cfg = _cfg(48)
    ops = lpae.alloc_io_pgtable_ops(lpae.ARM_64_LPAE_S2, cfg)
    assert ops is not None and ops.start_level == 0
    ops.map_pages(0x1000, 0x20_0000, 0x1000, 1, IOMMU_READ | IOMMU_CACHE, 0)
    ops.map_pages(0x2000, 0x30_0000, 0x1000, 1, IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO, 0)
    ops.map_pages(0x3000, 0x40_0000, 0x1000, 1, IOMMU_WRITE | IOMMU_NOEXEC, 0)
    ro, dev, wo = (ops.walk(a)[-1][2] for a in (0x1000, 0x2000, 0x3000))
    assert ro & 0x3FF == 0b11 | 1 << 6 | 0xF << 2 | 3 << 8  # page, S2AP=R, WB, inner shareable
    assert ro & (1 << 10) and not ro & (1 << 11)  # AF, never nG at stage 2
    assert dev & 0xFF == 0b11 | 3 << 6 | 1 << 2  # S2AP=RW, Device
    assert wo & 0xFF == 0b11 | 2 << 6 | 5 << 2 and wo & lpae.ARM_LPAE_PTE_XN  # W, NC, XN
    assert ops.iova_to_phys(0x2008) == 0x30_0008
    assert (cfg.vtcr.tsz, cfg.vtcr.sl, cfg.vtcr.ps, cfg.vtcr.tg) == (16, 2, 5, 0)
    assert cfg.vttbr == virt_to_phys(ops.pgd)
    lpae.free_io_pgtable_ops(ops)
    iommu_domain_free(cfg.tlb)  # type: ignore[arg-type]


def test_a_small_ipa_concatenates_the_start_level(k: Kernel) -> None:
    """40 bits would start at level 0 with 2 entries: the table starts at level 1
    with 1024 entries in two concatenated pages instead (SL0 = 1)."""
    cfg = _cfg(40)
    ops = lpae.alloc_io_pgtable_ops(lpae.ARM_64_LPAE_S2, cfg)
    assert ops is not None and (ops.start_level, ops.pgd_bits) == (1, 10)
    assert (cfg.vtcr.tsz, cfg.vtcr.sl) == (24, 1)
    high = (1 << 39) + 0x5000  # in the second concatenated page
    ops.map_pages(high, 0x50_0000, 0x1000, 1, IOMMU_READ, 0)
    assert ops.walk(high)[0][1] == virt_to_phys(ops.pgd) + 8 * 512
    assert ops.iova_to_phys(high) == 0x50_0000
    lpae.free_io_pgtable_ops(ops)
    iommu_domain_free(cfg.tlb)  # type: ignore[arg-type]


def test_stage_2_takes_no_quirks(k: Kernel) -> None:
    cfg = _cfg(48)
    cfg.quirks = IO_PGTABLE_QUIRK_ARM_HD
    assert lpae.alloc_io_pgtable_ops(lpae.ARM_64_LPAE_S2, cfg) is None
    iommu_domain_free(cfg.tlb)  # type: ignore[arg-type]
