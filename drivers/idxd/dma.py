"""drivers/dma/idxd/dma.c: the dmaengine provider (memcpy on kernel WQs).

Each enabled kernel WQ whose ``driver_name`` is ``dmaengine`` gets a channel; a
client maps its buffers against the DSA PCI device (so the addresses are IOVAs
of its default domain, or physical addresses under dma-direct), prepares a
memcpy, submits it (the descriptor goes to the portal at once, as Linux's
``idxd_dma_tx_submit`` does) and gets its callback from the completion interrupt.

Completion result (``idxd_dma_complete_txd``): success → DMA_TRANS_NOERROR; any
other status → DMA_TRANS_WRITE_FAILED with the residue, and the status, fault
address and bytes completed logged; aborted → DMA_TRANS_ABORTED. The raw
completion record stays available as ``tx.priv.completion``.

Differences from Linux: one ``dma_device`` per WQ (the dmaengine core here names
channels when a device registers, so a device cannot grow channels later);
``device_tx_status`` polls the completion records and returns DMA_COMPLETE /
DMA_IN_PROGRESS instead of always DMA_OUT_OF_ORDER, so polling clients work.
"""

from __future__ import annotations

from drivers.idxd import registers as regs
from drivers.idxd.device import idxd_wq_kernel_priv
from drivers.idxd.idxd import (
    IDXD_COMPLETE_ABORT,
    IDXD_COMPLETE_NORMAL,
    IDXD_OP_NONBLOCK,
    IDXD_WQT_KERNEL,
    IdxdDesc,
    IdxdWq,
)
from drivers.idxd.irq import idxd_wq_process_completions
from drivers.idxd.submit import idxd_alloc_desc, idxd_free_desc, idxd_submit_desc
from kernel.dma.dmaengine import (
    DMA_MEMCPY,
    DMA_PREP_INTERRUPT,
    DMA_TRANS_ABORTED,
    DMA_TRANS_WRITE_FAILED,
    DmaAsyncTxDescriptor,
    DmaChan,
    DmaDevice,
    DmaengineResult,
    dma_async_device_register,
    dma_async_device_unregister,
    dma_cookie_assign,
    dma_cookie_complete,
    dma_cookie_status,
    dmaengine_desc_callback_invoke,
)
from kernel.errno import KernelError
from kernel.printk import dev_err
from kernel.uapi.idxd import (
    DSA_COMP_STATUS_MASK,
    DSA_COMP_STATUS_WRITE,
    DSA_COMP_SUCCESS,
    DSA_OPCODE_MEMMOVE,
    IDXD_OP_FLAG_CRAV,
    IDXD_OP_FLAG_RCI,
    IDXD_OP_FLAG_RCR,
    dsa_completion_status,
)


def _status_name(status: int) -> str:
    code = status & DSA_COMP_STATUS_MASK
    try:
        name = dsa_completion_status(code).name
    except ValueError:
        name = "unknown"
    return name + (" (write)" if status & DSA_COMP_STATUS_WRITE else "")


def idxd_dma_complete_txd(desc: IdxdDesc) -> None:
    """``idxd_dma_complete_txd``: map the completion to a dmaengine result, complete
    the cookie and run the client's callback."""
    tx = desc.txd
    if tx is None:
        return
    comp = desc.completion
    assert comp is not None
    status = comp.status & DSA_COMP_STATUS_MASK
    result = DmaengineResult()
    if desc.reason == IDXD_COMPLETE_ABORT:
        result.result = DMA_TRANS_ABORTED
        result.residue = desc.len
    elif desc.reason != IDXD_COMPLETE_NORMAL or status != DSA_COMP_SUCCESS:
        result.result = DMA_TRANS_WRITE_FAILED
        result.residue = desc.len - comp.bytes_completed
        dev_err(
            desc.wq.idxd.pdev,
            f"{desc.wq.name_dev}: memcpy failed: status {comp.status:#04x} "
            f"({_status_name(comp.status)}), fault addr {comp.fault_addr:#x}, "
            f"{comp.bytes_completed} of {desc.len} bytes done",
        )
    dma_cookie_complete(tx)
    dmaengine_desc_callback_invoke(tx, result)


def idxd_dma_tx_submit(tx: DmaAsyncTxDescriptor) -> int:
    """``idxd_dma_tx_submit``: cookie, then the portal write; a refused submission
    returns the negative errno (no callback runs for it)."""
    desc = tx.priv
    assert isinstance(desc, IdxdDesc)
    cookie = dma_cookie_assign(tx)
    try:
        idxd_submit_desc(desc.wq, desc)
    except KernelError as err:
        idxd_free_desc(desc.wq, desc)
        return -err.errno
    desc.callback = idxd_dma_complete_txd
    return cookie


def idxd_dma_submit_memcpy(
    chan: DmaChan, dma_dest: int, dma_src: int, len: int, flags: int
) -> DmaAsyncTxDescriptor | None:
    """``idxd_dma_submit_memcpy``: a MEMMOVE descriptor with CRAV|RCR (and RCI if
    the client asked for an interrupt); None if too long or no slot is free."""
    wq = chan.priv
    assert isinstance(wq, IdxdWq)
    if len > 1 << wq.max_xfer_shift:
        return None
    try:
        desc = idxd_alloc_desc(wq, IDXD_OP_NONBLOCK)
    except KernelError:
        return None
    hw = desc.hw
    hw.flags = IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR
    if flags & DMA_PREP_INTERRUPT:
        hw.flags |= IDXD_OP_FLAG_RCI
    hw.opcode = DSA_OPCODE_MEMMOVE
    hw.src_addr = dma_src
    hw.dst_addr = dma_dest
    hw.xfer_size = len
    hw.priv = idxd_wq_kernel_priv(wq.idxd)
    hw.completion_addr = desc.compl_dma
    desc.len = len
    tx = DmaAsyncTxDescriptor(chan, idxd_dma_tx_submit, flags=flags, priv=desc)
    desc.txd = tx
    return tx


def idxd_dma_issue_pending(chan: DmaChan) -> None:
    """``idxd_dma_issue_pending``: nothing to do, submission happened at tx_submit."""


def idxd_dma_tx_status(chan: DmaChan, cookie: int) -> int:
    """Poll the WQ's completion records, then the cookie state."""
    wq = chan.priv
    assert isinstance(wq, IdxdWq)
    idxd_wq_process_completions(wq)
    return dma_cookie_status(chan, cookie)


def idxd_wq_register_dmaengine(wq: IdxdWq) -> None:
    """``idxd_register_dma_channel`` for a kernel WQ bound to ``dmaengine``."""
    if wq.type != IDXD_WQT_KERNEL or wq.driver_name != "dmaengine" or wq.dma_dev is not None:
        return
    idxd = wq.idxd
    dd = DmaDevice(
        dev=idxd.pdev,
        device_prep_dma_memcpy=idxd_dma_submit_memcpy,
        device_issue_pending=idxd_dma_issue_pending,
        device_tx_status=idxd_dma_tx_status,
    )
    if any(w & regs.IDXD_OPCAP_MEMMOVE for w in idxd.hw.opcap[:1]):
        dd.cap_mask.add(DMA_MEMCPY)
    chan = DmaChan(dd, 0, priv=wq)
    dd.channels.append(chan)
    dma_async_device_register(dd)
    wq.dma_dev, wq.dma_chan = dd, chan


def idxd_unregister_dma_channel(wq: IdxdWq) -> None:
    if wq.dma_dev is not None:
        dma_async_device_unregister(wq.dma_dev)
        wq.dma_dev = wq.dma_chan = None
