"""DMA-API debug: one test per check, each asserting the kernel's message."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from kernel.boot import Kernel
from kernel.dma.debug import debug_dma_dump_mappings, dma_debug_state
from kernel.dma.direction import (
    DMA_ATTR_SKIP_CPU_SYNC,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_TO_DEVICE,
)
from kernel.dma.mapping import (
    dma_alloc_coherent,
    dma_free_coherent,
    dma_map_sg,
    dma_map_single,
    dma_map_single_attrs,
    dma_mapping_error,
    dma_set_max_seg_size,
    dma_set_seg_boundary,
    dma_sync_sg_for_cpu,
    dma_sync_single_for_cpu,
    dma_sync_single_for_device,
    dma_unmap_sg,
    dma_unmap_single,
)
from kernel.dma.scatterlist import sg_init_table, sg_set_buf
from kernel.mm import GFP_KERNEL, PAGE_OFFSET, current_stack, kmalloc, vfree, vmalloc
from kernel.pci import PciDev, PciDeviceId, PciDriver, pci_register_driver, pci_unregister_driver
from tests.kernel.conftest import (
    EDU_BDF,
    PASID_BDF,
    KernelFactory,
    pdev_at,
    scratch_buffer,
    take_warnings,
)

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations

# This suite plays buggy drivers: the DMA-API errors it provokes (and the mappings
# they leave, which the mock vendor WARNs about when the domain goes) are its subject.
pytestmark = pytest.mark.iommulab_allow("dma-debug", "warn:mock: domain freed with mappings left")


@pytest.fixture(params=[False, True], ids=["direct", "iommu"])
def booted(request: pytest.FixtureRequest, make_kernel: KernelFactory) -> tuple[Kernel, PciDev]:
    k = make_kernel(iommu=request.param)
    dma_debug_state().all_errors = True
    return k, pdev_at(EDU_BDF)


def _msgs(k: Kernel) -> str:
    return "\n".join(take_warnings(k))


def _map(dev: PciDev, size: int = 256, dir: int = DMA_TO_DEVICE) -> tuple[int, int]:
    buf = scratch_buffer(size)
    assert buf is not None
    h = dma_map_single(dev, buf, size, dir)
    assert not dma_mapping_error(dev, h)
    return buf, h


CHECKS: dict[str, tuple[Callable[[PciDev], None], str]] = {}


def check(name: str, text: str) -> Callable[[Callable[[PciDev], None]], Callable[[PciDev], None]]:
    def reg(fn: Callable[[PciDev], None]) -> Callable[[PciDev], None]:
        CHECKS[name] = (fn, text)
        return fn

    return reg


@check("free_invalid", "device driver tries to free an invalid DMA memory address")
def _free_invalid(dev: PciDev) -> None:
    dma_unmap_single(dev, DMA_MAPPING_ERROR, 64, DMA_TO_DEVICE)


@check("not_allocated", "device driver tries to free DMA memory it has not allocated")
def _not_allocated(dev: PciDev) -> None:
    dma_unmap_single(dev, 0x123000, 64, DMA_TO_DEVICE)


@check("size", "device driver frees DMA memory with different size")
def _size(dev: PciDev) -> None:
    _buf, h = _map(dev, 256)
    dma_unmap_single(dev, h, 128, DMA_TO_DEVICE)


@check("function", "device driver frees DMA memory with wrong function")
def _function(dev: PciDev) -> None:
    buf, h = _map(dev, 256)
    sgl = sg_init_table(1)
    sg_set_buf(sgl[0], buf, 256)
    sgl[0].dma_address, sgl[0].dma_length = h, 256
    dma_unmap_sg(dev, sgl, 1, DMA_TO_DEVICE)


@check("cpu_address", "device driver frees DMA memory with different CPU address")
def _cpu_address(dev: PciDev) -> None:
    a, ha = dma_alloc_coherent(dev, 4096, GFP_KERNEL)
    b, _hb = dma_alloc_coherent(dev, 4096, GFP_KERNEL)
    assert a is not None and b is not None
    dma_free_coherent(dev, 4096, b, ha)
    dma_free_coherent(dev, 4096, a, _hb)  # the same mistake crossed back: nothing leaks


@check("sg_count", "device driver frees DMA sg list with different entry count")
def _sg_count(dev: PciDev) -> None:
    bufs = [scratch_buffer(4096) for _ in range(2)]
    sgl = sg_init_table(2)
    for sg, b in zip(sgl, bufs, strict=True):
        assert b is not None
        sg_set_buf(sg, b, 4096)
    # two whole pages merge into one IOVA segment through dma-iommu
    assert dma_map_sg(dev, sgl, 2, DMA_TO_DEVICE) == (1 if dev.dma_iommu else 2)
    dma_unmap_sg(dev, sgl, 1, DMA_TO_DEVICE)


@check("direction", "device driver frees DMA memory with different direction")
def _direction(dev: PciDev) -> None:
    _buf, h = _map(dev, 256, DMA_TO_DEVICE)
    dma_unmap_single(dev, h, 256, DMA_FROM_DEVICE)


@check("map_error", "device driver failed to check map error")
def _map_error(dev: PciDev) -> None:
    buf = scratch_buffer(256)
    assert buf is not None
    h = dma_map_single(dev, buf, 256, DMA_TO_DEVICE)
    dma_unmap_single(dev, h, 256, DMA_TO_DEVICE)


@check("invalid_area", "device driver maps memory from invalid area")
def _invalid_area(dev: PciDev) -> None:
    assert dma_map_single(dev, 0x1000, 64, DMA_TO_DEVICE) == DMA_MAPPING_ERROR


@check("vmalloc", "device driver maps memory from vmalloc area")
def _vmalloc(dev: PciDev) -> None:
    buf = vmalloc(4096)
    assert buf is not None
    h = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
    dma_mapping_error(dev, h)
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)
    vfree(buf)


@check("stack", "device driver maps memory from stack [probable addr=")
def _stack(dev: PciDev) -> None:
    buf = current_stack().alloca(64)
    h = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
    dma_mapping_error(dev, h)
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)


@check("overlap", "cacheline tracking EEXIST, overlapping mappings aren't supported")
def _overlap(dev: PciDev) -> None:
    buf, _h1 = _map(dev, 64, DMA_FROM_DEVICE)
    h2 = dma_map_single(dev, buf, 64, DMA_FROM_DEVICE)
    dma_mapping_error(dev, h2)


@check("sg_segment", "mapping sg segment longer than device claims to support")
def _sg_segment(dev: PciDev) -> None:
    dma_set_max_seg_size(dev, 1024)
    buf = scratch_buffer(4096)
    assert buf is not None
    sgl = sg_init_table(1)
    sg_set_buf(sgl[0], buf, 4096)
    dma_map_sg(dev, sgl, 1, DMA_TO_DEVICE)


@check("sync_not_allocated", "device driver tries to sync DMA memory it has not allocated")
def _sync_not_allocated(dev: PciDev) -> None:
    dma_sync_single_for_cpu(dev, 0x777000, 64, DMA_FROM_DEVICE)


@check("sync_range", "device driver syncs DMA memory outside allocated range")
def _sync_range(dev: PciDev) -> None:
    _buf, h = _map(dev, 256, DMA_BIDIRECTIONAL)
    dma_sync_single_for_cpu(dev, h, 512, DMA_BIDIRECTIONAL)


@check("sync_direction", "device driver syncs DMA memory with different direction")
def _sync_direction(dev: PciDev) -> None:
    _buf, h = _map(dev, 256, DMA_FROM_DEVICE)
    dma_sync_single_for_cpu(dev, h, 256, DMA_TO_DEVICE)


@check("sync_read_only", "device driver syncs device read-only DMA memory for cpu")
def _sync_read_only(dev: PciDev) -> None:
    _buf, h = _map(dev, 256, DMA_TO_DEVICE)
    dma_sync_single_for_cpu(dev, h, 256, DMA_BIDIRECTIONAL)


@check("sync_write_only", "device driver syncs device write-only DMA memory to device")
def _sync_write_only(dev: PciDev) -> None:
    _buf, h = _map(dev, 256, DMA_FROM_DEVICE)
    dma_sync_single_for_device(dev, h, 256, DMA_BIDIRECTIONAL)


@check("sync_sg_count", "device driver syncs DMA sg list with different entry count")
def _sync_sg_count(dev: PciDev) -> None:
    bufs = [scratch_buffer(4096) for _ in range(2)]
    sgl = sg_init_table(2)
    for sg, b in zip(sgl, bufs, strict=True):
        assert b is not None
        sg_set_buf(sg, b, 4096)
    dma_map_sg(dev, sgl, 2, DMA_FROM_DEVICE)
    dma_sync_sg_for_cpu(dev, sgl, 1, DMA_FROM_DEVICE)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_reports_kernel_message(booted: tuple[Kernel, PciDev], name: str) -> None:
    k, dev = booted
    fn, text = CHECKS[name]
    fn(dev)
    msgs = _msgs(k)
    assert text in msgs
    assert "DMA-API: pci 0000:00:03.0: " in msgs


def test_leak_at_driver_unbind_is_reported_with_call_site(
    make_kernel: KernelFactory, iommulab_expect: Expectations
) -> None:
    iommulab_expect.leak("kmalloc 128 bytes")  # the leaky driver's buffer
    k = make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)

    def probe(pdev: PciDev, _id: PciDeviceId) -> None:
        buf = kmalloc(128, GFP_KERNEL)
        assert buf is not None
        nonlocal line
        line = sys._getframe().f_lineno + 1
        h = dma_map_single(pdev, buf, 128, DMA_TO_DEVICE)
        dma_mapping_error(pdev, h)

    line = 0
    drv = PciDriver("leaky", [PciDeviceId(0x1234, 0x11E8)], probe)
    pci_register_driver(drv)
    pci_unregister_driver(drv)
    msgs = _msgs(k)
    assert (
        "DMA-API: pci 0000:00:03.0: device driver has pending DMA allocations while "
        "released from device [count=" in msgs
    )
    assert "mapped as single" in msgs
    # The call site is saved as (code, offset) and resolved to its line when printed.
    assert f"test_debug.py:{line} probe" in k.dmesg() and "Mapped at:" in k.dmesg()
    del dev


def test_clean_driver_produces_no_report(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    for dir in (DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
        _buf, h = _map(dev, 512, dir)
        dma_sync_single_for_cpu(dev, h, 512, dir if dir != DMA_TO_DEVICE else DMA_TO_DEVICE)
        dma_unmap_single(dev, h, 512, dir)
    cpu, handle = dma_alloc_coherent(dev, 8192, GFP_KERNEL)
    dma_free_coherent(dev, 8192, cpu, handle)
    assert dma_debug_state().error_count == 0
    assert not k.warnings()


def test_only_first_error_warns_by_default(make_kernel: KernelFactory) -> None:
    k = make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    dma_unmap_single(dev, 0x1000, 64, DMA_TO_DEVICE)
    dma_unmap_single(dev, 0x2000, 64, DMA_TO_DEVICE)
    assert dma_debug_state().error_count == 2
    assert len(take_warnings(k)) == 1


def test_dma_debug_off(make_kernel: KernelFactory) -> None:
    k = make_kernel("dma_debug=off", iommu=False)
    dma_unmap_single(pdev_at(EDU_BDF), 0x1000, 64, DMA_TO_DEVICE)
    assert not k.warnings()


def test_dma_debug_off_records_and_checks_nothing(make_kernel: KernelFactory) -> None:
    k = make_kernel("dma_debug=off", iommu=False)  # dma-direct tolerates the bad calls
    dev = pdev_at(EDU_BDF)
    buf, h = _map(dev, 256, DMA_FROM_DEVICE)
    dma_sync_single_for_cpu(dev, h, 4096, DMA_TO_DEVICE)
    dma_unmap_single(dev, h, 8, DMA_TO_DEVICE)
    sgl = sg_init_table(1)
    sg_set_buf(sgl[0], buf, 256)
    assert dma_map_sg(dev, sgl, 1, DMA_FROM_DEVICE) == 1
    dma_sync_sg_for_cpu(dev, sgl, 1, DMA_TO_DEVICE)
    dma_unmap_sg(dev, sgl, 1, DMA_FROM_DEVICE)
    cpu, handle = dma_alloc_coherent(dev, 4096, GFP_KERNEL)
    dma_free_coherent(dev, 4096, cpu, handle + 4096)
    assert dma_map_single(dev, 0x1000, 64, DMA_TO_DEVICE) == DMA_MAPPING_ERROR
    st = dma_debug_state()
    assert st.disabled and st.error_count == 0 and not st.entries and not k.warnings()
    assert "DMA-API: debugging disabled on kernel command line" in k.dmesg()


def test_driver_filter_counts_other_drivers_errors_without_warning(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel("dma_debug_driver=nvme", iommu=False)
    dma_unmap_single(pdev_at(EDU_BDF), 0x1000, 64, DMA_TO_DEVICE)
    assert dma_debug_state().error_count == 1 and not k.warnings()


def test_more_than_7_overlapping_mappings_of_a_cacheline_warn_once(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel(iommu=False)
    dev = pdev_at(EDU_BDF)
    buf = scratch_buffer(64)
    assert buf is not None
    handles = []
    for _ in range(9):
        h = dma_map_single_attrs(dev, buf, 64, DMA_FROM_DEVICE, DMA_ATTR_SKIP_CPU_SYNC)
        dma_mapping_error(dev, h)
        handles.append(h)
    cln = (buf - PAGE_OFFSET) & ~0x3F
    assert take_warnings(k) == [f"DMA-API: exceeded 7 overlapping mappings of cacheline {cln:#x}"]
    for h in handles:
        dma_unmap_single(dev, h, 64, DMA_FROM_DEVICE)
    st = dma_debug_state()
    assert not st.entries and not st.cachelines and st.error_count == 0


def test_sync_inside_a_mapping_finds_it_among_others(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    _a, ha = _map(dev, 4096, DMA_FROM_DEVICE)
    _b, hb = _map(dev, 4096, DMA_FROM_DEVICE)
    dma_sync_single_for_cpu(dev, hb + 0x100, 0x100, DMA_FROM_DEVICE)
    dma_sync_single_for_cpu(dev, ha + 0x100, 0x100, DMA_FROM_DEVICE)
    assert dma_debug_state().error_count == 0 and not k.warnings()
    dma_unmap_single(dev, ha, 4096, DMA_FROM_DEVICE)
    dma_unmap_single(dev, hb, 4096, DMA_FROM_DEVICE)


def test_sg_segment_across_the_devices_boundary_is_reported(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    dma_set_seg_boundary(dev, 0xFFF)
    buf = scratch_buffer(8192)
    assert buf is not None
    sgl = sg_init_table(1)
    sg_set_buf(sgl[0], buf + 0x800, 4096)
    assert dma_map_sg(dev, sgl, 1, DMA_TO_DEVICE) == 1
    assert "mapping sg segment across boundary" in _msgs(k)
    dma_unmap_sg(dev, sgl, 1, DMA_TO_DEVICE)


def test_dump_mappings_lists_the_devices_live_mappings(make_kernel: KernelFactory) -> None:
    k = make_kernel(iommu=False)
    dev, other = pdev_at(EDU_BDF), pdev_at(PASID_BDF)
    buf, h = _map(dev, 256, DMA_TO_DEVICE)
    _map(other, 128, DMA_FROM_DEVICE)
    phys = buf - PAGE_OFFSET
    line = (
        f"pci 0000:00:03.0 single idx 0 P=0x{phys:x} D=0x{h:x} L=0x100 "
        f"cln=0x{phys >> 6:x} DMA_TO_DEVICE"
    )
    assert debug_dma_dump_mappings(dev) == [line]
    assert f"DMA-API: {line}" in k.dmesg()
    assert len(debug_dma_dump_mappings(None)) == 2


def test_sg_sync_stops_at_the_first_unmapped_entry(booted: tuple[Kernel, PciDev]) -> None:
    k, dev = booted
    sgl = sg_init_table(3)
    for sg in sgl:
        buf = scratch_buffer(4096)
        assert buf is not None
        sg_set_buf(sg, buf, 2048)  # partial pages: dma-iommu cannot merge them
    assert dma_map_sg(dev, sgl, 2, DMA_FROM_DEVICE) == 2
    dma_sync_sg_for_cpu(dev, sgl, 3, DMA_FROM_DEVICE)
    msgs = _msgs(k)
    assert msgs.count("syncs DMA sg list with different entry count") == 2
    assert "has not allocated" not in msgs
    dma_unmap_sg(dev, sgl, 2, DMA_FROM_DEVICE)


def test_a_report_is_a_finding_with_the_mapping_and_the_call_chain(
    booted: tuple[Kernel, PciDev],
) -> None:
    """The size-mismatch report as a finding: the device, the mapping the check
    matched (type, address, size, direction, physical address, where it was
    mapped) and the call chain of the unmap that broke the rule."""
    k, dev = booted
    buf, h = _map(dev, 256)
    dma_unmap_single(dev, h, 128, DMA_TO_DEVICE)
    [found] = [f for f in k.findings if f.check == "dma-debug"]
    assert found.message.startswith("device driver frees DMA memory with different size")
    assert (found.requester, found.iova) == (str(dev.addr), h)
    assert dict(found.record) == {
        "type": "single",
        "device_address": hex(h),
        "size": "256",
        "direction": "DMA_TO_DEVICE",
        "phys": hex(buf - PAGE_OFFSET),
    }
    funcs = [line.split()[0] for line in found.chain]
    assert funcs.index("dma_unmap_single") < funcs.index(
        "test_a_report_is_a_finding_with_the_mapping_and_the_call_chain"
    )
    assert found.detail.startswith("Mapped at:\n  test_debug.py:")
    assert "_map" in found.detail.splitlines()[1]
