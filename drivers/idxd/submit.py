"""drivers/dma/idxd/submit.c: descriptor allocation and submission.

``idxd_alloc_desc`` takes a free slot (zeroed descriptor and completion record;
the system PASID in ``hw.pasid`` when PASID is enabled); ``idxd_submit_desc``
writes it to the WQ's portal: MOVDIR64B for a dedicated WQ (posted, no status),
ENQCMDS for a shared WQ, retried ``enqcmds_retries`` times and then -EAGAIN with
the descriptor aborted. Descriptors asking for a completion interrupt (RCI) get
the WQ's interrupt handle and go on its pending list.

Differences from Linux: a blocking allocation cannot sleep on a wait queue, so it
advances virtual time (letting completions free slots) for up to
``IDXD_ALLOC_WAIT_US`` before -EAGAIN; the portal offset still rotates by 64
bytes inside the page as Linux's ``idxd_wq_portal_addr`` does.
"""

from __future__ import annotations

from drivers.idxd import registers as regs
from drivers.idxd.idxd import (
    IDXD_COMPLETE_ABORT,
    IDXD_DEV_ENABLED,
    IDXD_OP_NONBLOCK,
    IDXD_WQ_ENABLED,
    IdxdDesc,
    IdxdWq,
)
from kernel.delay import ndelay
from kernel.errno import EAGAIN, EIO
from kernel.io import IoMem, enqcmds, movdir64b
from kernel.mm import memset
from kernel.printk import dev_dbg
from kernel.trace import define_tracepoint
from kernel.uapi.idxd import IDXD_OP_FLAG_RCI, DsaHwDesc

IDXD_ALLOC_WAIT_US = 10_000

trace_idxd_submit = define_tracepoint(
    "idxd:submit",
    ("wq", "desc", "opcode", "pasid", "priv", "insn"),
    "{wq}: desc {desc} opcode={opcode} pasid={pasid} priv={priv} via {insn}",
)


def idxd_alloc_desc(wq: IdxdWq, optype: int = IDXD_OP_NONBLOCK) -> IdxdDesc:
    """``idxd_alloc_desc``: EIO if the device is not enabled, EAGAIN when no slot
    frees up (at once for ``IDXD_OP_NONBLOCK``)."""
    idxd = wq.idxd
    if idxd.state != IDXD_DEV_ENABLED or wq.state != IDXD_WQ_ENABLED:
        raise EIO(f"{wq.name_dev}: not enabled")
    if not wq.free_descs and optype != IDXD_OP_NONBLOCK:
        waited = 0
        while not wq.free_descs and waited < IDXD_ALLOC_WAIT_US:
            ndelay(1000)
            waited += 1
    if not wq.free_descs:
        raise EAGAIN(f"{wq.name_dev}: no free descriptor")
    desc = wq.descs[wq.free_descs.pop(0)]
    desc.in_use = True
    desc.hw = DsaHwDesc()
    desc.completion = None
    desc.status = 0
    desc.txd = None
    memset(desc.compl_vaddr, 0, 32)
    if idxd.pasid_enabled:
        desc.hw.pasid = idxd.pasid
    return desc


def idxd_free_desc(wq: IdxdWq, desc: IdxdDesc) -> None:
    """``idxd_free_desc``: give an unsubmitted slot back."""
    if desc.in_use:
        desc.in_use = False
        wq.free_descs.append(desc.id)


def idxd_wq_portal_addr(wq: IdxdWq) -> IoMem:
    """``idxd_wq_portal_addr``: next 64-byte slot of the portal page."""
    assert wq.portal is not None
    addr = wq.portal + wq.portal_offset
    wq.portal_offset = (wq.portal_offset + 64) & (regs.IDXD_PORTAL_SIZE - 1)
    return addr


def idxd_enqcmds(wq: IdxdWq, portal: IoMem, data: bytes) -> int:
    """``idxd_enqcmds``: ENQCMDS retried up to ``wq.enqcmds_retries`` times;
    0 or -EAGAIN."""
    retries = 0
    while True:
        rc = enqcmds(portal, data)
        if rc == 0:
            return 0
        if retries >= wq.enqcmds_retries:
            return rc
        retries += 1
        wq.enqcmds_retried += 1


def idxd_submit_desc(wq: IdxdWq, desc: IdxdDesc) -> None:
    """``idxd_submit_desc``: EIO if the device or WQ is down; EAGAIN (descriptor
    aborted and freed) when ENQCMDS keeps being refused."""
    from drivers.idxd.irq import idxd_desc_complete

    idxd = wq.idxd
    if idxd.state != IDXD_DEV_ENABLED or wq.state != IDXD_WQ_ENABLED or wq.portal is None:
        idxd_free_desc(wq, desc)
        raise EIO(f"{wq.name_dev}: not enabled")
    portal = idxd_wq_portal_addr(wq)
    hw = desc.hw
    if hw.flags & IDXD_OP_FLAG_RCI:
        assert wq.ie is not None
        hw.int_handle = wq.ie.int_handle
        wq.ie.pending.append(desc)
    elif wq.ie is not None:
        wq.ie.pending.append(desc)  # polled; the list is also the driver's in-flight set
    data = hw.to_bytes()
    if wq.dedicated:
        insn = "movdir64b"
        movdir64b(portal, data)
    else:
        insn = "enqcmds"
        if idxd_enqcmds(wq, portal, data):
            dev_dbg(idxd.pdev, f"{wq.name_dev}: ENQCMDS retries exhausted")
            idxd_desc_complete(desc, IDXD_COMPLETE_ABORT)
            raise EAGAIN(f"{wq.name_dev}: ENQCMDS refused {wq.enqcmds_retries + 1} times")
    wq.submitted += 1
    trace_idxd_submit(
        wq=wq.name_dev, desc=desc.id, opcode=hw.opcode, pasid=hw.pasid, priv=hw.priv, insn=insn
    )
