"""Each format's entries, bit by bit, against the architecture's layout (Intel SDM
4-level paging, VT-d 9.8 second-stage entries, Arm VMSAv8-64 stage-1 descriptors,
AMD IOMMU 2.2.3 host page tables) - the values a hardware walker reads."""

from __future__ import annotations

import pytest

from kernel.bitfield import BIT
from kernel.boot import Kernel
from kernel.errno import EINVAL
from kernel.iommu.generic_pt.fmt import amdv1, armv8, vtdss, x86_64
from kernel.iommu.generic_pt.pt_common import PT_FEAT_FLUSH_RANGE, PtIommuCfg
from kernel.iommu.iommu_h import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuDomain,
    IommuIotlbGather,
)
from kernel.mm import PAGE_OFFSET, read64, write64
from tests.kernel.iommu.generic_pt.tables import SZ_2M, SZ_4K, make_table

RW = IOMMU_READ | IOMMU_WRITE
PHYS = 0x1234_5000


def _entries(t: object, iova: int) -> list[int]:
    return [e for _, _, e in t.walk(iova)]  # type: ignore[attr-defined]


def test_x86_64_entries_are_cpu_page_table_entries(k: Kernel) -> None:
    t, _, _ = make_table("x86_64")
    t.map_pages(0, PHYS, SZ_4K, 1, RW, 0)
    t.map_pages(SZ_4K, PHYS, SZ_4K, 1, IOMMU_READ, 0)
    t.map_pages(SZ_2M, 0x4000_0000, SZ_2M, 1, RW, 0)
    *tables, leaf = _entries(t, 0)
    assert all(e & 0xFFF == 0b0010_0111 for e in tables)  # P RW U/S A
    assert leaf == PHYS | 0b0110_0111  # P RW U/S A D
    assert _entries(t, SZ_4K)[-1] == PHYS | 0b0010_0101  # read-only: no RW, no D
    big = _entries(t, SZ_2M)
    assert len(big) == 3 and big[-1] == 0x4000_0000 | 0b1110_0111  # PS
    info = x86_64.pt_iommu_x86_64_hw_info(t)
    assert (info.gcr3_pt, info.levels) == (t.top_table, 4)
    t.deinit()


def test_vtdss_entries_have_no_present_bit_and_carry_snp_when_forced(k: Kernel) -> None:
    t, _, _ = make_table("vtdss")
    t.map_pages(0, PHYS, SZ_4K, 1, IOMMU_WRITE, 0)
    t.map_pages(SZ_2M, 0x4000_0000, SZ_2M, 1, IOMMU_READ, 0)
    *tables, leaf = _entries(t, 0)
    assert all(e & 0xFFF == 0b11 for e in tables) and leaf == PHYS | 0b10
    assert _entries(t, SZ_2M)[-1] == 0x4000_0000 | 0x80 | 0b01
    info = vtdss.pt_iommu_vtdss_hw_info(t)
    assert (info.ssptptr, info.aw) == (t.top_table, 2)
    t.deinit()
    feats = BIT(PT_FEAT_FLUSH_RANGE) | BIT(vtdss.PT_FEAT_VTDSS_FORCE_COHERENCE)
    t, _, _ = make_table("vtdss", features=feats)
    t.map_pages(0, PHYS, SZ_4K, 1, RW, 0)
    assert _entries(t, 0)[-1] == PHYS | vtdss.VTDSS_FMT_SNP | 0b11
    t.deinit()


def test_a_nesting_parent_vtdss_table_refuses_read_only_mappings(k: Kernel) -> None:
    feats = BIT(PT_FEAT_FLUSH_RANGE) | BIT(vtdss.PT_FEAT_VTDSS_FORCE_WRITEABLE)
    t, _, _ = make_table("vtdss", features=feats)
    with pytest.raises(EINVAL):
        t.map_pages(0, PHYS, SZ_4K, 1, IOMMU_READ, 0)
    t.deinit()


