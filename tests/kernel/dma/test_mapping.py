"""The DMA mapping API over dma-direct and dma-iommu: page and sg-table mappings,
syncs, coherent allocations, masks and segment parameters, and failure paths."""

from __future__ import annotations

import pytest

from kernel.boot import Kernel
from kernel.dma.debug import dma_debug_state
from kernel.dma.direct import dma_direct_supported
from kernel.dma.direction import (
    DMA_BIDIRECTIONAL,
    DMA_BIT_MASK,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
)
from kernel.dma.mapping import (
    dma_alloc_coherent,
    dma_dir_name,
    dma_free_coherent,
    dma_get_mask,
    dma_get_max_seg_size,
    dma_get_seg_boundary,
    dma_map_page,
    dma_map_sg,
    dma_map_sgtable,
    dma_map_single_attrs,
    dma_mapping_error,
    dma_set_coherent_mask,
    dma_set_mask,
    dma_set_mask_and_coherent,
    dma_set_seg_boundary,
    dma_supported,
    dma_sync_sg_for_device,
    dma_sync_single_range_for_cpu,
    dma_sync_single_range_for_device,
    dma_unmap_page,
    dma_unmap_sg,
    dma_unmap_sgtable,
    dma_unmap_single_attrs,
)
from kernel.dma.scatterlist import (
    sg_alloc_table,
    sg_dma_address,
    sg_dma_len,
    sg_init_one,
    sg_set_buf,
)
from kernel.errno import EIO, ENOMEM
from kernel.fault_inject import injector
from kernel.iommu.dma_iommu import iommu_dma_live_iovas
from kernel.mm import GFP_KERNEL, PAGE_OFFSET, Page, virt_to_page
from kernel.pci import PciDev
from tests.kernel.conftest import EDU_BDF, KernelFactory, pdev_at, scratch_buffer, take_warnings

SZ_4K = 1 << 12


@pytest.fixture(params=[False, True], ids=["direct", "iommu"])
def booted(request: pytest.FixtureRequest, make_kernel: KernelFactory) -> tuple[Kernel, PciDev]:
    k = make_kernel(iommu=request.param)
    return k, pdev_at(EDU_BDF)


def _buf(size: int = 256) -> int:
    return scratch_buffer(size)


