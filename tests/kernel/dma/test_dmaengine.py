"""dmaengine memcpy through a test provider built on the edu device's DMA engine:
the client maps buffers with the DMA API (IOVAs of the edu device's default
domain), prepares a memcpy, submits it and gets its callback."""

from __future__ import annotations

from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_MEMCPY,
    DMA_PREP_INTERRUPT,
    DmaAsyncTxDescriptor,
    DmaChan,
    DmaDevice,
    DmaengineResult,
    dma_async_device_register,
    dma_async_device_unregister,
    dma_async_issue_pending,
    dma_cookie_assign,
    dma_cookie_complete,
    dma_cookie_status,
    dma_release_channel,
    dma_request_chan,
    dma_submit_error,
    dma_sync_wait,
    dmaengine_desc_callback_invoke,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
)
from kernel.dma.mapping import dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.mm import GFP_KERNEL, kmalloc, memory_read, memory_write
from kernel.pci import PciDev
from tests.kernel.conftest import EDU_BDF, KernelFactory, pdev_at
from tests.kernel.iommu.helpers import EDU_BUF, edu_copy


def _provider(pdev: PciDev) -> DmaDevice:
    pending: list[DmaAsyncTxDescriptor] = []

    def prep(chan: DmaChan, dst: int, src: int, n: int, flags: int) -> DmaAsyncTxDescriptor:
        tx = DmaAsyncTxDescriptor(chan, lambda t: dma_cookie_assign(t), flags)
        tx.priv = (dst, src, n)
        pending.append(tx)
        return tx

    def issue(chan: DmaChan) -> None:
        while pending:
            tx = pending.pop(0)
            dst, src, n = tx.priv
            err = edu_copy(pdev, src, EDU_BUF, n, False) | edu_copy(pdev, EDU_BUF, dst, n, True)
            dma_cookie_complete(tx)
            dmaengine_desc_callback_invoke(tx, DmaengineResult(1 if err else 0))

    device = DmaDevice(pdev, {DMA_MEMCPY})
    device.channels.append(DmaChan(device, 0))
    device.device_prep_dma_memcpy = prep
    device.device_issue_pending = issue
    device.device_tx_status = dma_cookie_status
    return device


def test_memcpy_through_dmaengine(make_kernel: KernelFactory) -> None:
    make_kernel()
    pdev = pdev_at(EDU_BDF)
    provider = _provider(pdev)
    dma_async_device_register(provider)
    chan = dma_request_chan(None, "memcpy")
    src, dst = kmalloc(1024, GFP_KERNEL), kmalloc(1024, GFP_KERNEL)
    assert src is not None and dst is not None
    memory_write(src, bytes(range(256)) * 4)
    s = dma_map_single(pdev, src, 1024, DMA_TO_DEVICE)
    d = dma_map_single(pdev, dst, 1024, DMA_FROM_DEVICE)
    assert not dma_mapping_error(pdev, s) and not dma_mapping_error(pdev, d)
    results: list[int] = []
    tx = dmaengine_prep_dma_memcpy(chan, d, s, 1024, DMA_PREP_INTERRUPT)
    assert tx is not None
    tx.callback_result = lambda _p, r: results.append(r.result)
    cookie = dmaengine_submit(tx)
    assert not dma_submit_error(cookie)
    assert dma_sync_wait(chan, cookie) == DMA_COMPLETE
    dma_async_issue_pending(chan)
    assert results == [0]
    dma_unmap_single(pdev, s, 1024, DMA_TO_DEVICE)
    dma_unmap_single(pdev, d, 1024, DMA_FROM_DEVICE)
    assert memory_read(dst, 1024) == bytes(range(256)) * 4
    dma_release_channel(chan)
    dma_async_device_unregister(provider)
