"""drivers/dma/idxd/irq.c: the misc interrupt (command completion, software
errors, halt) and the per-WQ completion interrupt.

The misc handler loops on INTCAUSE (read, write back to clear, act) until it
reads 0. A software error reads the four SWERR qwords, acknowledges valid and
overflow, logs them and fails the descriptors whose descriptor or completion
address is the reported fault address. A halt that a software reset can leave
schedules ``idxd_device_reinit`` as deferred work (a zero-delay timer: the work
runs as its own event, after the interrupt returns); other halt types log that
an FLR or system reset is needed and abort the outstanding work.

Completion interrupts walk the WQ's pending list and complete every descriptor
whose completion record status is non-zero (``irq_process_pending_llist`` and
``irq_process_work_list`` are one list here).
"""

from __future__ import annotations

from typing import Any

from drivers.idxd import registers as regs
from drivers.idxd.idxd import (
    IDXD_COMPLETE_ABORT,
    IDXD_COMPLETE_DEV_FAIL,
    IDXD_COMPLETE_NORMAL,
    IDXD_DEV_HALTED,
    IDXD_WQ_DISABLED,
    IDXD_WQ_ENABLED,
    IdxdDesc,
    IdxdDevice,
    IdxdIrqEntry,
    IdxdWq,
)
from kernel.delay import complete, jiffies, mod_timer, timer_setup
from kernel.errno import KernelError
from kernel.irq import IRQ_HANDLED, IRQ_NONE
from kernel.mm import memory_read
from kernel.printk import dev_err, dev_warn
from kernel.trace import define_tracepoint
from kernel.uapi.idxd import DSA_COMP_STATUS_MASK, DsaCompletionRecord

trace_idxd_complete = define_tracepoint(
    "idxd:complete",
    ("wq", "desc", "status", "reason"),
    "{wq}: desc {desc} status={status} reason={reason}",
)


def idxd_desc_read_completion(desc: IdxdDesc) -> DsaCompletionRecord:
    return DsaCompletionRecord.from_bytes(memory_read(desc.compl_vaddr, 32))


def idxd_desc_complete(desc: IdxdDesc, reason: int) -> None:
    """``idxd_desc_complete`` + ``idxd_free_desc``: record the outcome, run the
    completion callback (dmaengine), and give the slot back."""
    wq = desc.wq
    comp = idxd_desc_read_completion(desc)
    desc.completion = comp
    desc.status = comp.status
    desc.reason = reason
    if wq.ie is not None and desc in wq.ie.pending:
        wq.ie.pending.remove(desc)
    wq.completed += 1
    status = comp.status & DSA_COMP_STATUS_MASK
    if reason != IDXD_COMPLETE_NORMAL or status != 1:
        wq.errors += 1
    trace_idxd_complete(wq=wq.name_dev, desc=desc.id, status=comp.status, reason=reason)
    cb = desc.callback
    desc.callback = None
    desc.in_use = False
    wq.free_descs.append(desc.id)
    if cb is not None:
        cb(desc)


def idxd_wq_process_completions(wq: IdxdWq) -> int:
    """Complete every pending descriptor of ``wq`` whose record has a status."""
    if wq.ie is None:
        return 0
    done = 0
    for desc in list(wq.ie.pending):
        if memory_read(desc.compl_vaddr, 1)[0]:
            idxd_desc_complete(desc, IDXD_COMPLETE_NORMAL)
            done += 1
    return done


def idxd_wq_thread(irq: int, ie: Any) -> int:
    """``idxd_wq_thread``: the per-WQ completion interrupt (threaded part)."""
    assert isinstance(ie, IdxdIrqEntry)
    if not ie.pending:
        return IRQ_NONE
    wq = ie.pending[0].wq
    idxd_wq_process_completions(wq)
    return IRQ_HANDLED


def idxd_flush_pending_descs(ie: IdxdIrqEntry) -> None:
    """``idxd_flush_pending_descs``: complete the rest as aborted."""
    for desc in list(ie.pending):
        idxd_desc_complete(desc, IDXD_COMPLETE_ABORT)


# -- misc interrupt ---------------------------------------------------------------------


def _fail_matching(idxd: IdxdDevice, fault_addr: int) -> None:
    """``idxd_device_fault_work``/``match_fault``: descriptors whose completion
    record (or source/destination) is the faulting address complete DEV_FAIL."""
    for wq in idxd.wqs:
        for desc in list(wq.descs):
            hw = desc.hw
            if desc.in_use and fault_addr in (desc.compl_dma, hw.src_addr, hw.dst_addr):
                idxd_desc_complete(desc, IDXD_COMPLETE_DEV_FAIL)


