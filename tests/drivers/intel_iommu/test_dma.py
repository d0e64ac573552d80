"""End to end through the hardware model: DMA API mappings, device DMA, and the fault
a device gets once its mapping is gone."""

from __future__ import annotations

from kernel.dma.mapping import (
    DMA_FROM_DEVICE,
    DMA_TO_DEVICE,
    dma_map_single,
    dma_mapping_error,
    dma_unmap_single,
)
from kernel.mm import GFP_KERNEL, kfree, kmalloc, memory_read, memory_write
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory
from tests.kernel.iommu.helpers import device_read, device_write

PATTERN = bytes(range(256)) * 16


def _buf(data: bytes = PATTERN) -> int:
    buf = kmalloc(4096, GFP_KERNEL)
    assert buf is not None
    memory_write(buf, data)
    return buf


def test_device_reads_the_bytes_dma_map_single_mapped(vtd: Vtd) -> None:
    edu = vtd.edu
    buf = _buf()
    handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(edu, handle)
    assert device_read(edu, handle, 256) == 0
    assert vtd.dma_read(edu, handle, 4096) == (PATTERN, None)
    dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
    kfree(buf)


def test_device_writes_land_in_the_mapped_buffer(vtd: Vtd) -> None:
    edu = vtd.edu
    buf = _buf(bytes(4096))
    handle = dma_map_single(edu, buf, 4096, DMA_FROM_DEVICE)
    assert not dma_mapping_error(edu, handle)
    assert vtd.dma_write(edu, handle + 0x100, b"written by edu") is None
    dma_unmap_single(edu, handle, 4096, DMA_FROM_DEVICE)
    assert memory_read(buf + 0x100, 14) == b"written by edu"
    kfree(buf)


def test_dma_after_unmap_faults_first_stage_not_present_and_is_logged(vtd: Vtd) -> None:
    """Scalable mode, first-stage domain: the unmapped leaf is not present (FR 0x71);
    the fault interrupt handler prints it with Linux's reason string."""
    edu = vtd.edu
    buf = _buf()
    handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(edu, handle)
    assert device_read(edu, handle, 64) == 0
    dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
    assert device_read(edu, handle, 64) == 1
    _, fault = vtd.dma_read(edu, handle, 64)
    assert fault is not None and fault.reason == 0x71
    log = vtd.kernel.dmesg()
    assert "DMAR: DRHD: handling fault status reg" in log
    assert (
        f"DMAR: [DMA Read NO_PASID] Request device [00:03.0] fault addr {handle:#x} "
        "[fault reason 0x71] SM: Present bit in first-level paging entry is clear"
    ) in log
    kfree(buf)


def test_legacy_mode_unmapped_read_faults_0x06(make_vtd: VtdFactory) -> None:
    v = make_vtd("intel_iommu=sm_off")
    edu = v.edu
    buf = _buf()
    handle = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
    assert not dma_mapping_error(edu, handle)
    assert device_read(edu, handle, 64) == 0
    dma_unmap_single(edu, handle, 4096, DMA_TO_DEVICE)
    assert device_read(edu, handle, 64) == 1
    assert "[fault reason 0x06] PTE Read access is not set" in v.kernel.dmesg()
    kfree(buf)


def test_unmapped_write_faults_with_dma_write_type(vtd: Vtd) -> None:
    edu = vtd.edu
    buf = _buf()
    handle = dma_map_single(edu, buf, 4096, DMA_FROM_DEVICE)
    assert not dma_mapping_error(edu, handle)
    dma_unmap_single(edu, handle, 4096, DMA_FROM_DEVICE)
    assert device_write(edu, handle, 16) == 1
    assert "[DMA Write NO_PASID] Request device [00:03.0]" in vtd.kernel.dmesg()
    kfree(buf)
