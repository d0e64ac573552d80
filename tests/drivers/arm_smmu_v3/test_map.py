"""io-pgtable-arm LPAE stage-1 tables in RAM, and the TLB invalidation by ASID that
unmap and flush issue."""

from __future__ import annotations

import pytest

from drivers.arm_smmu_v3 import io_pgtable_arm as lpae
from drivers.arm_smmu_v3.domain import ArmSmmuDomain
from hw.smmuv3 import entries as ent
from kernel.boot import Kernel
from kernel.errno import EEXIST, ENOMEM
from kernel.fault_inject import injector
from kernel.iommu.iommu import iommu_domain_free, iommu_paging_domain_alloc
from kernel.iommu.iommu_h import (
    IOMMU_CACHE,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    iommu_flush_iotlb_all,
)
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_unmap
from tests.drivers.arm_smmu_v3.conftest import commands, edu
from tests.kernel.conftest import take_warnings

RW = IOMMU_READ | IOMMU_WRITE
SZ_4K, SZ_2M = 1 << 12, 1 << 21


def _domain() -> ArmSmmuDomain:
    dom = iommu_paging_domain_alloc(edu())
    assert isinstance(dom, ArmSmmuDomain) and dom.pgtbl_ops is not None
    return dom


def _leaf(dom: ArmSmmuDomain, iova: int) -> tuple[int, int]:
    assert dom.pgtbl_ops is not None
    lvl, _, pte = dom.pgtbl_ops.walk(iova)[-1]
    return lvl, pte


def test_a_4k_mapping_is_a_level_3_page_with_af_ng_and_unprivileged_access(k: Kernel) -> None:
    dom = _domain()
    iommu_map(dom, 0x1234_5000, 0x800000, SZ_4K, RW, 0)
    walk = dom.pgtbl_ops.walk(0x1234_5000)  # type: ignore[union-attr]
    assert [lvl for lvl, _, _ in walk] == [0, 1, 2, 3]
    assert all(pte & 3 == 3 for _, _, pte in walk[:3])  # table descriptors
    pte = _leaf(dom, 0x1234_5000)[1]
    leaf = ent.LpaeLeaf.decode(pte)
    bits = ("VALID", "TYPE", "AF", "NG", "AP1", "AP2")
    assert [leaf[b] for b in bits] == [1, 1, 1, 1, 1, 0]
    assert leaf["OA"] << 12 == 0x800000 and leaf["SH"] == 2 and leaf["ATTRINDX"] == 0
    assert iommu_iova_to_phys(dom, 0x1234_5678) == 0x800678
    iommu_unmap(dom, 0x1234_5000, SZ_4K)
    iommu_domain_free(dom)


def test_read_only_privileged_cacheable_mapping_bits(k: Kernel) -> None:
    dom = _domain()
    iommu_map(dom, 0x10000, 0x900000, SZ_4K, IOMMU_READ | IOMMU_PRIV | IOMMU_CACHE, 0)
    leaf = ent.LpaeLeaf.decode(_leaf(dom, 0x10000)[1])
    assert [leaf[b] for b in ("AP2", "AP1", "ATTRINDX", "SH")] == [1, 0, 1, 3]
    iommu_unmap(dom, 0x10000, SZ_4K)
    iommu_domain_free(dom)


def test_aligned_2m_is_a_level_2_block(k: Kernel) -> None:
    dom = _domain()
    iommu_map(dom, SZ_2M, 0x400000, SZ_2M, RW, 0)
    lvl, pte = _leaf(dom, SZ_2M + 0x1000)
    assert lvl == 2 and pte & 3 == lpae.ARM_LPAE_PTE_TYPE_BLOCK
    assert iommu_iova_to_phys(dom, SZ_2M + 0x1234) == 0x401234
    iommu_unmap(dom, SZ_2M, SZ_2M)
    iommu_domain_free(dom)


def test_unmap_sends_tlbi_nh_va_with_the_asid_per_page_and_one_sync(k: Kernel) -> None:
    dom = _domain()
    iommu_map(dom, 0x20000, 0x500000, 3 * SZ_4K, RW, 0)
    mark = len(commands(k))
    iommu_unmap(dom, 0x20000, 3 * SZ_4K)
    sent = commands(k)[mark:]
    assert [op for op, _, _ in sent] == ["TLBI_NH_VA"] * 3 + ["CMD_SYNC"]
    for i, (_, d0, d1) in enumerate(sent[:3]):
        assert ent.CmdTlbi0.ASID.get(d0) == dom.asid
        assert ent.CmdTlbiVa1.ADDR.get(d1) << 12 == 0x20000 + i * SZ_4K
        assert ent.CmdTlbiVa1.LEAF.get(d1) == 1
    iommu_domain_free(dom)