def _process_swerr(idxd: IdxdDevice) -> None:
    reg = idxd.reg_base
    assert reg is not None
    words = tuple(reg.readq(regs.IDXD_SWERR_OFFSET + 8 * i) for i in range(4))
    idxd.sw_err = (words[0], words[1], words[2], words[3])
    idxd.swerr_count += 1
    reg.writeq(regs.SWERR_VALID.mask | regs.SWERR_OVERFLOW.mask, regs.IDXD_SWERR_OFFSET)
    err = regs.SWERR_ERROR.get(words[0])
    where = ""
    if regs.SWERR_WQ_IDX_VALID.get(words[0]):
        where = f" wq {regs.SWERR_WQ_IDX.get(words[0])}"
    dev_warn(idxd.pdev, f"idxd: software error {err:#x}{where}")
    for i, w in enumerate(words):
        dev_warn(idxd.pdev, f"err[{i}]: {w:#018x}")
    if regs.SWERR_DESC_VALID.get(words[0]) and words[2]:
        _fail_matching(idxd, words[2])


def idxd_device_reinit(idxd: IdxdDevice) -> None:
    """``idxd_device_reinit``: reset, rewrite the configuration, enable the device
    and every WQ that was enabled before the halt (dmaengine channels stay
    registered across it); on failure the device stays halted."""
    from drivers.idxd.device import (
        idxd_abort_descs,
        idxd_device_drv_probe,
        idxd_device_reset,
        idxd_drv_enable_wq,
        idxd_wq_free_irq,
        idxd_wq_free_resources,
        idxd_wq_unmap_portal,
    )

    was = [wq for wq in idxd.wqs if wq.state == IDXD_WQ_ENABLED]
    for wq in was:
        idxd_abort_descs(wq)
        idxd_wq_unmap_portal(wq)
        idxd_wq_free_irq(wq)
        idxd_wq_free_resources(wq)
        wq.state = IDXD_WQ_DISABLED
    try:
        idxd_device_reset(idxd)
        idxd_device_drv_probe(idxd)
        for wq in was:
            idxd_drv_enable_wq(wq)
    except KernelError as err:
        dev_err(idxd.pdev, f"idxd: device reinit failed ({err})")
        idxd.state = IDXD_DEV_HALTED
        return
    dev_warn(idxd.pdev, "idxd: device recovered from halt by software reset")


def _process_halt(idxd: IdxdDevice) -> None:
    from drivers.idxd.device import idxd_abort_descs

    reg = idxd.reg_base
    assert reg is not None
    gensts = reg.readl(regs.IDXD_GENSTATS_OFFSET)
    if regs.GENSTS_STATE.get(gensts) != regs.IDXD_DEVICE_STATE_HALT:
        return
    idxd.halts += 1
    idxd.state = IDXD_DEV_HALTED
    reset_type = regs.GENSTS_RESET_TYPE.get(gensts)
    if reset_type == regs.IDXD_DEVICE_RESET_SOFTWARE:
        dev_err(idxd.pdev, "idxd halted, doing software reset")
        t = timer_setup(lambda _t: idxd_device_reinit(idxd))
        idxd.reinit_timer = t
        mod_timer(t, jiffies())
        return
    dev_err(idxd.pdev, "idxd halted, need FLR/system reset" if reset_type else "idxd halted")
    for wq in idxd.wqs:
        idxd_abort_descs(wq)


def idxd_misc_thread(irq: int, ie: Any) -> int:
    """``idxd_misc_thread``: the INTCAUSE loop."""
    idxd = ie
    assert isinstance(idxd, IdxdDevice)
    reg = idxd.reg_base
    assert reg is not None
    handled = False
    while cause := reg.readl(regs.IDXD_INTCAUSE_OFFSET):
        reg.writel(cause, regs.IDXD_INTCAUSE_OFFSET)
        handled = True
        if cause & regs.IDXD_INTC_ERR:
            _process_swerr(idxd)
        if cause & regs.IDXD_INTC_CMD:
            complete(idxd.cmd_done)
        if cause & regs.IDXD_INTC_HALT_STATE:
            _process_halt(idxd)
    return IRQ_HANDLED if handled else IRQ_NONE