@pytest.mark.parametrize(
    ("prot", "bits"),
    [
        (RW, 0b11 | 1 << 6 | 2 << 8 | 1 << 10 | 1 << 11),  # AP[1] SH=outer AF nG
        (IOMMU_READ, 0b11 | 3 << 6 | 2 << 8 | 1 << 10 | 1 << 11),  # + AP[2] read-only
        (RW | IOMMU_CACHE, 0b11 | 1 << 2 | 1 << 6 | 3 << 8 | 1 << 10 | 1 << 11),  # Attr 1, inner
        (RW | IOMMU_MMIO | IOMMU_NOEXEC, 0b11 | 2 << 2 | 1 << 6 | 2 << 8 | 3 << 10 | 1 << 54),
        (RW | IOMMU_PRIV, 0b11 | 2 << 8 | 1 << 10 | 1 << 11),  # AP[1] clear
    ],
)
def test_armv8_page_descriptors(k: Kernel, prot: int, bits: int) -> None:
    t, _, _ = make_table("armv8")
    t.map_pages(0, PHYS, SZ_4K, 1, prot, 0)
    *tables, leaf = _entries(t, 0)
    assert all(e & 0xFFF == 0b11 for e in tables) and len(tables) == 3
    assert leaf == PHYS | bits
    t.deinit()


def test_armv8_blocks_and_the_cd_fields(k: Kernel) -> None:
    dom = IommuDomain()
    t = armv8.pt_iommu_armv8_init(dom, armv8.PtIommuArmv8Cfg(PtIommuCfg(0, 40, 44)))
    t.map_pages(SZ_2M, 0x4000_0000, SZ_2M, 1, RW, 0)
    leaf = _entries(t, SZ_2M)[-1]
    assert leaf & 0b11 == 0b01 and leaf & armv8.ARMV8_PT_OA == 0x4000_0000
    info = armv8.pt_iommu_armv8_hw_info(t)
    assert (info.ttbr, info.tsz, info.ips) == (t.top_table, 24, 4)
    assert info.mair == 0xF4_04_FF_44
    assert dom.geometry.aperture_end == (1 << 40) - 1
    t.unmap_pages(SZ_2M, SZ_2M, 1, IommuIotlbGather())
    t.deinit()


def test_armv8_refuses_an_output_size_without_an_ips_encoding(k: Kernel) -> None:
    with pytest.raises(EINVAL):
        armv8.pt_iommu_armv8_init(IommuDomain(), armv8.PtIommuArmv8Cfg(PtIommuCfg(0, 48, 47)))


def test_amdv1_tables_name_the_next_level_and_leaves_are_natural_size(k: Kernel) -> None:
    t, _, _ = make_table("amdv1")
    t.map_pages(0, PHYS, SZ_4K, 1, IOMMU_READ, 0)
    t.map_pages(SZ_2M, 0x4000_0000, SZ_2M, 1, RW, 0)
    walk = t.walk(0)
    ir_iw = amdv1.AMDV1PT_FMT_IR | amdv1.AMDV1PT_FMT_IW
    for level, _, e in walk[:-1]:
        assert e & 1 and (e >> 9) & 7 == level and e & ir_iw == ir_iw
    assert walk[-1][2] == PHYS | 1 | amdv1.AMDV1PT_FMT_IR
    assert _entries(t, SZ_2M)[-1] == 0x4000_0000 | 1 | ir_iw  # NextLevel 0 at level 1
    info = amdv1.pt_iommu_amdv1_hw_info(t)
    assert (info.host_pt_root, info.mode) == (t.top_table, 4)
    t.deinit()


def test_amdv1_reads_a_next_level_7_run_as_a_leaf(k: Kernel) -> None:
    t, _, _ = make_table("amdv1")
    t.map_pages(0, PHYS, SZ_4K, 1, RW, 0)
    level, slot, _ = t.walk(0)[-1]
    # entry 1 of a 16 KiB run at 0x40000: OA bits 13:12 = 0b01 (one trailing 1 codes
    # 2^14), NextLevel 7; iova 0x1010 is 0x1010 into the run
    write64(slot + 8 + PAGE_OFFSET, 0x41000 | 7 << 9 | 1 | amdv1.AMDV1PT_FMT_IR)
    assert level == 0 and t.iova_to_phys(SZ_4K + 0x10) == 0x41010
    assert read64(slot + PAGE_OFFSET) & 1
    t.deinit()


def test_amdv1_starting_level_is_checked(k: Kernel) -> None:
    for level, vasz in ((0, 48), (6, 48), (3, 20)):
        cfg = amdv1.PtIommuAmdv1Cfg(PtIommuCfg(0, vasz, 52), starting_level=level)
        with pytest.raises(EINVAL):
            amdv1.pt_iommu_amdv1_init(IommuDomain(), cfg)
