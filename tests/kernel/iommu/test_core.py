"""IOMMU core: unit binding, default domains, groups, ownership, bad input, the flush
queue, SVA."""

from __future__ import annotations

import pytest

from kernel.delay import msleep
from kernel.dma.direction import DMA_BIDIRECTIONAL, DMA_BIT_MASK, DMA_TO_DEVICE
from kernel.dma.mapping import (
    dma_map_single,
    dma_mapping_error,
    dma_set_mask_and_coherent,
    dma_unmap_single,
)
from kernel.errno import EBUSY, EINVAL, EIO, EOVERFLOW, EPERM
from kernel.fork import mm_alloc, mmput
from kernel.iommu.dma_iommu import iommu_dma_flush_queue_pending, iommu_dma_live_iovas
from kernel.iommu.iommu import (
    __iommu_domain_alloc,
    dev_iommu_ops,
    iommu_attach_device,
    iommu_detach_device,
    iommu_device_claim_dma_owner,
    iommu_device_release_dma_owner,
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_paging_domain_alloc,
    iommu_state,
)
from kernel.iommu.iommu_h import IOMMU_DOMAIN_DMA_FQ, IOMMU_DOMAIN_IDENTITY, IOMMU_READ
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_pgsize, iommu_unmap
from kernel.iommu.iommu_sva import (
    iommu_sva_bind_device,
    iommu_sva_get_pasid,
    iommu_sva_unbind_device,
)
from kernel.memory import remap_pfn_range
from kernel.mm import GFP_KERNEL, PAGE_OFFSET, memory_read, memory_write
from kernel.mm_types import MmStruct
from kernel.mmap import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    vm_mmap,
    vma_lookup,
)
from tests.kernel.conftest import (
    EDU_BDF,
    PASID_BDF,
    KernelFactory,
    pdev_at,
    scratch_buffer,
    take_warnings,
)
from tests.kernel.iommu import mock_iommu
from tests.kernel.iommu.helpers import device_read, device_write
from tests.kernel.iommu.mock_hw import mock_unit

SZ_4K = 1 << 12