def test_flush_iotlb_all_is_one_tlbi_nh_asid(k: Kernel) -> None:
    dom = _domain()
    mark = len(commands(k))
    iommu_flush_iotlb_all(dom)
    assert [(op, ent.CmdTlbi0.ASID.get(d0)) for op, d0, _ in commands(k)[mark:]] == [
        ("TLBI_NH_ASID", dom.asid),
        ("CMD_SYNC", 0),
    ]
    iommu_domain_free(dom)


def test_unmapping_a_2m_range_of_pages_frees_the_table_and_flushes_the_walk(k: Kernel) -> None:
    dom = _domain()
    assert dom.pgtbl_ops is not None
    iommu_map(dom, 0, 0x600000, SZ_4K, RW, 0)
    iommu_map(dom, SZ_4K, 0x601000, SZ_4K, RW, 0)
    tables = dom.pgtbl_ops.tables
    mark = len(commands(k))
    assert iommu_unmap(dom, 0, SZ_2M) == SZ_2M
    assert dom.pgtbl_ops.tables == tables - 1
    ops = [op for op, _, d1 in commands(k)[mark:] if op != "TLBI_NH_VA" or not d1 & 1]
    assert ops.count("TLBI_NH_VA") == 512  # non-leaf walk invalidation, 4K granule
    iommu_domain_free(dom)


def test_a_block_replaces_an_empty_table(k: Kernel) -> None:
    dom = _domain()
    iommu_map(dom, 0, 0x600000, SZ_4K, RW, 0)
    iommu_unmap(dom, 0, SZ_4K)
    iommu_map(dom, 0, 0x600000, SZ_2M, RW, 0)
    assert _leaf(dom, 0)[0] == 2
    iommu_unmap(dom, 0, SZ_2M)
    iommu_domain_free(dom)


def test_double_map_warns_and_fails_with_eexist(k: Kernel) -> None:
    dom = _domain()
    iommu_map(dom, 0x30000, 0x700000, SZ_4K, RW, 0)
    with pytest.raises(EEXIST):
        iommu_map(dom, 0x30000, 0x710000, SZ_4K, RW, 0)
    assert take_warnings(k) == ["io-pgtable-arm: iova 0x30000 already mapped"]
    assert iommu_iova_to_phys(dom, 0x30000) == 0x700000
    iommu_unmap(dom, 0x30000, SZ_4K)
    iommu_domain_free(dom)


def test_partial_unmap_of_a_block_is_refused_with_a_warning(k: Kernel) -> None:
    dom = _domain()
    iommu_map(dom, 0, 0x400000, SZ_2M, RW, 0)
    assert iommu_unmap(dom, 0, SZ_4K) == 0
    assert take_warnings(k) == ["Unmap of a partial large IOPTE is not allowed"]
    iommu_unmap(dom, 0, SZ_2M)
    iommu_domain_free(dom)


def test_a_mapping_without_access_maps_nothing(k: Kernel) -> None:
    dom = _domain()
    with pytest.raises(ENOMEM):
        iommu_map(dom, 0, 0x400000, SZ_4K, 0, 0)
    assert iommu_iova_to_phys(dom, 0) == 0
    iommu_domain_free(dom)


def test_failure_midway_returns_what_was_mapped_and_the_core_unwinds(k: Kernel) -> None:
    dom = _domain()
    injector().arm(3, frozenset({"iommu_pgtable"}))
    with pytest.raises(ENOMEM):
        iommu_map(dom, 0x40000, 0x800000, 4 * SZ_4K, RW, 0)
    injector().disarm()
    assert all(iommu_iova_to_phys(dom, 0x40000 + i * SZ_4K) == 0 for i in range(4))
    iommu_domain_free(dom)


def test_freeing_a_domain_frees_its_tables_and_flushes_its_asid(k: Kernel) -> None:
    before = {(a.kind, a.addr) for a in k.mm.live()}
    dom = _domain()
    iommu_map(dom, 0x1_0000_0000, 0x400000, SZ_2M + SZ_4K, RW, 0)
    asid = dom.asid
    mark = len(commands(k))
    iommu_unmap(dom, 0x1_0000_0000, SZ_2M + SZ_4K)
    iommu_domain_free(dom)
    assert ("TLBI_NH_ASID", asid) in [
        (op, ent.CmdTlbi0.ASID.get(d0)) for op, d0, _ in commands(k)[mark:]
    ]
    assert {(a.kind, a.addr) for a in k.mm.live()} == before
