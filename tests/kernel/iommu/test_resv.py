"""Reserved regions in the IOMMU core: the group's merged list against an independent
interval-union reference, the sysfs text, direct mappings, ``require_direct``, and
dma-iommu keeping every region (and the PCI host-bridge window) out of the IOVA
allocator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.machine import MMIO_WINDOW_BASE, MMIO_WINDOW_END
from kernel.device import Device
from kernel.errno import EINVAL
from kernel.iommu.dma_iommu import _cookie
from kernel.iommu.iommu import (
    iommu_device_claim_dma_owner,
    iommu_device_release_dma_owner,
    iommu_get_dma_domain,
    iommu_get_domain_for_dev,
)
from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_unmap
from kernel.iommu.iommu_resv import (
    IOMMU_RESV_DIRECT,
    IOMMU_RESV_DIRECT_RELAXABLE,
    IOMMU_RESV_MSI,
    IOMMU_RESV_RESERVED,
    IOMMU_RESV_SW_MSI,
    IommuResvRegion,
    iommu_alloc_resv_region,
    iommu_get_group_resv_regions,
    iommu_group_show_resv_regions,
    iommu_insert_resv_region,
)
from kernel.iommu.iova import alloc_iova, find_iova, reserve_iova
from kernel.pci import PciDev
from tests.kernel.conftest import EDU_BDF, KernelFactory, pdev_at
from tests.kernel.iommu import mock_iommu

TYPES = [
    IOMMU_RESV_DIRECT,
    IOMMU_RESV_DIRECT_RELAXABLE,
    IOMMU_RESV_RESERVED,
    IOMMU_RESV_MSI,
    IOMMU_RESV_SW_MSI,
]


def _reference_merge(regions: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Per type, the union of the closed intervals with touching ones joined; the
    result sorted by start, then type."""
    out = []
    for t in TYPES:
        spans = sorted((s, e) for s, e, ty in regions if ty == t)
        merged: list[list[int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        out.extend((s, e, t) for s, e in merged)
    return sorted(out, key=lambda r: (r[0], r[2]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 64), st.integers(1, 16), st.sampled_from(TYPES)),
        max_size=12,
    )
)
def test_insert_merges_same_type_overlaps_like_an_interval_union(
    spec: list[tuple[int, int, int]],
) -> None:
    head: list[IommuResvRegion] = []
    for start, length, t in spec:
        iommu_insert_resv_region(iommu_alloc_resv_region(start, length, 0, t), head)
    got = [(r.start, r.end, r.type) for r in head]
    assert got == _reference_merge([(s, s + n - 1, t) for s, n, t in spec])


def test_insert_copies_the_region() -> None:
    head: list[IommuResvRegion] = []
    new = iommu_alloc_resv_region(0x1000, 0x1000, 0, IOMMU_RESV_MSI)
    iommu_insert_resv_region(new, head)
    iommu_insert_resv_region(iommu_alloc_resv_region(0x2000, 0x1000, 0, IOMMU_RESV_MSI), head)
    assert new.length == 0x1000 and head[0] is not new and head[0].length == 0x2000


# --------------------------------------------------------------------------- booted (mock IOMMU)

RMRR = (0x30_0000, 0x2_0000)
RELAX = (0x50_0000, 0x1000)
MSIWIN = (0x60_0000, 0x10_0000)


def _regions(dev: Device, head: list[IommuResvRegion]) -> None:
    if not isinstance(dev, PciDev) or str(dev.addr) != EDU_BDF:
        return
    rw = IOMMU_READ | IOMMU_WRITE
    head.append(iommu_alloc_resv_region(*RMRR, rw, IOMMU_RESV_DIRECT))
    head.append(iommu_alloc_resv_region(*RELAX, rw, IOMMU_RESV_DIRECT_RELAXABLE))
    head.append(iommu_alloc_resv_region(*MSIWIN, 0, IOMMU_RESV_MSI))