def test_unit_bound_by_table_name_with_dmesg_line(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    assert iommu_state().bound == {"mock0": "mock_iommu"}
    assert "iommu: MOCK unit mock0 bound to driver mock_iommu" in k.dmesg()


def test_two_drivers_claiming_one_table_is_an_error_naming_both(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kernel.module import IommuDriverInfo

    twin = IommuDriverInfo("mock_twin", "MOCK", mock_iommu.mock_probe)

    class Twin:
        @staticmethod
        @mock_iommu.hookimpl
        def iommulab_iommu_drivers() -> list[IommuDriverInfo]:
            return [twin]

    from tests.kernel import conftest

    orig = conftest.boot_kernel

    def boot_two(cmdline: str = "", **kw: object) -> object:
        from hw.machine import build_machine
        from kernel.boot import boot

        return boot(
            build_machine(conftest.machine_spec()),
            cmdline,
            builtins=(),
            entry_points=False,
            extra_plugins=[("mock_iommu", mock_iommu), ("twin", Twin)],
        )

    monkeypatch.setattr(conftest, "boot_kernel", boot_two)
    k = make_kernel()
    monkeypatch.setattr(conftest, "boot_kernel", orig)
    assert "claimed by both mock_iommu and mock_twin; not binding" in k.dmesg()
    assert pdev_at(EDU_BDF).iommu is None


def test_passthrough_gives_identity_and_dma_direct(make_kernel: KernelFactory) -> None:
    make_kernel("iommu.passthrough=1")
    dev = pdev_at(EDU_BDF)
    assert iommu_get_domain_for_dev(dev).type == IOMMU_DOMAIN_IDENTITY
    assert not dev.dma_iommu
    buf = scratch_buffer(64)
    assert buf is not None
    h = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
    assert h == buf - PAGE_OFFSET and not dma_mapping_error(dev, h)
    assert device_read(dev, h, 64) == 0
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)


def test_device_dma_through_dma_api_reaches_bytes_then_faults_after_unmap(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    buf = scratch_buffer(256)
    assert buf is not None
    memory_write(buf, bytes(range(256)))
    h = dma_map_single(dev, buf, 256, DMA_BIDIRECTIONAL)
    assert not dma_mapping_error(dev, h)
    assert device_read(dev, h, 256) == 0
    memory_write(buf, b"\0" * 256)
    assert device_write(dev, h, 256) == 0
    assert memory_read(buf, 256) == bytes(range(256))
    dma_unmap_single(dev, h, 256, DMA_BIDIRECTIONAL)
    assert device_read(dev, h, 256) == 1
    assert mock_unit().faults


def test_lazy_mode_reuses_iova_only_after_the_flush(make_kernel: KernelFactory) -> None:
    make_kernel("iommu.strict=0")
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_domain_for_dev(dev)
    assert dom.type == IOMMU_DOMAIN_DMA_FQ
    buf = scratch_buffer(64)
    assert buf is not None
    h = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
    dma_mapping_error(dev, h)
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)
    assert iommu_dma_flush_queue_pending(dom) == 1
    h2 = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
    dma_mapping_error(dev, h2)
    assert h2 != h
    dma_unmap_single(dev, h2, 64, DMA_TO_DEVICE)
    msleep(11)
    assert iommu_dma_flush_queue_pending(dom) == 0
    assert dom.flush_alls == 1
    h3 = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
    dma_mapping_error(dev, h3)
    assert h3 in (h, h2)
    dma_unmap_single(dev, h3, 64, DMA_TO_DEVICE)


def test_strict_mode_syncs_on_every_unmap(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_domain_for_dev(dev)
    buf = scratch_buffer(64)
    assert buf is not None
    for _ in range(3):
        h = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
        dma_mapping_error(dev, h)
        dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)
    assert dom.iotlb_syncs == 3 and iommu_dma_live_iovas(dev) == 0


def test_pgsize_splits_to_large_pages() -> None:
    from kernel.iommu.iommu_h import IommuDomain

    d = IommuDomain(pgsize_bitmap=(1 << 12) | (1 << 21))
    assert iommu_pgsize(d, 0x1FF000, 0x1FF000, 0x201000) == (1 << 12, 1)
    assert iommu_pgsize(d, 0x200000, 0x200000, 0x200000) == (1 << 21, 1)


class _Answers:
    """Paging-domain ops that record each call and answer with canned byte counts (a
    driver that maps or unmaps less, or more, than it was asked)."""

    def __init__(self, mapped: int, unmapped: int) -> None:
        self.mapped, self.unmapped = mapped, unmapped
        self.calls: list[tuple[str, int, int, int]] = []

    def map_pages(
        self, domain: object, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int, gfp: int
    ) -> int:
        self.calls.append(("map", iova, pgsize, pgcount))
        return self.mapped

    def unmap_pages(
        self, domain: object, iova: int, pgsize: int, pgcount: int, gather: object
    ) -> int:
        self.calls.append(("unmap", iova, pgsize, pgcount))
        return self.unmapped


@pytest.mark.parametrize("answer", [0, SZ_4K // 2])
def test_a_short_map_of_one_page_is_enomem_after_undoing_it(
    make_kernel: KernelFactory, answer: int
) -> None:
    """As __iommu_map's loop: a driver mapping less than the one page asked fails the
    map; what it did map is handed back to iommu_unmap (here unaligned, so refused)."""
    from kernel.errno import ENOMEM
    from kernel.iommu.iommu_h import IOMMU_DOMAIN_UNMANAGED, IommuDomain

    make_kernel()
    ops = _Answers(mapped=answer, unmapped=SZ_4K)
    dom = IommuDomain(type=IOMMU_DOMAIN_UNMANAGED, ops=ops, pgsize_bitmap=SZ_4K | (1 << 21))
    with pytest.raises(ENOMEM, match=f"stopped after {answer:#x} of 0x1000"):
        iommu_map(dom, 0x5000, 0x9000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert ops.calls == [("map", 0x5000, SZ_4K, 1)]


@pytest.mark.parametrize(("answer", "result"), [(0, 0), (SZ_4K, SZ_4K), (1 << 21, 1 << 21)])
def test_unmap_of_one_page_returns_what_the_driver_unmapped(
    make_kernel: KernelFactory, answer: int, result: int
) -> None:
    """Nothing unmapped ends the unmap at 0; a driver that removed a whole superpage
    for a 4 KiB request reports the superpage's size (C's loop ends on it)."""
    from kernel.iommu.iommu_h import IOMMU_DOMAIN_UNMANAGED, IommuDomain

    make_kernel()
    ops = _Answers(mapped=SZ_4K, unmapped=answer)
    dom = IommuDomain(type=IOMMU_DOMAIN_UNMANAGED, ops=ops, pgsize_bitmap=SZ_4K | (1 << 21))
    assert iommu_unmap(dom, 0x200000, SZ_4K) == result
    assert ops.calls == [("unmap", 0x200000, SZ_4K, 1)]


# --------------------------------------------------------------------------- bad input


def test_invalid_direction_is_rejected(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    buf = scratch_buffer(64)
    assert buf is not None
    with pytest.raises(EINVAL):
        dma_map_single(dev, buf, 64, 7)
    assert iommu_dma_live_iovas(dev) == 0


def test_size_zero_warns_and_maps_nothing(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    buf = scratch_buffer(64)
    assert buf is not None
    assert dma_mapping_error(dev, dma_map_single(dev, buf, 0, DMA_TO_DEVICE))
    assert take_warnings(k) == ["DMA-API: mapping of size 0"]
    dom = iommu_paging_domain_alloc(dev)
    with pytest.raises(EINVAL):
        iommu_map(dom, 0, 0, 0, IOMMU_READ, GFP_KERNEL)
    iommu_domain_free(dom)


def test_iova_overflow_is_eoverflow(make_kernel: KernelFactory) -> None:
    make_kernel()
    dom = iommu_paging_domain_alloc(pdev_at(EDU_BDF))
    with pytest.raises(EOVERFLOW):
        iommu_map(dom, (1 << 64) - SZ_4K, 0, 2 * SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert not dom.mappings()
    iommu_domain_free(dom)


def test_mask_too_small(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    with pytest.raises(EIO):
        dma_set_mask_and_coherent(dev, DMA_BIT_MASK(12))
    assert dev.dma_mask == DMA_BIT_MASK(32)


def test_unknown_domain_type_is_einval(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    with pytest.raises(EINVAL):
        __iommu_domain_alloc(dev_iommu_ops(dev), dev, 0x40)


def test_unmap_of_range_not_mapped_returns_zero(make_kernel: KernelFactory) -> None:
    make_kernel()
    dom = iommu_paging_domain_alloc(pdev_at(EDU_BDF))
    iommu_map(dom, 0x1000, 0x100000, SZ_4K, IOMMU_READ, GFP_KERNEL)
    assert iommu_unmap(dom, 0x8000, SZ_4K) == 0
    assert iommu_unmap(dom, 0x1001, SZ_4K) == 0
    assert iommu_iova_to_phys(dom, 0x1000) == 0x100000
    iommu_unmap(dom, 0x1000, SZ_4K)
    iommu_domain_free(dom)


def test_attach_of_incompatible_domain_is_einval(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    default = iommu_get_domain_for_dev(dev)
    foreign = mock_iommu.MockDomain(pgsize_bitmap=SZ_4K, owner=object())  # type: ignore[arg-type]
    with pytest.raises(EINVAL):
        iommu_attach_device(foreign, dev)
    assert iommu_get_domain_for_dev(dev) is default


def test_dma_owner_claim_blocks_and_excludes(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    default = iommu_get_domain_for_dev(dev)
    owner = object()
    iommu_device_claim_dma_owner(dev, owner)
    assert iommu_get_domain_for_dev(dev) is dev_iommu_ops(dev).blocked_domain
    with pytest.raises(EPERM):
        iommu_device_claim_dma_owner(dev, object())
    iommu_device_release_dma_owner(dev)
    assert iommu_get_domain_for_dev(dev) is default
    other = iommu_paging_domain_alloc(dev)
    iommu_attach_device(other, dev)
    third = iommu_paging_domain_alloc(dev)
    with pytest.raises(EBUSY):
        iommu_attach_device(third, dev)
    assert iommu_get_domain_for_dev(dev) is other
    iommu_detach_device(other, dev)
    iommu_domain_free(third)
    iommu_domain_free(other)


def _map_phys(mm: MmStruct, va: int, phys: int) -> None:
    """A user mapping of one given physical page (``remap_pfn_range``)."""
    vm_mmap(mm, va, SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    vma = vma_lookup(mm, va)
    assert vma is not None
    remap_pfn_range(vma, va, phys >> 12, SZ_4K, vma.vm_page_prot)


def test_sva_bind_translates_through_process_page_tables(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(PASID_BDF)
    mm = mm_alloc()
    assert mm is not None
    buf = scratch_buffer(4096)
    assert buf is not None
    memory_write(buf, b"sva!" * 16)
    _map_phys(mm, 0x7000_0000, (buf - PAGE_OFFSET) & ~0xFFF)
    handle = iommu_sva_bind_device(dev, mm)
    pasid = iommu_sva_get_pasid(handle)
    assert pasid == 1 and iommu_sva_bind_device(dev, mm) is handle
    hw = mock_unit()
    va = 0x7000_0000 + ((buf - PAGE_OFFSET) & 0xFFF)
    res = hw.translate(dev.rid, pasid, False, va, 64, False)
    assert res.fault is None and res.runs[0][0] == buf - PAGE_OFFSET
    iommu_sva_unbind_device(handle)
    iommu_sva_unbind_device(handle)
    assert hw.translate(dev.rid, pasid, False, va, 64, False).fault is not None
    mmput(mm)
    assert not iommu_state().global_pasid_ida.ids
