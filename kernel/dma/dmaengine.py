"""dmaengine: the provider/client API for memcpy offload (drivers/dma/dmaengine.c,
drivers/dma/dmaengine.h, include/linux/dmaengine.h).

A provider fills a :class:`DmaDevice` (its channels, capability mask and the
``device_prep_dma_memcpy``/``device_issue_pending``/``device_tx_status`` callbacks)
and calls :func:`dma_async_device_register`. A client gets a channel with
:func:`dma_request_chan`, prepares a descriptor, submits it (a cookie), issues
pending work and either waits (:func:`dma_sync_wait`, which runs the virtual
clock) or gets its ``callback``/``callback_result``. Cookie bookkeeping uses the
helpers of drivers/dma/dmaengine.h (``dma_cookie_assign`` ...).

Differences from Linux: no DT/ACPI channel lookup — ``dma_request_chan(dev, name)``
matches a channel name (``dma0chan0``) or, with ``name="memcpy"``, any free
memcpy-capable channel; no channel reference counting beyond one client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

from kernel.context import KernelSlot
from kernel.delay import wait_next_event
from kernel.device import Device
from kernel.errno import EBUSY, EINVAL, ENODEV
from kernel.platform import platform
from kernel.printk import pr_err, pr_info

DMA_MEMCPY = 0
DMA_PREP_INTERRUPT = 1 << 0
DMA_CTRL_ACK = 1 << 1

DMA_COMPLETE = 0
DMA_IN_PROGRESS = 1
DMA_PAUSED = 2
DMA_ERROR = 3

DMA_TRANS_NOERROR = 0
DMA_TRANS_READ_FAILED = 1
DMA_TRANS_WRITE_FAILED = 2
DMA_TRANS_ABORTED = 3

DMA_MIN_COOKIE = 1
SYNC_WAIT_NS = 5_000_000_000


@define
class DmaengineResult:
    """``struct dmaengine_result``."""

    result: int = DMA_TRANS_NOERROR
    residue: int = 0


@define(eq=False)
class DmaAsyncTxDescriptor:
    """``struct dma_async_tx_descriptor``."""

    chan: DmaChan
    tx_submit: Callable[[DmaAsyncTxDescriptor], int]
    flags: int = 0
    cookie: int = 0
    callback: Callable[[Any], None] | None = None
    callback_result: Callable[[Any, DmaengineResult], None] | None = None
    callback_param: Any = None
    priv: Any = None


@define(eq=False)
class DmaChan:
    """``struct dma_chan``."""

    device: DmaDevice
    chan_id: int
    name: str = ""
    cookie: int = DMA_MIN_COOKIE - 1
    completed_cookie: int = DMA_MIN_COOKIE - 1
    client: Device | None = None
    priv: Any = None


@define(eq=False)
class DmaDevice:
    """``struct dma_device``."""

    dev: Device
    cap_mask: set[int] = field(factory=set)
    channels: list[DmaChan] = field(factory=list)
    device_prep_dma_memcpy: (
        Callable[[DmaChan, int, int, int, int], DmaAsyncTxDescriptor | None] | None
    ) = None
    device_issue_pending: Callable[[DmaChan], None] | None = None
    device_tx_status: Callable[[DmaChan, int], int] | None = None
    device_terminate_all: Callable[[DmaChan], None] | None = None
    dev_id: int = -1


@define(eq=False)
class _Registry:
    devices: list[DmaDevice] = field(factory=list)
    next_id: int = 0


_REGISTRY: KernelSlot[_Registry] = KernelSlot("dmaengine", _Registry)


def _reg() -> _Registry:
    """The running kernel's dmaengine registry (created on first use)."""
    return _REGISTRY.get()


# -- cookie helpers (drivers/dma/dmaengine.h) ---------------------------------------


def dma_cookie_init(chan: DmaChan) -> None:
    chan.cookie = chan.completed_cookie = DMA_MIN_COOKIE - 1


def dma_cookie_assign(tx: DmaAsyncTxDescriptor) -> int:
    chan = tx.chan
    chan.cookie = chan.cookie + 1 if chan.cookie + 1 >= DMA_MIN_COOKIE else DMA_MIN_COOKIE
    tx.cookie = chan.cookie
    return tx.cookie


def dma_cookie_complete(tx: DmaAsyncTxDescriptor) -> None:
    if tx.cookie < DMA_MIN_COOKIE:
        raise EINVAL("completing a descriptor that was never submitted")
    tx.chan.completed_cookie = tx.cookie
    tx.cookie = 0


