"""dmaengine memcpy through a test provider built on the edu device's DMA engine:
the client maps buffers with the DMA API (IOVAs of the edu device's default
domain), prepares a memcpy, submits it and gets its callback."""

from __future__ import annotations

import pytest

from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_ERROR,
    DMA_IN_PROGRESS,
    DMA_MEMCPY,
    DMA_PREP_INTERRUPT,
    SYNC_WAIT_NS,
    DmaAsyncTxDescriptor,
    DmaChan,
    DmaDevice,
    DmaengineResult,
    dma_async_device_register,
    dma_async_device_unregister,
    dma_async_is_tx_complete,
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
    dmaengine_terminate_sync,
)
from kernel.dma.mapping import dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.errno import EBUSY, EINVAL, ENODEV
from kernel.mm import memory_read, memory_write
from kernel.pci import PciDev
from kernel.platform import platform
from tests.kernel.conftest import EDU_BDF, KernelFactory, pdev_at, scratch_buffer
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
    src, dst = scratch_buffer(1024), scratch_buffer(1024)
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


# --------------------------------------------------------------------------- provider/client rules


def _stalled(pdev: PciDev) -> DmaDevice:
    """A provider whose hardware never completes anything."""
    device = DmaDevice(pdev, {DMA_MEMCPY})
    device.channels.append(DmaChan(device, 0))
    device.device_prep_dma_memcpy = lambda chan, d, s, n, f: DmaAsyncTxDescriptor(
        chan, dma_cookie_assign, f
    )
    device.device_issue_pending = lambda chan: None
    device.device_tx_status = dma_cookie_status
    return device


def test_sync_wait_times_out_after_5s_of_virtual_time(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    provider = _stalled(pdev_at(EDU_BDF))
    dma_async_device_register(provider)
    chan = dma_request_chan(None, "memcpy")
    tx = dmaengine_prep_dma_memcpy(chan, 0x2000, 0x1000, 64, 0)
    assert tx is not None
    cookie = dmaengine_submit(tx)
    start = platform().clock.now
    assert dma_sync_wait(chan, cookie) == DMA_ERROR
    assert platform().clock.now - start >= SYNC_WAIT_NS
    assert "dma_sync_wait: timeout!" in k.dmesg()
    assert dma_async_is_tx_complete(chan, cookie) == DMA_IN_PROGRESS
    dma_release_channel(chan)
    dma_async_device_unregister(provider)


def test_register_refuses_incomplete_providers(make_kernel: KernelFactory) -> None:
    make_kernel()
    pdev = pdev_at(EDU_BDF)
    no_issue = _stalled(pdev)
    no_issue.device_issue_pending = None
    no_prep = _stalled(pdev)
    no_prep.device_prep_dma_memcpy = None
    no_chans = _stalled(pdev)
    no_chans.channels.clear()
    for device in (no_issue, no_prep, no_chans):
        with pytest.raises(EINVAL):
            dma_async_device_register(device)
    with pytest.raises(ENODEV):
        dma_request_chan(None, "memcpy")


def test_channels_are_named_per_device_and_requested_by_name(make_kernel: KernelFactory) -> None:
    make_kernel()
    pdev = pdev_at(EDU_BDF)
    first, second = _stalled(pdev), _stalled(pdev)
    second.channels.append(DmaChan(second, 1))
    dma_async_device_register(first)
    dma_async_device_register(second)
    assert [c.name for c in second.channels] == ["dma1chan0", "dma1chan1"]
    chan = dma_request_chan(pdev, "dma1chan1")
    assert chan is second.channels[1] and chan.client is pdev
    with pytest.raises(ENODEV):
        dma_request_chan(pdev, "dma1chan1")  # held
    with pytest.raises(ENODEV):
        dma_request_chan(pdev, "dma7chan0")
    dma_release_channel(chan)
    with pytest.raises(EBUSY):
        dma_release_channel(chan)
    dma_async_device_unregister(second)
    dma_async_device_unregister(second)  # not registered any more: nothing to do
    dma_async_device_unregister(first)


def test_memcpy_channel_request_skips_held_channels(make_kernel: KernelFactory) -> None:
    make_kernel()
    provider = _stalled(pdev_at(EDU_BDF))
    provider.channels.append(DmaChan(provider, 1))
    dma_async_device_register(provider)
    a = dma_request_chan(None, "memcpy")
    b = dma_request_chan(None, "memcpy")
    assert (a.name, b.name) == ("dma0chan0", "dma0chan1")
    dma_release_channel(a)
    dma_release_channel(b)
    dma_async_device_unregister(provider)


def test_unregister_while_a_channel_is_held_is_reported(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    provider = _stalled(pdev_at(EDU_BDF))
    dma_async_device_register(provider)
    dma_request_chan(None, "memcpy")
    dma_async_device_unregister(provider)
    assert "dmaengine: dma0chan0 unregistered while in use" in k.dmesg()


def test_prep_without_memcpy_support_returns_none(make_kernel: KernelFactory) -> None:
    make_kernel()
    device = _stalled(pdev_at(EDU_BDF))
    device.device_prep_dma_memcpy = None
    assert dmaengine_prep_dma_memcpy(device.channels[0], 0x2000, 0x1000, 64, 0) is None


def test_completing_an_unsubmitted_descriptor_is_einval(make_kernel: KernelFactory) -> None:
    make_kernel()
    chan = _stalled(pdev_at(EDU_BDF)).channels[0]
    with pytest.raises(EINVAL):
        dma_cookie_complete(DmaAsyncTxDescriptor(chan, dma_cookie_assign))


def test_plain_callback_runs_when_there_is_no_callback_result(make_kernel: KernelFactory) -> None:
    make_kernel()
    chan = _stalled(pdev_at(EDU_BDF)).channels[0]
    got: list[object] = []
    tx = DmaAsyncTxDescriptor(chan, dma_cookie_assign, callback=got.append, callback_param="p")
    dmaengine_desc_callback_invoke(tx, DmaengineResult())
    tx.callback = None
    dmaengine_desc_callback_invoke(tx, DmaengineResult())  # no callback at all
    assert got == ["p"]


def test_terminate_sync_calls_the_providers_terminate_all(make_kernel: KernelFactory) -> None:
    make_kernel()
    device = _stalled(pdev_at(EDU_BDF))
    chan = device.channels[0]
    dmaengine_terminate_sync(chan)  # provider without terminate_all: nothing to do
    stopped: list[DmaChan] = []
    device.device_terminate_all = stopped.append
    dmaengine_terminate_sync(chan)
    assert stopped == [chan]
