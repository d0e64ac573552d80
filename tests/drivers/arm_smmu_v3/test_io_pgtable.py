"""io-pgtable-arm corner cases, called as the SMMU driver calls them."""

from __future__ import annotations

import pytest

from drivers.arm_smmu_v3 import io_pgtable_arm as lpae
from drivers.arm_smmu_v3.debugfs import _render
from drivers.arm_smmu_v3.domain import ArmSmmuDomain
from kernel.boot import Kernel
from kernel.errno import EEXIST, EINVAL, ENOMEM, ERANGE
from kernel.fault_inject import injector
from kernel.iommu.iommu import iommu_domain_free, iommu_paging_domain_alloc
from kernel.iommu.iommu_h import IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE, IommuIotlbGather
from tests.drivers.arm_smmu_v3.conftest import Boot, edu
from tests.kernel.conftest import take_warnings

RW = IOMMU_READ | IOMMU_WRITE


def _ops() -> tuple[ArmSmmuDomain, lpae.ArmLpaeIoPgtable]:
    dom = iommu_paging_domain_alloc(edu())
    assert isinstance(dom, ArmSmmuDomain) and dom.pgtbl_ops is not None
    return dom, dom.pgtbl_ops


def test_mmio_and_noexec_mappings_use_the_device_attribute_and_xn(k: Kernel) -> None:
    dom, ops = _ops()
    ops.map_pages(0x1000, 0x200000, 0x1000, 1, RW | IOMMU_MMIO | IOMMU_NOEXEC, 0)
    pte = ops.walk(0x1000)[-1][2]
    assert (pte >> 2) & 7 == lpae.ARM_LPAE_MAIR_ATTR_IDX_DEV and pte & lpae.ARM_LPAE_PTE_XN
    assert ops.unmap_pages(0x1000, 0x1000, 1, None) == 0x1000
    iommu_domain_free(dom)


def test_bad_page_size_or_range_is_refused_with_a_warning(k: Kernel) -> None:
    dom, ops = _ops()
    with pytest.raises(EINVAL):
        ops.map_pages(0, 0, 0x3000, 1, RW, 0)
    with pytest.raises(ERANGE):
        ops.map_pages(1 << 48, 0, 0x1000, 1, RW, 0)
    assert ops.unmap_pages(0, 0x3000, 1, None) == 0
    assert ops.unmap_pages(1 << 48, 0x1000, 1, None) == 0
    assert ops.unmap_pages(0x5000, 0x1000, 1, None) == 0  # nothing mapped there
    assert len(take_warnings(k)) == 5
    assert ops.iova_to_phys(1 << 48) == 0
    iommu_domain_free(dom)


def test_a_page_under_a_block_is_eexist(k: Kernel) -> None:
    dom, ops = _ops()
    ops.map_pages(0, 0x400000, 1 << 21, 1, RW, 0)
    with pytest.raises(EEXIST):
        ops.map_pages(0x1000, 0x500000, 0x1000, 1, RW, 0)
    assert take_warnings(k) == ["io-pgtable-arm: iova 0x1000 is mapped by a block; unmap it first"]
    ops.unmap_pages(0, 1 << 21, 1, IommuIotlbGather())
    iommu_domain_free(dom)


def test_no_memory_for_a_table_fails_the_map(k: Kernel) -> None:
    dom, ops = _ops()
    injector().arm(1, frozenset({"alloc_pages"}))
    with pytest.raises(ENOMEM):
        ops.map_pages(0x4000_0000, 0x400000, 0x1000, 1, RW, 0)
    injector().disarm()
    iommu_domain_free(dom)


def test_unsupported_formats_and_sizes_get_no_tables(k: Kernel) -> None:
    dom, _ = _ops()
    cfg = lpae.IoPgtableCfg(pgsize_bitmap=0x1000, ias=48, oas=48, tlb=dom)
    assert lpae.alloc_io_pgtable_ops("ARM_32_LPAE_S1", cfg) is None
    cfg.ias = 52
    assert lpae.alloc_io_pgtable_ops(lpae.ARM_64_LPAE_S1, cfg) is None
    lpae.free_io_pgtable_ops(None)
    iommu_domain_free(dom)


def test_a_smaller_input_size_starts_the_walk_lower(k: Kernel) -> None:
    dom, _ = _ops()
    cfg = lpae.IoPgtableCfg(pgsize_bitmap=0x1000, ias=39, oas=48, tlb=dom)
    ops = lpae.alloc_io_pgtable_ops(lpae.ARM_64_LPAE_S1, cfg)
    assert ops is not None and ops.start_level == 1 and cfg.tcr.tsz == 25
    ops.map_pages(0x7F_FFFF_F000, 0x300000, 0x1000, 1, RW, 0)
    assert ops.iova_to_phys(0x7F_FFFF_F123) == 0x300123
    ops.unmap_pages(0x7F_FFFF_F000, 0x1000, 1, None)
    lpae.free_io_pgtable_ops(ops)
    iommu_domain_free(dom)


def test_dump_without_smmus_says_so(smmu_boot: Boot) -> None:
    k = smmu_boot()
    k.shutdown()
    assert _render(None) == "no arm-smmu-v3 units"  # type: ignore[arg-type]


def test_dump_of_a_linear_cd_table(smmu_boot: Boot) -> None:
    smmu_boot(smmu_config={"cd2l": False})
    assert "CD[0]: asid=" in _render(None)  # type: ignore[arg-type]