def dma_cookie_status(chan: DmaChan, cookie: int) -> int:
    return DMA_COMPLETE if cookie <= chan.completed_cookie else DMA_IN_PROGRESS


def dmaengine_desc_callback_invoke(tx: DmaAsyncTxDescriptor, result: DmaengineResult) -> None:
    """``dmaengine_desc_get_callback_invoke``: callback_result wins over callback."""
    if tx.callback_result is not None:
        tx.callback_result(tx.callback_param, result)
    elif tx.callback is not None:
        tx.callback(tx.callback_param)


# -- provider ------------------------------------------------------------------------


def dma_async_device_register(device: DmaDevice) -> None:
    """``dma_async_device_register``: name the channels ``dma<N>chan<M>``."""
    if device.device_issue_pending is None or device.device_tx_status is None:
        raise EINVAL("dma device without issue_pending/tx_status")
    if DMA_MEMCPY in device.cap_mask and device.device_prep_dma_memcpy is None:
        raise EINVAL("DMA_MEMCPY capability without device_prep_dma_memcpy")
    if not device.channels:
        raise EINVAL("dma device without channels")
    reg = _reg()
    device.dev_id = reg.next_id
    reg.next_id += 1
    for chan in device.channels:
        chan.name = f"dma{device.dev_id}chan{chan.chan_id}"
        dma_cookie_init(chan)
    reg.devices.append(device)
    pr_info(f"dmaengine: registered dma{device.dev_id} ({len(device.channels)} channels)")


def dma_async_device_unregister(device: DmaDevice) -> None:
    reg = _reg()
    if device in reg.devices:
        for chan in device.channels:
            if chan.client is not None:
                pr_err(f"dmaengine: {chan.name} unregistered while in use")
        reg.devices.remove(device)


# -- client --------------------------------------------------------------------------


def dma_request_chan(dev: Device | None, name: str) -> DmaChan:
    """``dma_request_chan``: by channel name, or any free memcpy channel for "memcpy"."""
    for device in _reg().devices:
        for chan in device.channels:
            if chan.client is not None:
                continue
            if chan.name == name or (name == "memcpy" and DMA_MEMCPY in device.cap_mask):
                chan.client = dev if dev is not None else device.dev
                return chan
    raise ENODEV(f"no DMA channel {name!r}")


def dma_release_channel(chan: DmaChan) -> None:
    if chan.client is None:
        raise EBUSY(f"{chan.name} is not held")
    chan.client = None


def dmaengine_prep_dma_memcpy(
    chan: DmaChan, dest: int, src: int, len: int, flags: int
) -> DmaAsyncTxDescriptor | None:
    """``dmaengine_prep_dma_memcpy`` (dest/src are DMA addresses of the provider's
    device); None when the provider cannot take it."""
    prep = chan.device.device_prep_dma_memcpy
    if prep is None:
        return None
    return prep(chan, dest, src, len, flags)


def dmaengine_submit(desc: DmaAsyncTxDescriptor) -> int:
    """``dmaengine_submit``: the cookie (negative errno on failure, as C)."""
    return desc.tx_submit(desc)


def dma_submit_error(cookie: int) -> bool:
    return cookie < 0


def dma_async_issue_pending(chan: DmaChan) -> None:
    issue = chan.device.device_issue_pending
    assert issue is not None
    issue(chan)


def dmaengine_tx_status(chan: DmaChan, cookie: int) -> int:
    status = chan.device.device_tx_status
    assert status is not None
    return status(chan, cookie)


def dma_async_is_tx_complete(chan: DmaChan, cookie: int) -> int:
    return dmaengine_tx_status(chan, cookie)


def dma_sync_wait(chan: DmaChan, cookie: int) -> int:
    """``dma_sync_wait``: issue pending and poll (advancing the virtual clock) for up
    to 5 s; DMA_ERROR with "dma_sync_wait: timeout!" on timeout."""
    deadline = platform().clock.now + SYNC_WAIT_NS
    dma_async_issue_pending(chan)
    while True:
        status = dmaengine_tx_status(chan, cookie)
        if status != DMA_IN_PROGRESS:
            return status
        if not wait_next_event(deadline):
            pr_err("dma_sync_wait: timeout!")
            return DMA_ERROR


def dmaengine_terminate_sync(chan: DmaChan) -> None:
    term = chan.device.device_terminate_all
    if term is not None:
        term(chan)
