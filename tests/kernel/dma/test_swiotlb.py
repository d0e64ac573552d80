"""swiotlb: bounce buffering for a device whose mask cannot reach the buffer (a
24-bit edu on 64 MiB of RAM stands in for a 32-bit device on a machine with RAM
above 4 GiB), the copies at map / sync / unmap, what a driver that forgets a sync
sees, ``swiotlb=`` sizing and exhaustion, forced bouncing, and dma-iommu's
sub-page bouncing for an untrusted device behind an external-facing port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kernel.boot import Kernel
from kernel.device import dev_get_drvdata
from kernel.dma.debug import dma_debug_state
from kernel.dma.direction import (
    DMA_BIDIRECTIONAL,
    DMA_BIT_MASK,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
)
from kernel.dma.iova_api import DmaIovaState, dma_iova_try_alloc
from kernel.dma.mapping import (
    SIZE_MAX,
    dma_map_sg,
    dma_map_single,
    dma_mapping_error,
    dma_max_mapping_size,
    dma_need_sync,
    dma_set_mask_and_coherent,
    dma_sync_sg_for_cpu,
    dma_sync_sg_for_device,
    dma_sync_single_for_cpu,
    dma_sync_single_for_device,
    dma_unmap_sg,
    dma_unmap_single,
)
from kernel.dma.scatterlist import sg_init_table, sg_set_buf
from kernel.dma.swiotlb import (
    IO_TLB_SEGSIZE,
    IO_TLB_SIZE,
    io_tlb_default_mem,
    swiotlb_used,
)
from kernel.fault_inject import injector
from kernel.iommu.dma_iommu import iommu_dma_live_iovas
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.mm import (
    PAGE_OFFSET,
    PAGE_SIZE,
    alloc_pages_exact,
    free_pages_exact,
    memory_read,
    memory_write,
    virt_to_phys,
)
from kernel.pci import PciDev, pci_register_driver, pci_unregister_driver
from tests.kernel.conftest import EDU_BDF, KernelFactory, pdev_at, take_warnings
from tests.kernel.edu_driver import Edu, edu_dma, edu_driver

EDU_BUF = 0x40000
SZ_16M = 16 << 20


class HighMem:
    """Buffers above 16 MiB (out of a 24-bit device's reach), freed at the end."""

    def __init__(self) -> None:
        self.fillers: list[int] = []
        self.bufs: list[tuple[int, int]] = []

    def alloc(self, size: int) -> int:
        while True:
            v = alloc_pages_exact(max(size, 1 << 20), 0)
            assert v is not None
            if v - PAGE_OFFSET >= SZ_16M:
                self.bufs.append((v, max(size, 1 << 20)))
                return v
            self.fillers.append(v)

    def free(self) -> None:
        for v in self.fillers:
            free_pages_exact(v, 1 << 20)
        for v, n in self.bufs:
            free_pages_exact(v, n)


@pytest.fixture
def high() -> Iterator[HighMem]:
    h = HighMem()
    yield h
    h.free()


def _edu(k: Kernel, mask_bits: int = 24) -> tuple[PciDev, Edu]:
    pci_register_driver(edu_driver)
    dev = pdev_at(EDU_BDF)
    dma_set_mask_and_coherent(dev, DMA_BIT_MASK(mask_bits))
    edu = dev_get_drvdata(dev)
    assert isinstance(edu, Edu)
    return dev, edu


PATTERN = bytes(range(256))


def test_narrow_device_gets_a_bounce_buffer_and_the_bytes_arrive_with_syncs(
    make_kernel: KernelFactory, high: HighMem
) -> None:
    k = make_kernel("swiotlb=2048", iommu=False)
    mem = io_tlb_default_mem()
    assert mem is not None and mem.nslabs == 2048 and mem.end <= SZ_16M
    dev, edu = _edu(k)
    src, dst = high.alloc(4096), high.alloc(4096)
    memory_write(src, PATTERN)
    memory_write(dst, b"\xee" * 256)
    hs = dma_map_single(dev, src, 256, DMA_TO_DEVICE)
    hd = dma_map_single(dev, dst, 256, DMA_FROM_DEVICE)
    assert not dma_mapping_error(dev, hs) and not dma_mapping_error(dev, hd)
    assert mem.start <= hs < mem.end and mem.start <= hd < mem.end
    assert hs + 256 <= DMA_BIT_MASK(24) and swiotlb_used(dev) == 2
    assert dma_need_sync(dev, hs) and dma_need_sync(dev, hd)
    assert edu_dma(edu, hs, EDU_BUF, 256, to_ram=False)  # device reads the bounce copy
    assert edu_dma(edu, EDU_BUF, hd, 256, to_ram=True)  # and writes into a bounce slot
    assert memory_read(dst, 256) == b"\xee" * 256  # not yet the driver's buffer
    dma_sync_single_for_cpu(dev, hd, 256, DMA_FROM_DEVICE)
    assert memory_read(dst, 256) == PATTERN
    dma_unmap_single(dev, hs, 256, DMA_TO_DEVICE)
    dma_unmap_single(dev, hd, 256, DMA_FROM_DEVICE)
    assert swiotlb_used(dev) == 0 and dma_debug_state().error_count == 0
    pci_unregister_driver(edu_driver)


def test_driver_that_forgets_sync_for_cpu_reads_stale_bytes(
    make_kernel: KernelFactory, high: HighMem
) -> None:
    k = make_kernel("swiotlb=512", iommu=False)
    dev, edu = _edu(k)
    src, dst = high.alloc(4096), high.alloc(4096)
    memory_write(src, PATTERN)
    memory_write(dst, bytes(256))
    hs = dma_map_single(dev, src, 256, DMA_TO_DEVICE)
    dma_mapping_error(dev, hs)
    hd = dma_map_single(dev, dst, 256, DMA_BIDIRECTIONAL)
    dma_mapping_error(dev, hd)
    assert edu_dma(edu, hs, EDU_BUF, 256, to_ram=False)
    assert edu_dma(edu, EDU_BUF, hd, 256, to_ram=True)
    # the buggy driver: reads while the mapping is live, without a sync
    assert memory_read(dst, 256) == bytes(256)
    # the CPU writes a reply and hands it to the device without sync_for_device:
    memory_write(dst, b"\x55" * 256)
    assert edu_dma(edu, hd, EDU_BUF, 256, to_ram=False)
    assert edu_dma(edu, EDU_BUF, hs, 256, to_ram=True)
    assert memory_read(PAGE_OFFSET + hs, 256) == PATTERN  # the device saw the old bytes
    dma_sync_single_for_device(dev, hd, 256, DMA_BIDIRECTIONAL)
    assert memory_read(PAGE_OFFSET + hd, 256) == b"\x55" * 256
    dma_unmap_single(dev, hs, 256, DMA_TO_DEVICE)
    dma_unmap_single(dev, hd, 256, DMA_BIDIRECTIONAL)
    assert memory_read(dst, 256) == b"\x55" * 256  # unmap copied the bounce back
    pci_unregister_driver(edu_driver)


def test_sg_entries_bounce_and_sync(make_kernel: KernelFactory, high: HighMem) -> None:
    k = make_kernel("swiotlb=512", iommu=False)
    dev, edu = _edu(k)
    bufs = [high.alloc(4096) for _ in range(3)]
    sgl = sg_init_table(3)
    for sg, b in zip(sgl, bufs, strict=True):
        memory_write(b, b"\x00" * 64)
        sg_set_buf(sg, b, 64)
    assert dma_map_sg(dev, sgl, 3, DMA_FROM_DEVICE) == 3
    for i, sg in enumerate(sgl):
        assert sg.dma_address != virt_to_phys(bufs[i]) and sg.dma_address < SZ_16M
        memory_write(PAGE_OFFSET + sg.dma_address, bytes([i + 1]) * 64)  # the device wrote
    dma_sync_sg_for_cpu(dev, sgl, 3, DMA_FROM_DEVICE)
    assert [memory_read(b, 1)[0] for b in bufs] == [1, 2, 3]
    dma_sync_sg_for_device(dev, sgl, 3, DMA_FROM_DEVICE)
    dma_unmap_sg(dev, sgl, 3, DMA_FROM_DEVICE)
    assert swiotlb_used(dev) == 0
    del edu
    pci_unregister_driver(edu_driver)


def test_pool_exhaustion_and_the_segment_limit(make_kernel: KernelFactory, high: HighMem) -> None:
    k = make_kernel("swiotlb=128", iommu=False)
    dev, _ = _edu(k)
    seg = IO_TLB_SIZE * IO_TLB_SEGSIZE
    assert dma_max_mapping_size(dev) == seg
    a, b = high.alloc(seg), high.alloc(seg)
    h1 = dma_map_single(dev, a, 200 << 10, DMA_TO_DEVICE)
    assert not dma_mapping_error(dev, h1)
    h2 = dma_map_single(dev, b, 200 << 10, DMA_TO_DEVICE)
    assert dma_mapping_error(dev, h2) == -12
    assert "swiotlb buffer is full (sz: 204800 bytes), total 128 (slots), used 100" in k.dmesg()
    assert dma_map_single(dev, b, seg + 1, DMA_TO_DEVICE) == DMA_MAPPING_ERROR
    dma_unmap_single(dev, h1, 200 << 10, DMA_TO_DEVICE)
    assert swiotlb_used(dev) == 0 and not dma_debug_state().entries
    pci_unregister_driver(edu_driver)


def test_without_a_pool_an_unreachable_buffer_is_refused(
    make_kernel: KernelFactory, high: HighMem
) -> None:
    k = make_kernel(iommu=False)
    assert io_tlb_default_mem() is None
    dev, _ = _edu(k)
    assert dma_max_mapping_size(dev) == SIZE_MAX
    h = dma_map_single(dev, high.alloc(4096), 64, DMA_TO_DEVICE)
    assert h == DMA_MAPPING_ERROR
    assert "overflow (mask ffffff, bus limit 0)" in take_warnings(k)[0]
    pci_unregister_driver(edu_driver)


def test_swiotlb_force_bounces_even_reachable_buffers(make_kernel: KernelFactory) -> None:
    k = make_kernel("swiotlb=256,force", iommu=False)
    dev, _ = _edu(k, 32)
    buf = alloc_pages_exact(4096, 0)
    assert buf is not None
    h = dma_map_single(dev, buf, 100, DMA_TO_DEVICE)
    mem = io_tlb_default_mem()
    assert mem is not None and mem.start <= h < mem.end
    assert not dma_need_sync(dev, virt_to_phys(buf))
    dma_mapping_error(dev, h)
    dma_unmap_single(dev, h, 100, DMA_TO_DEVICE)
    free_pages_exact(buf, 4096)
    pci_unregister_driver(edu_driver)


def test_untrusted_device_behind_the_iommu_sees_only_its_bytes(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel(
        devices=[{"kind": "edu", "bdf": EDU_BDF, "external": True}], ram="64M", iommu=True
    )
    assert io_tlb_default_mem() is not None
    dev = pdev_at(EDU_BDF)
    assert dev.untrusted and dev.dma_iommu
    page = alloc_pages_exact(PAGE_SIZE, 0)
    assert page is not None
    memory_write(page, b"S" * PAGE_SIZE)  # secrets sharing the page
    memory_write(page + 0x100, PATTERN)
    h = dma_map_single(dev, page + 0x100, 256, DMA_TO_DEVICE)
    assert not dma_mapping_error(dev, h)
    assert dma_need_sync(dev, h) and dma_max_mapping_size(dev) == IO_TLB_SIZE * IO_TLB_SEGSIZE
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    seen_phys = iommu_iova_to_phys(dom, h & ~0xFFF)
    assert seen_phys != virt_to_phys(page)
    device_view = memory_read(PAGE_OFFSET + seen_phys, PAGE_SIZE)
    assert device_view == PATTERN + bytes(PAGE_SIZE - 256)  # no "S" anywhere
    memory_write(PAGE_OFFSET + iommu_iova_to_phys(dom, h), b"x")  # device write is ignored
    dma_unmap_single(dev, h, 256, DMA_TO_DEVICE)
    assert memory_read(page + 0x100, 256) == PATTERN and swiotlb_used(dev) == 0
    assert iommu_dma_live_iovas(dev) == 0
    # a whole, aligned page is not bounced: the device maps it directly
    h = dma_map_single(dev, page, PAGE_SIZE, DMA_FROM_DEVICE)
    assert not dma_mapping_error(dev, h)
    assert iommu_iova_to_phys(dom, h) == virt_to_phys(page) and swiotlb_used(dev) == 0
    dma_sync_single_for_cpu(dev, h, PAGE_SIZE, DMA_FROM_DEVICE)
    dma_unmap_single(dev, h, PAGE_SIZE, DMA_FROM_DEVICE)
    free_pages_exact(page, PAGE_SIZE)
    assert not k.warnings()


def test_untrusted_from_device_bounce_copies_back_on_sync(make_kernel: KernelFactory) -> None:
    make_kernel(devices=[{"kind": "edu", "bdf": EDU_BDF, "external": True}], ram="64M", iommu=True)
    dev = pdev_at(EDU_BDF)
    buf = alloc_pages_exact(PAGE_SIZE, 0)
    assert buf is not None
    memory_write(buf, b"\x01" * 512)
    h = dma_map_single(dev, buf + 64, 128, DMA_FROM_DEVICE)
    assert not dma_mapping_error(dev, h)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    bounce = iommu_iova_to_phys(dom, h)
    assert memory_read(PAGE_OFFSET + bounce, 128) == bytes(128)  # FROM_DEVICE: zeroed
    memory_write(PAGE_OFFSET + bounce, b"\x77" * 128)  # the device writes
    assert memory_read(buf + 64, 128) == b"\x01" * 128
    dma_sync_single_for_cpu(dev, h, 128, DMA_FROM_DEVICE)
    assert memory_read(buf + 64, 128) == b"\x77" * 128
    dma_unmap_single(dev, h, 128, DMA_FROM_DEVICE)
    free_pages_exact(buf, PAGE_SIZE)


def test_untrusted_map_failure_releases_the_bounce_slots(make_kernel: KernelFactory) -> None:
    make_kernel(devices=[{"kind": "edu", "bdf": EDU_BDF, "external": True}], ram="64M", iommu=True)
    dev = pdev_at(EDU_BDF)
    buf = alloc_pages_exact(PAGE_SIZE, 0)
    assert buf is not None
    state = DmaIovaState()
    assert not dma_iova_try_alloc(dev, state, virt_to_phys(buf), PAGE_SIZE)  # streaming only
    injector().arm(1, frozenset({"iommu_pgtable"}))
    try:
        h = dma_map_single(dev, buf + 8, 64, DMA_TO_DEVICE)
    finally:
        injector().disarm()
    assert h == DMA_MAPPING_ERROR and swiotlb_used(dev) == 0
    assert iommu_dma_live_iovas(dev) == 0 and not dma_debug_state().entries
    free_pages_exact(buf, PAGE_SIZE)


def test_32bit_device_on_a_machine_with_ram_above_4g_bounces(make_kernel: KernelFactory) -> None:
    k = make_kernel(iommu=False, ram=[{"base": 0, "size": "64M"}, {"base": "4G", "size": "64M"}])
    mem = io_tlb_default_mem()  # set up because RAM ends above 4 GiB
    assert mem is not None and mem.end <= 1 << 32
    dev, edu = _edu(k, 32)
    fillers, buf = [], None
    while buf is None:
        v = alloc_pages_exact(1 << 20, 0)
        assert v is not None
        if virt_to_phys(v) >= 1 << 32:
            buf = v
        else:
            fillers.append(v)
    memory_write(buf, bytes(256))
    h = dma_map_single(dev, buf, 256, DMA_FROM_DEVICE)
    assert not dma_mapping_error(dev, h) and mem.start <= h < mem.end
    memory_write(PAGE_OFFSET + h, PATTERN)  # the device writes below 4 GiB
    assert memory_read(buf, 256) == bytes(256)  # forgot the sync: stale
    dma_sync_single_for_cpu(dev, h, 256, DMA_FROM_DEVICE)
    assert memory_read(buf, 256) == PATTERN
    dma_unmap_single(dev, h, 256, DMA_FROM_DEVICE)
    for v in [*fillers, buf]:
        free_pages_exact(v, 1 << 20)
    del edu
    pci_unregister_driver(edu_driver)