def test_page_mapping_round_trip_is_clean(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    buf = _buf(4096)
    h = dma_map_page(dev, virt_to_page(buf), 0x100, 512, DMA_FROM_DEVICE)
    assert not dma_mapping_error(dev, h) and h & 0xFFF == (buf + 0x100) & 0xFFF
    dma_sync_single_range_for_cpu(dev, h, 0x80, 0x100, DMA_FROM_DEVICE)
    dma_sync_single_range_for_device(dev, h, 0x80, 0x100, DMA_FROM_DEVICE)
    dma_unmap_page(dev, h, 512, DMA_FROM_DEVICE)
    h = dma_map_single_attrs(dev, buf, 64, DMA_TO_DEVICE, 0)
    dma_mapping_error(dev, h)
    dma_unmap_single_attrs(dev, h, 64, DMA_TO_DEVICE, 0)
    assert dma_debug_state().error_count == 0 and not k.warnings()


def test_sgtable_mapping_fills_dma_addresses_and_unmap_clears_them(
    booted: tuple[Kernel, PciDev],
) -> None:
    k, dev = booted
    sgt = sg_alloc_table(2)
    for sg in sgt.sgl:
        sg_set_buf(sg, _buf(1024), 1024)
    dma_map_sgtable(dev, sgt, DMA_TO_DEVICE)
    assert sgt.nents == 2 and all(sg_dma_len(sg) == 1024 for sg in sgt.sgl)
    assert len({sg_dma_address(sg) for sg in sgt.sgl}) == 2
    dma_sync_sg_for_device(dev, sgt.sgl, 2, DMA_TO_DEVICE)
    dma_unmap_sgtable(dev, sgt, DMA_TO_DEVICE)
    assert all(sg_dma_len(sg) == 0 and sg_dma_address(sg) == 0 for sg in sgt.sgl)
    assert dma_debug_state().error_count == 0 and not k.warnings()


def test_sg_init_one_describes_one_buffer(booted: tuple[Kernel, PciDev]) -> None:
    _k, dev = booted
    buf = _buf(300)
    (sg,) = sgl = sg_init_one(buf, 300)
    assert sg.length == 300 and sg.phys == buf - PAGE_OFFSET
    assert dma_map_sg(dev, sgl, 1, DMA_BIDIRECTIONAL) == 1
    dma_unmap_sg(dev, sgl, 1, DMA_BIDIRECTIONAL)


def test_sg_mapping_refuses_bad_counts_and_empty_segments(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    sgl = sg_init_one(_buf(), 256)
    assert dma_map_sg(dev, sgl, 0, DMA_TO_DEVICE) == 0
    assert dma_map_sg(dev, sgl, 2, DMA_TO_DEVICE) == 0
    sgl[0].length = 0
    assert dma_map_sg(dev, sgl, 1, DMA_TO_DEVICE) == 0
    assert take_warnings(k) == ["DMA-API: mapping of size 0"]
    sgt = sg_alloc_table(0)
    with pytest.raises(ENOMEM):
        dma_map_sgtable(dev, sgt, DMA_TO_DEVICE)


def test_device_without_dma_mask_cannot_map(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    dev.dma_mask = 0
    assert dma_map_page(dev, virt_to_page(_buf()), 0, 64, DMA_TO_DEVICE) == DMA_MAPPING_ERROR
    assert dma_map_sg(dev, sg_init_one(_buf(), 64), 1, DMA_TO_DEVICE) == 0
    with pytest.raises(EIO):
        dma_set_mask(dev, DMA_BIT_MASK(32))
    assert len(take_warnings(k)) == 2  # one WARN_ON_ONCE per call site
    dev.coherent_dma_mask = 0
    assert dma_alloc_coherent(dev, SZ_4K, GFP_KERNEL) == (None, DMA_MAPPING_ERROR)
    assert len(take_warnings(k)) == 1


def test_coherent_allocation_of_size_0_fails(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    assert dma_alloc_coherent(dev, 0, GFP_KERNEL) == (None, DMA_MAPPING_ERROR)
    assert take_warnings(k) == ["DMA-API: mapping of size 0"]


def test_coherent_allocation_out_of_memory_fails(booted: tuple[Kernel, PciDev]) -> None:
    _k, dev = booted
    injector().arm(1, frozenset({"alloc_pages"}))
    try:
        assert dma_alloc_coherent(dev, SZ_4K, GFP_KERNEL) == (None, DMA_MAPPING_ERROR)
    finally:
        injector().disarm()


def test_free_of_a_failed_coherent_allocation_is_a_no_op(booted: tuple[Kernel, PciDev]) -> None:
    """Linux ``dma_free_attrs`` returns on a NULL ``cpu_addr`` before DMA-API debugging
    sees the call: no WARN, no DMA-API error (the teardown check would report one)."""
    k, dev = booted
    dma_free_coherent(dev, SZ_4K, None, DMA_MAPPING_ERROR)
    assert take_warnings(k) == []


def test_seg_parameters_default_to_64k_and_no_boundary(booted: tuple[Kernel, PciDev]) -> None:
    _k, dev = booted
    assert dma_get_max_seg_size(dev) == 1 << 16
    assert dma_get_seg_boundary(dev) == (1 << 64) - 1
    dma_set_seg_boundary(dev, DMA_BIT_MASK(32))
    assert dma_get_seg_boundary(dev) == DMA_BIT_MASK(32)


def test_direction_names() -> None:
    assert [dma_dir_name(d) for d in (DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE)] == [
        "DMA_BIDIRECTIONAL",
        "DMA_TO_DEVICE",
        "DMA_FROM_DEVICE",
    ]


# --------------------------------------------------------------------------- masks


def test_behind_an_iommu_any_mask_is_supported(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    assert dma_supported(dev, DMA_BIT_MASK(12))
    dma_set_mask_and_coherent(dev, DMA_BIT_MASK(20))
    assert dma_get_mask(dev) == DMA_BIT_MASK(20) and dev.coherent_dma_mask == DMA_BIT_MASK(20)


def test_dma_direct_needs_a_mask_reaching_zone_dma(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    assert dma_direct_supported(dev, DMA_BIT_MASK(24))
    assert not dma_direct_supported(dev, DMA_BIT_MASK(23))
    with pytest.raises(EIO):
        dma_set_coherent_mask(dev, DMA_BIT_MASK(16))
    assert dev.coherent_dma_mask == DMA_BIT_MASK(32)
    dev.dma_mask = 0
    assert dma_get_mask(dev) == DMA_BIT_MASK(32)


# --------------------------------------------------------------------------- dma-direct limits


def test_direct_mapping_beyond_the_mask_fails_with_the_overflow_warning(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    dma_set_mask(dev, DMA_BIT_MASK(24))
    high = Page((32 << 20) >> 12)  # 32 MiB: above the 24-bit mask
    h = dma_map_page(dev, high, 0, 64, DMA_TO_DEVICE)
    assert dma_mapping_error(dev, h)
    (msg,) = take_warnings(k)
    assert msg == (
        "pci 0000:00:03.0: DMA addr 0x0000000002000000+64 overflow (mask ffffff, bus limit 0)."
    )
    sgl = sg_init_one(_buf(), 64)
    sgl.append(sgl[0].__class__(page=high, offset=0, length=64))
    assert dma_map_sg(dev, sgl, 2, DMA_TO_DEVICE) == 0
    assert sgl[0].dma_length == 0 and sgl[1].dma_length == 0


def test_direct_coherent_allocation_above_the_coherent_mask_fails(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    before = {(a.kind, a.addr) for a in k.mm.live()}
    dev.coherent_dma_mask = DMA_BIT_MASK(12)  # below every page the allocator hands out
    assert dma_alloc_coherent(dev, SZ_4K, GFP_KERNEL) == (None, DMA_MAPPING_ERROR)
    assert {(a.kind, a.addr) for a in k.mm.live()} == before


# --------------------------------------------------------------------------- dma-iommu limits


def test_iommu_coherent_allocation_without_iova_frees_its_pages(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    before = {(a.kind, a.addr) for a in k.mm.live()}
    injector().arm(1, frozenset({"iommu_pgtable"}))
    try:
        assert dma_alloc_coherent(dev, SZ_4K, GFP_KERNEL) == (None, DMA_MAPPING_ERROR)
    finally:
        injector().disarm()
    assert {(a.kind, a.addr) for a in k.mm.live()} == before
    assert iommu_dma_live_iovas(dev) == 0


def test_iommu_sg_mapping_failure_returns_0(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    sgl = sg_init_one(_buf(), 64)
    injector().arm(1, frozenset({"iommu_pgtable"}))
    try:
        assert dma_map_sg(dev, sgl, 1, DMA_TO_DEVICE) == 0
    finally:
        injector().disarm()
    assert sgl[0].dma_length == 0 and iommu_dma_live_iovas(dev) == 0