@pytest.fixture
def resv_ops(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The mock driver reports an RMRR-like DIRECT region, a relaxable one and an MSI
    window for the edu device. The mock WARNs about a domain freed with mappings
    left (an iommufd-style invariant Linux does not have for direct mappings), so
    the direct mappings are removed before the kernel shuts down."""

    def get_resv_regions(dev: Device, head: list[IommuResvRegion]) -> None:
        _regions(dev, head)

    monkeypatch.setattr(mock_iommu._OPS, "get_resv_regions", get_resv_regions, raising=False)
    yield
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_dma_domain(dev)
    if dom is not None:
        for start, length in (RMRR, RELAX):
            iommu_unmap(dom, start, length)


def test_group_lists_merged_regions_in_sysfs_format(
    make_kernel: KernelFactory, resv_ops: None
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    assert dev.iommu_group is not None
    assert iommu_group_show_resv_regions(dev.iommu_group) == (
        "0x0000000000300000 0x000000000031ffff direct\n"
        "0x0000000000500000 0x0000000000500fff direct-relaxable\n"
        "0x0000000000600000 0x00000000006fffff msi\n"
    )
    head: list[IommuResvRegion] = []
    iommu_get_group_resv_regions(dev.iommu_group, head)
    assert [r.type for r in head] == [
        IOMMU_RESV_DIRECT,
        IOMMU_RESV_DIRECT_RELAXABLE,
        IOMMU_RESV_MSI,
    ]


def test_direct_regions_are_identity_mapped_and_kept_out_of_the_iova_space(
    make_kernel: KernelFactory, resv_ops: None
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    for start, length in (RMRR, RELAX):
        for page in range(start, start + length, 0x1000):
            assert iommu_iova_to_phys(dom, page) == page
    assert iommu_iova_to_phys(dom, MSIWIN[0]) == 0  # MSI: reserved, never mapped
    iovad = _cookie(dom).iovad
    assert iovad is not None
    for start, length in (
        RMRR,
        RELAX,
        MSIWIN,
        (MMIO_WINDOW_BASE, MMIO_WINDOW_END - MMIO_WINDOW_BASE),
    ):
        for addr in (start, start + length - 1):
            assert find_iova(iovad, addr >> 12) is not None, hex(addr)
    assert iovad.live_ranges() == 0  # reservations are not allocations


def test_a_device_with_a_direct_region_refuses_the_blocking_domain(
    make_kernel: KernelFactory, resv_ops: None
) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    assert dev.iommu is not None and dev.iommu.require_direct
    with pytest.raises(EINVAL):
        iommu_device_claim_dma_owner(dev, object())
    assert "Firmware has requested this device have a 1:1 IOMMU mapping" in k.dmesg()


def test_relaxable_regions_alone_do_not_require_direct(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def get_resv_regions(dev: Device, head: list[IommuResvRegion]) -> None:
        if isinstance(dev, PciDev) and str(dev.addr) == EDU_BDF:
            head.append(iommu_alloc_resv_region(*RELAX, IOMMU_READ, IOMMU_RESV_DIRECT_RELAXABLE))

    monkeypatch.setattr(mock_iommu._OPS, "get_resv_regions", get_resv_regions, raising=False)
    make_kernel()
    dev = pdev_at(EDU_BDF)
    assert dev.iommu is not None and not dev.iommu.require_direct
    owner = object()
    iommu_device_claim_dma_owner(dev, owner)
    iommu_device_release_dma_owner(dev)
    dom = iommu_get_dma_domain(dev)
    assert dom is not None and iommu_iova_to_phys(dom, RELAX[0]) == RELAX[0]
    iommu_unmap(dom, *RELAX)


# --------------------------------------------------------------------------- reserve_iova


def test_reserve_iova_merges_into_overlapping_ranges() -> None:
    from kernel.iommu.iova import init_iova_domain

    iovad = init_iova_domain(0x1000, 1)
    assert reserve_iova(iovad, 10, 20)
    assert reserve_iova(iovad, 15, 30)  # overlaps: extends above
    assert reserve_iova(iovad, 5, 12)  # overlaps below: the range grows down
    assert reserve_iova(iovad, 12, 14)  # inside: nothing new
    ranges = [(lo, hi) for lo, hi in iovad.tree.items() if lo != (1 << 64) - 1]
    covered = set()
    for lo, hi in ranges:
        covered |= set(range(lo, hi + 1))
    assert covered == set(range(5, 31))
    assert iovad.live_ranges() == 0
    # every free pfn up to 40 is handed out once, none in the reservation, then none
    got = [alloc_iova(iovad, 1, 40, False) for _ in range(14)]
    assert sorted(got) == [1, 2, 3, 4, *range(31, 41)]
    assert alloc_iova(iovad, 1, 40, False) == 0


def test_reserve_iova_refuses_pfns_beyond_the_address_space(make_kernel: KernelFactory) -> None:
    from kernel.iommu.iova import init_iova_domain
    from tests.kernel.conftest import take_warnings

    k = make_kernel()
    iovad = init_iova_domain(0x1000, 1)
    assert not reserve_iova(iovad, 1 << 60, 1 << 60)
    assert any("reserve_iova" in w for w in take_warnings(k))
