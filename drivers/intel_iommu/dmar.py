"""One remapping unit at register level (drivers/iommu/intel/dmar.c, and the register-based
flush helpers of iommu.c).

* ``alloc_iommu``/``free_iommu``: map the DRHD register window (``ioremap`` of the
  firmware register base), read VER/CAP/ECAP, derive AGAW and ``max_pasids``.
* Register handshakes (``IOMMU_WAIT_OP``) poll with ``readx_poll_timeout`` on the
  virtual clock; a unit that never answers raises ETIMEDOUT where Linux panics
  ("DMAR hardware is malfunctioning").
* Queued invalidation: ``dmar_enable_qi``/``dmar_disable_qi`` and ``qi_submit_sync``
  with the wait-descriptor protocol: the batch, one Invalidation Wait with
  status write of ``QI_DONE`` into ``desc_status[wait_index]``, IQT, then poll the
  status word and FSTS. An invalid descriptor (IQE) is logged, its slot is
  overwritten with the wait descriptor, IQE is cleared and -EINVAL returned, as
  Linux does.
* Fault reporting: ``dmar_fault`` reads and clears the fault recording registers
  and prints each fault with Linux's reason strings, rate-limited as ``dmar_fault``
  is; ``dmar_set_interrupt`` gets an interrupt vector and programs its MSI
  message into FEDATA/FEADDR.

Differences from Linux: ``qi_submit_sync`` spins as C does (``cpu_relax``) but each
poll jumps to the next clock event (:func:`kernel.delay.wait_next_event`), so it sees
the wait descriptor complete at the instant the unit writes it; it gives up after ``QI_TIMEOUT_US``
with -ETIMEDOUT, re-initialising the queue (C waits forever: a unit that stops processing the queue
hangs the CPU); an IQE at any descriptor of the batch is handled (C only handles
one at the batch's first slot); invalidation time-out and completion errors
(ITE, ICE) are not handled because the model never raises them; register waits time
out after 10 ms of virtual time; functions return 0 or a negative
errno where C does, and raise :class:`KernelError` where C returns ``-errno`` from
an allocating path.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Sequence

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.structs import DmarState, DrhdUnit, IntelIommu, QInval
from kernel.context import KernelSlot, current
from kernel.delay import ktime_get_ns, readx_poll_timeout, wait_next_event
from kernel.errno import EINVAL, ENODEV, ENOENT, ENOMEM, ETIMEDOUT, KernelError
from kernel.io import ioremap, iounmap
from kernel.irq import IRQ_HANDLED, free_irq, irq_alloc, irq_free, request_irq
from kernel.mm import (
    __GFP_ZERO,
    GFP_ATOMIC,
    GFP_KERNEL,
    PAGE_OFFSET,
    __get_free_pages,
    current_mm,
    free_pages,
    kcalloc,
    kfree,
    kzalloc,
    memory_read,
    memory_write,
    virt_to_phys,
)
from kernel.printk import KERN_WARNING, RateLimit, pr_err, pr_info, printk
from kernel.trace import define_tracepoint

DMAR_OPERATION_TIMEOUT_US = 10_000
"""``DMAR_OPERATION_TIMEOUT``: 10 ms of virtual time (C: ``tsc_khz * 10 * 1000`` cycles,
10 s); the model answers a register command within 100 ns."""
QI_TIMEOUT_US = 1_000_000
"""How long ``qi_submit_sync`` waits for its wait descriptor (C: forever)."""

QiDesc = tuple[int, int, int, int]
"""``struct qi_desc``: qw0..qw3 (qw2/qw3 only exist with 256-bit descriptors)."""
_QI_IWD_DONE = ir.QI_IWD_STATUS_DATA(ir.QI_DONE) | ir.QI_IWD_STATUS_WRITE | ir.QI_IWD_TYPE
"""qw0 of the Invalidation Wait descriptor ``qi_submit_sync`` appends (status write of
QI_DONE)."""
_PIOTLB_PSI = ir.QI_EIOTLB_GRAN(ir.QI_GRAN_PSI_PASID) | ir.QI_EIOTLB_TYPE
"""The granularity and type bits of a page-selective-within-PASID P_IOTLB descriptor."""
_QLEN = ir.QI_LENGTH
_IQ_SHIFT = ir.DMAR_IQ_SHIFT
_DONE = ir.QI_DONE
_IQT_REG = ir.DMAR_IQT_REG
_QI_FREE_WORD = struct.pack("<I", ir.QI_FREE)
_QI_IN_USE_WORD = struct.pack("<I", ir.QI_IN_USE)
_QI_DONE_WORD = struct.pack("<I", ir.QI_DONE)
_QI_RUN = ir.QI_MAX_BATCHED_DESC_COUNT + 1
"""The status words of a submission of up to a full batch (and its wait) are taken
from these tables, made once: a bytes repeat on every submission is a cold path of
the interpreter (~1% of the strict pair)."""
_QI_IN_USE_WORDS = tuple(_QI_IN_USE_WORD * n for n in range(_QI_RUN + 1))
_QI_FREE_WORDS = tuple(_QI_FREE_WORD * n for n in range(_QI_RUN + 1))

trace_qi_submit = define_tracepoint(
    "intel_iommu:qi_submit",
    ("iommu", "type", "qw0", "qw1", "qw2", "qw3"),
    "{type} {iommu}: {qw0} {qw1} {qw2} {qw3}",
)


_STATE: KernelSlot[DmarState] = KernelSlot("intel_iommu", DmarState)


def dmar_state() -> DmarState:
    """The driver's globals for the running kernel (created on first use)."""
    return _STATE.get()


# --------------------------------------------------------------------------- capabilities


def sm_supported(iommu: IntelIommu) -> bool:
    """``sm_supported``: scalable mode is on and the unit has SMTS."""
    return iommu.sm


def pasid_supported(iommu: IntelIommu) -> bool:
    """``pasid_supported``: scalable mode and ECAP.PASID."""
    return iommu.sm and bool(ir.ecap_pasid(iommu.ecap))


def __iommu_calculate_sagaw(iommu: IntelIommu) -> int:
    """``__iommu_calculate_sagaw``: first-stage widths (4-level, 5-level with FL5LP)
    intersected with CAP.SAGAW when both stages exist."""
    fl_sagaw = (1 << 2) | ((1 << 3) if ir.cap_fl5lp_support(iommu.cap) else 0)
    sl_sagaw = ir.cap_sagaw(iommu.cap)
    if not iommu.sm or not ir.ecap_flts(iommu.ecap):
        return sl_sagaw
    if not ir.ecap_slts(iommu.ecap):
        return fl_sagaw
    return fl_sagaw & sl_sagaw


def __iommu_calculate_agaw(iommu: IntelIommu, max_gaw: int) -> int:
    sagaw = __iommu_calculate_sagaw(iommu)
    agaw = ir.width_to_agaw(max_gaw)
    while agaw >= 0:
        if (sagaw >> agaw) & 1:
            break
        agaw -= 1
    return agaw


DEFAULT_DOMAIN_ADDRESS_WIDTH = 57


def iommu_calculate_agaw(iommu: IntelIommu) -> int:
    """``iommu_calculate_agaw``: the largest supported AGAW up to 57 bits."""
    return __iommu_calculate_agaw(iommu, DEFAULT_DOMAIN_ADDRESS_WIDTH)


def iommu_calculate_max_sagaw(iommu: IntelIommu) -> int:
    return __iommu_calculate_agaw(iommu, ir.MAX_AGAW_WIDTH)


# --------------------------------------------------------------------------- register waits


def IOMMU_WAIT_OP(
    iommu: IntelIommu, offset: int, op: Callable[[int], int], cond: Callable[[int], bool]
) -> int:
    """``IOMMU_WAIT_OP``: poll a register until ``cond``; ETIMEDOUT after
    DMAR_OPERATION_TIMEOUT (C panics)."""
    try:
        return readx_poll_timeout(lambda: op(offset), cond, 1, DMAR_OPERATION_TIMEOUT_US)
    except ETIMEDOUT:
        pr_err("DMAR hardware is malfunctioning")
        raise


def dmar_readl(iommu: IntelIommu, offset: int) -> int:
    return iommu.regs.readl(offset)


def dmar_readq(iommu: IntelIommu, offset: int) -> int:
    return iommu.regs.readq(offset)


def dmar_writeq(iommu: IntelIommu, offset: int, value: int) -> None:
    iommu.regs.writeq(value, offset)


def iommu_flush_write_buffer(iommu: IntelIommu) -> None:
    """``iommu_flush_write_buffer``: GCMD.WBF and wait for WBFS to clear (RWBF only)."""
    if not ir.cap_rwbf(iommu.cap):
        return
    reg = iommu.regs
    reg.writel(iommu.gcmd | ir.DMA_GCMD_WBF, ir.DMAR_GCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: not v & ir.DMA_GSTS_WBFS)


def __iommu_flush_context(iommu: IntelIommu, did: int, source_id: int, fm: int, type: int) -> None:
    """``__iommu_flush_context``: register-based context-cache invalidation (CCMD)."""
    if type == ir.DMA_CCMD_GLOBAL_INVL:
        val = ir.DMA_CCMD_GLOBAL_INVL
    elif type == ir.DMA_CCMD_DOMAIN_INVL:
        val = ir.DMA_CCMD_DOMAIN_INVL | ir.DMA_CCMD_DID(did)
    elif type == ir.DMA_CCMD_DEVICE_INVL:
        val = (
            ir.DMA_CCMD_DEVICE_INVL
            | ir.DMA_CCMD_DID(did)
            | ir.DMA_CCMD_SID(source_id)
            | ir.DMA_CCMD_FM(fm)
        )
    else:
        pr_warn_unexpected(iommu, "context-cache", type)
        return
    val |= ir.DMA_CCMD_ICC
    reg = iommu.regs
    reg.writeq(val, ir.DMAR_CCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_CCMD_REG, reg.readq, lambda v: not v & ir.DMA_CCMD_ICC)


def pr_warn_unexpected(iommu: IntelIommu, what: str, type: int) -> None:
    printk(KERN_WARNING, f"DMAR: {iommu.name}: Unexpected {what} invalidation type {type:#x}")


def __iommu_flush_iotlb(iommu: IntelIommu, did: int, addr: int, size_order: int, type: int) -> None:
    """``__iommu_flush_iotlb``: register-based IOTLB invalidation (IVA/IOTLB at ECAP.IRO)."""
    tlb_offset = ir.ecap_iotlb_offset(iommu.ecap)
    val_iva = 0
    if type == ir.DMA_TLB_GLOBAL_FLUSH:
        val = ir.DMA_TLB_GLOBAL_FLUSH | ir.DMA_TLB_IVT
    elif type == ir.DMA_TLB_DSI_FLUSH:
        val = ir.DMA_TLB_DSI_FLUSH | ir.DMA_TLB_IVT | ir.DMA_TLB_DID(did)
    elif type == ir.DMA_TLB_PSI_FLUSH:
        val = ir.DMA_TLB_PSI_FLUSH | ir.DMA_TLB_IVT | ir.DMA_TLB_DID(did)
        val_iva = size_order | addr
    else:
        pr_warn_unexpected(iommu, "iotlb", type)
        return
    if ir.cap_write_drain(iommu.cap):
        val |= ir.DMA_TLB_WRITE_DRAIN
    reg = iommu.regs
    if val_iva:
        reg.writeq(val_iva, tlb_offset)
    reg.writeq(val, tlb_offset + 8)
    val = IOMMU_WAIT_OP(iommu, tlb_offset + 8, reg.readq, lambda v: not v & ir.DMA_TLB_IVT)
    if ir.DMA_TLB_IAIG(val) == 0:
        pr_err("DMAR: Flush IOTLB failed")


# --------------------------------------------------------------------------- alloc_iommu


def map_iommu(iommu: IntelIommu, drhd: DrhdUnit) -> None:
    """``map_iommu``: map one page of registers, read CAP/ECAP, remap if the fault
    recording or IOTLB registers lie beyond it."""
    iommu.reg_phys = drhd.register_base
    iommu.reg_size = ir.VTD_PAGE_SIZE
    iommu.reg = ioremap(iommu.reg_phys, iommu.reg_size)
    iommu.cap = dmar_readq(iommu, ir.DMAR_CAP_REG)
    iommu.ecap = dmar_readq(iommu, ir.DMAR_ECAP_REG)
    if iommu.cap == (1 << 64) - 1 and iommu.ecap == (1 << 64) - 1:
        pr_err(f"DMAR: IOMMU: {iommu.name}: reg_base_addr {drhd.register_base:x} returns all ones")
        unmap_iommu(iommu)
        raise ENODEV(f"{iommu.name}: no registers at {drhd.register_base:#x}")
    map_size = max(ir.ecap_max_iotlb_offset(iommu.ecap), ir.cap_max_fault_reg_offset(iommu.cap))
    map_size = (map_size + ir.VTD_PAGE_SIZE - 1) & ~(ir.VTD_PAGE_SIZE - 1)
    if map_size > iommu.reg_size:
        iounmap(iommu.reg)
        iommu.reg_size = map_size
        iommu.reg = ioremap(iommu.reg_phys, iommu.reg_size)


def unmap_iommu(iommu: IntelIommu) -> None:
    if iommu.reg is not None:
        iounmap(iommu.reg)
        iommu.reg = None


def dmar_alloc_seq_id(st: DmarState) -> int:
    used = {u.seq_id for u in st.units}
    return next(i for i in range(len(used) + 1) if i not in used)


def alloc_iommu(drhd: DrhdUnit) -> IntelIommu:
    """``alloc_iommu``: a ``struct intel_iommu`` for one DRHD, registers mapped and
    capabilities decoded. Prints the unit line Linux prints."""
    st = dmar_state()
    kmem = kzalloc(1024, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("alloc_iommu")
    seq_id = dmar_alloc_seq_id(st)
    iommu = IntelIommu(name=f"dmar{seq_id}", seq_id=seq_id, drhd=drhd, kmem=kmem)
    try:
        map_iommu(iommu, drhd)
    except KernelError:
        pr_err(f"DMAR: Failed to map {iommu.name}")
        kfree(kmem)
        raise
    iommu.sm = st.intel_iommu_sm and bool(ir.ecap_smts(iommu.ecap))
    agaw = iommu_calculate_agaw(iommu)
    msagaw = iommu_calculate_max_sagaw(iommu)
    if agaw < 0 or msagaw < 0:
        what = "agaw" if agaw < 0 else "max agaw"
        pr_err(f"DMAR: Cannot get a valid {what} for iommu (seq_id = {seq_id})")
        unmap_iommu(iommu)
        kfree(kmem)
        raise EINVAL(
            f"{iommu.name}: no usable address width (CAP.SAGAW {ir.cap_sagaw(iommu.cap):#x})"
        )
    iommu.agaw = agaw
    iommu.msagaw = msagaw
    iommu.segment = drhd.segment
    if pasid_supported(iommu):
        iommu.max_pasids = 2 << ir.ecap_pss(iommu.ecap)
    ver = dmar_readl(iommu, ir.DMAR_VER_REG)
    pr_info(
        f"DMAR: {iommu.name}: reg_base_addr {drhd.register_base:x} ver "
        f"{ir.DMAR_VER_MAJOR(ver)}:{ir.DMAR_VER_MINOR(ver)} cap {iommu.cap:x} ecap {iommu.ecap:x}"
    )
    sts = dmar_readl(iommu, ir.DMAR_GSTS_REG)
    if sts & ir.DMA_GSTS_TES:
        iommu.gcmd |= ir.DMA_GCMD_TE
    if sts & ir.DMA_GSTS_QIES:
        iommu.gcmd |= ir.DMA_GCMD_QIE
    st.units.append(iommu)
    return iommu


def free_iommu(iommu: IntelIommu) -> None:
    """``free_iommu``: interrupt, queue, registers, the structure."""
    st = dmar_state()
    if iommu.irq:
        free_irq(iommu.irq, iommu)
        irq_free(iommu.irq)
        iommu.irq = 0
    qi = iommu.qi
    if qi is not None:
        free_pages(qi.desc, qi.desc_order)
        kfree(qi.desc_status)
        kfree(qi.kmem)
        iommu.qi = None
    unmap_iommu(iommu)
    if iommu in st.units:
        st.units.remove(iommu)
    kfree(iommu.kmem)
    iommu.kmem = 0


def dmar_free_units() -> None:
    """The last step of the model's shutdown for the units ``dmar_table_init`` set up
    at early boot: queue off, then ``free_iommu`` for each (Linux never frees them)."""
    st = dmar_state()
    for iommu in reversed(list(st.units)):
        dmar_disable_qi(iommu)
        free_iommu(iommu)
    st.table_parsed = False


# --------------------------------------------------------------------------- queued invalidation


def qi_shift(iommu: IntelIommu) -> int:
    """``qi_shift``: 128-bit descriptors, 256-bit when the unit has SMTS."""
    return ir.DMAR_IQ_SHIFT + ir.ecap_smts(iommu.ecap)


def _status_addr(qi: QInval, index: int) -> int:
    return qi.desc_status + 4 * index


def reclaim_free_desc(qi: QInval) -> None:
    """``reclaim_free_desc``: hand back every completed slot from ``free_tail`` on.
    The slots in use are read with one load (two when they wrap) and the completed
    ones freed with one store; slots outside the in-use run are always QI_FREE, so
    this stops where C's slot-by-slot loop stops."""
    mem = current_mm().mem
    status = qi.desc_status - PAGE_OFFSET
    while True:
        tail = qi.free_tail
        n = min(ir.QI_LENGTH - qi.free_cnt, ir.QI_LENGTH - tail)
        if not n:
            return
        done = 0
        for word in struct.unpack(f"<{n}I", mem.read(status + 4 * tail, 4 * n)):
            if word != ir.QI_DONE and word != ir.QI_ABORT:
                break
            done += 1
        if done:
            mem.write(status + 4 * tail, _QI_FREE_WORD * done)
            qi.free_tail = (tail + done) % ir.QI_LENGTH
            qi.free_cnt += done
        if done < n:
            return


def qi_check_fault(iommu: IntelIommu, index: int, wait_index: int, count: int) -> int:
    """``qi_check_fault``: an IQE on one of this batch's descriptors is logged, the slot
    is replaced by the wait descriptor so the queue can drain, IQE cleared, -EINVAL."""
    qi = iommu.qi
    assert qi is not None
    fault = dmar_readl(iommu, ir.DMAR_FSTS_REG)
    if fault & ir.DMA_FSTS_IQE:
        shift = qi_shift(iommu)
        head = dmar_readl(iommu, ir.DMAR_IQH_REG) >> shift
        if (head - index) % ir.QI_LENGTH < count:
            iqe = dmar_readq(iommu, ir.DMAR_IQER_REG)
            pr_err(f"DMAR: VT-d detected Invalidation Queue Error: Reason {iqe & 0xF:x}")
            raw = memory_read(qi.desc + (head << shift), 16)
            qw0 = int.from_bytes(raw[:8], "little")
            qw1 = int.from_bytes(raw[8:], "little")
            pr_err(f"DMAR: VT-d detected invalid descriptor: qw0 = {qw0:x}, qw1 = {qw1:x}")
            wait = memory_read(qi.desc + (wait_index << shift), 1 << shift)
            memory_write(qi.desc + (head << shift), wait)
            iommu.regs.writel(ir.DMA_FSTS_IQE, ir.DMAR_FSTS_REG)
            pr_info("DMAR: Invalidation Queue Error (IQE) cleared")
            return -EINVAL.errno
    return 0


def qi_submit_sync(iommu: IntelIommu, desc: Sequence[QiDesc], options: int = 0) -> int:
    """``qi_submit_sync``: queue ``desc`` plus one Invalidation Wait and wait for its
    status write. Returns 0, -EINVAL after an invalid descriptor, -ETIMEDOUT when
    the unit never completes (the queue is then re-initialised). (Runs on every
    strict unmap: ``qi_shift`` and ``ktime_get_ns`` are written out, the slots and
    their status words are stored with one write each, and when the batch is the
    only one in use its completed status words go straight to QI_FREE, which is
    what marking them QI_DONE and ``reclaim_free_desc`` leave.)"""
    qi = iommu.qi
    if qi is None:
        return 0
    count = len(desc)
    if count + 2 > _QLEN:
        pr_err(f"DMAR: {iommu.name}: {count} descriptors do not fit the invalidation queue")
        return -EINVAL.errno
    shift = _IQ_SHIFT + ((iommu.ecap >> 43) & 1)  # qi_shift(): ecap_smts()
    deadline = current.kernel.machine.clock.now + QI_TIMEOUT_US * 1000  # ktime_get_ns()
    while qi.free_cnt < count + 2:
        reclaim_free_desc(qi)
        if qi.free_cnt >= count + 2:
            break
        if not wait_next_event(deadline):
            return qi_timed_out(iommu, qi.free_head, "no free slots")
    index = qi.free_head
    wait_index = (index + count) % _QLEN
    qwords = (1 << shift) >> 3  # a 128-bit slot holds qw0 and qw1 only
    # The ring and the status words are direct-mapped pages: write them by address.
    mem = current.kernel.mm.mem
    ring, status = qi.desc - PAGE_OFFSET, qi.desc_status - PAGE_OFFSET
    qw0 = _QI_IWD_DONE
    if options & ir.QI_OPT_WAIT_DRAIN:
        qw0 |= ir.QI_IWD_PRQ_DRAIN
    qws: tuple[int, ...] = ()
    for d in desc:
        qws += d[:qwords]
    qws += (qw0, status + 4 * wait_index, 0, 0)[:qwords]
    wrap = index + count >= _QLEN
    if not wrap:  # one store for the slots, one for their status
        mem.write_u64s(ring + (index << shift), qws)
        n = count + 1
        mem.write(status + 4 * index, _QI_IN_USE_WORDS[n] if n <= _QI_RUN else _QI_IN_USE_WORD * n)
    else:
        for i in range(count + 1):
            slot = (index + i) % _QLEN
            mem.write_u64s(ring + (slot << shift), qws[i * qwords : (i + 1) * qwords])
            mem.write_u32(status + 4 * slot, ir.QI_IN_USE)
    if trace_qi_submit.enabled:
        for d in desc:
            trace_qi_submit(
                iommu=iommu.name,
                type=ir.QI_DESC_TYPE_NAMES.get(d[0] & 0xF, f"{d[0] & 0xF:#x}"),
                qw0=d[0],
                qw1=d[1],
                qw2=d[2],
                qw3=d[3],
            )
    free_head = qi.free_head = (index + count + 1) % _QLEN
    qi.free_cnt -= count + 1
    reg = iommu.reg  # iommu.regs without the property call
    assert reg is not None, f"{iommu.name}: registers not mapped"
    reg.writel(free_head << shift, _IQT_REG)
    rc = 0
    # C spins (cpu_relax) on the status word; only a clock event can change it or
    # FSTS, so each poll jumps to the next event: exact, and one poll per event.
    # The status word is read as the half of its 64-bit word it is (pgtable_words'
    # view of RAM, current.kernel.mm.words: no call per poll).
    wait_status = status + 4 * wait_index
    q, at, half = current.kernel.mm.words, wait_status >> 3, (wait_status & 4) << 3
    while True:
        if not wait_next_event(deadline):
            return qi_timed_out(iommu, wait_index, "wait descriptor not completed")
        if (q[at] >> half) & 0xFFFF_FFFF == _DONE:
            break
        rc = qi_check_fault(iommu, index, wait_index, count)
        if rc:
            break
    if not rc and not wrap and qi.free_tail == index and qi.free_head == free_head:
        # Every slot in use is this batch's, all done: reclaim_free_desc frees them all.
        n = count + 1
        mem.write(status + 4 * index, _QI_FREE_WORDS[n] if n <= _QI_RUN else _QI_FREE_WORD * n)
        qi.free_tail = free_head
        qi.free_cnt += count + 1
        return 0
    if not wrap:
        mem.write(status + 4 * index, _QI_DONE_WORD * count)
    else:
        for i in range(count):
            mem.write_u32(status + 4 * ((index + i) % _QLEN), _DONE)
    reclaim_free_desc(qi)
    return rc


def qi_timed_out(iommu: IntelIommu, index: int, why: str) -> int:
    """The queue stopped: log, disable and re-enable it (all slots free again)."""
    pr_err(f"DMAR: {iommu.name}: invalidation queue timed out at index {index} ({why})")
    try:
        dmar_disable_qi(iommu)
        __dmar_enable_qi(iommu)
    except ETIMEDOUT:
        pr_err(f"DMAR: {iommu.name}: invalidation queue could not be restarted")
    return -ETIMEDOUT.errno


def qi_global_iec(iommu: IntelIommu) -> None:
    """``qi_global_iec``: invalidate the whole interrupt entry cache, and wait."""
    qi_submit_sync(iommu, [(ir.QI_IEC_TYPE, 0, 0, 0)])


def qi_flush_context(iommu: IntelIommu, did: int, sid: int, fm: int, type: int) -> None:
    """``qi_flush_context``."""
    qw0 = (
        ir.QI_CC_FM(fm)
        | ir.QI_CC_SID(sid)
        | ir.QI_CC_DID(did)
        | ir.QI_CC_GRAN(type)
        | ir.QI_CC_TYPE
    )
    qi_submit_sync(iommu, [(qw0, 0, 0, 0)])


def qi_desc_iotlb(
    iommu: IntelIommu, did: int, addr: int, size_order: int, type: int, ih: int = 0
) -> QiDesc:
    """``qi_desc_iotlb``: a type-2 IOTLB descriptor (DW/DR as the unit supports)."""
    dw = ir.cap_write_drain(iommu.cap)
    dr = ir.cap_read_drain(iommu.cap)
    qw0 = ir.QI_IOTLB_DID(did) | ir.QI_IOTLB_DR(dr) | ir.QI_IOTLB_DW(dw)
    qw0 |= ir.QI_IOTLB_GRAN(type) | ir.QI_IOTLB_TYPE
    qw1 = ir.QI_IOTLB_ADDR(addr) | ir.QI_IOTLB_IH(ih) | ir.QI_IOTLB_AM(size_order)
    return (qw0, qw1, 0, 0)


def qi_flush_iotlb(iommu: IntelIommu, did: int, addr: int, size_order: int, type: int) -> None:
    """``qi_flush_iotlb`` (the ``flush.flush_iotlb`` hook with QI)."""
    qi_submit_sync(iommu, [qi_desc_iotlb(iommu, did, addr, size_order, type)])


def qi_desc_dev_iotlb(sid: int, pfsid: int, qdep: int, addr: int, mask: int) -> QiDesc:
    """``qi_desc_dev_iotlb``: a type-3 device-TLB descriptor (S=1 range when ``mask``)."""
    if mask:
        addr |= (1 << (ir.VTD_PAGE_SHIFT + mask - 1)) - 1
        qw1 = ir.QI_DEV_IOTLB_ADDR(addr) | ir.QI_DEV_IOTLB_SIZE
    else:
        qw1 = ir.QI_DEV_IOTLB_ADDR(addr)
    if qdep >= ir.QI_DEV_IOTLB_MAX_INVS:
        qdep = 0
    qw0 = ir.QI_DEV_IOTLB_SID(sid) | ir.QI_DEV_IOTLB_QDEP(qdep) | ir.QI_DIOTLB_TYPE
    return (qw0 | ir.QI_DEV_IOTLB_PFSID(pfsid), qw1, 0, 0)


def qi_flush_dev_iotlb(
    iommu: IntelIommu, sid: int, pfsid: int, qdep: int, addr: int, mask: int
) -> None:
    """``qi_flush_dev_iotlb``."""
    qi_submit_sync(iommu, [qi_desc_dev_iotlb(sid, pfsid, qdep, addr, mask)])


def qi_desc_piotlb(did: int, pasid: int, addr: int, npages: int, ih: int) -> QiDesc:
    """``qi_desc_piotlb``: a type-6 PASID-based IOTLB descriptor; ``npages == -1``
    means every mapping of the PASID (G=2), else page-selective (G=3) over the
    power-of-two aligned range."""
    if npages == -1:
        qw0 = ir.QI_EIOTLB_PASID(pasid) | ir.QI_EIOTLB_DID(did)
        qw0 |= ir.QI_EIOTLB_GRAN(ir.QI_GRAN_NONG_PASID) | ir.QI_EIOTLB_TYPE
        return (qw0, 0, 0, 0)
    mask = (npages - 1).bit_length()
    addr &= -(1 << (ir.VTD_PAGE_SHIFT + mask))  # down to the range's alignment
    # QI_EIOTLB_PASID | QI_EIOTLB_DID | G=3 | type; QI_EIOTLB_ADDR | IH | AM, in line
    # (every strict unmap of a first-stage domain builds one)
    qw0 = (pasid << 32) | ((did & 0xFFFF) << 16) | _PIOTLB_PSI
    qw1 = (addr & ir.VTD_PAGE_MASK) | (ih << 6) | (mask & 0x3F)
    return (qw0, qw1, 0, 0)


def qi_flush_piotlb(
    iommu: IntelIommu, did: int, pasid: int, addr: int, npages: int, ih: int
) -> None:
    """``qi_flush_piotlb``."""
    qi_submit_sync(iommu, [qi_desc_piotlb(did, pasid, addr, npages, ih)])


def qi_desc_dev_iotlb_pasid(
    sid: int, pfsid: int, pasid: int, qdep: int, addr: int, size_order: int
) -> QiDesc:
    """``qi_desc_dev_iotlb_pasid``: a type-8 PASID-based device-TLB descriptor."""
    qw0 = ir.QI_DEV_EIOTLB_PASID(pasid) | ir.QI_DEV_EIOTLB_SID(sid)
    qw0 |= ir.QI_DEV_EIOTLB_QDEP(qdep) | ir.QI_DEIOTLB_TYPE | ir.QI_DEV_IOTLB_PFSID(pfsid)
    qw1 = ir.QI_DEV_EIOTLB_ADDR(addr)
    if size_order:
        qw1 |= ((1 << (size_order + ir.VTD_PAGE_SHIFT)) - 1) & ~((1 << ir.VTD_PAGE_SHIFT) - 1)
        qw1 &= ~(1 << (ir.VTD_PAGE_SHIFT + size_order - 1))
        qw1 |= ir.QI_DEV_EIOTLB_SIZE
    return (qw0, qw1 & ((1 << 64) - 1), 0, 0)


def qi_flush_dev_iotlb_pasid(
    iommu: IntelIommu, sid: int, pfsid: int, pasid: int, qdep: int, addr: int, size_order: int
) -> None:
    """``qi_flush_dev_iotlb_pasid``."""
    qi_submit_sync(iommu, [qi_desc_dev_iotlb_pasid(sid, pfsid, pasid, qdep, addr, size_order)])


def qi_flush_pasid_cache(iommu: IntelIommu, did: int, granu: int, pasid: int) -> None:
    """``qi_flush_pasid_cache``."""
    qw0 = ir.QI_PC_PASID(pasid) | ir.QI_PC_DID(did) | ir.QI_PC_GRAN(granu) | ir.QI_PC_TYPE
    qi_submit_sync(iommu, [(qw0, 0, 0, 0)])


def dmar_disable_qi(iommu: IntelIommu) -> None:
    """``dmar_disable_qi``: let the queue drain (IQH == IQT), then clear QIE."""
    if not ir.ecap_qis(iommu.ecap):
        return
    reg = iommu.regs
    if not reg.readl(ir.DMAR_GSTS_REG) & ir.DMA_GSTS_QIES:
        return
    with contextlib.suppress(ETIMEDOUT):  # C gives up waiting as silently
        readx_poll_timeout(
            lambda: reg.readq(ir.DMAR_IQT_REG) ^ reg.readq(ir.DMAR_IQH_REG),
            lambda v: v == 0,
            1,
            DMAR_OPERATION_TIMEOUT_US,
        )
    iommu.gcmd &= ~ir.DMA_GCMD_QIE
    reg.writel(iommu.gcmd, ir.DMAR_GCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: not v & ir.DMA_GSTS_QIES)


def __dmar_enable_qi(iommu: IntelIommu) -> None:
    """``__dmar_enable_qi``: IQT = 0, IQA (DW=1 and 2 pages with SMTS), then QIE."""
    qi = iommu.qi
    assert qi is not None
    qi.free_head = qi.free_tail = 0
    qi.free_cnt = ir.QI_LENGTH
    memory_write(qi.desc_status, bytes(4 * ir.QI_LENGTH))
    val = virt_to_phys(qi.desc)
    if ir.ecap_smts(iommu.ecap):
        val |= (1 << 11) | 1
    reg = iommu.regs
    reg.writel(0, ir.DMAR_IQT_REG)
    dmar_writeq(iommu, ir.DMAR_IQA_REG, val)
    iommu.gcmd |= ir.DMA_GCMD_QIE
    reg.writel(iommu.gcmd, ir.DMAR_GCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: bool(v & ir.DMA_GSTS_QIES))


def dmar_enable_qi(iommu: IntelIommu) -> None:
    """``dmar_enable_qi``: allocate the ring (one page, two with SMTS) and the status
    words, then enable. ENOENT without ECAP.QI; nothing when the queue is already
    on (interrupt remapping enabled it)."""
    if not ir.ecap_qis(iommu.ecap):
        raise ENOENT(f"{iommu.name}: no queued invalidation")
    if iommu.qi is not None:
        return
    kmem = kzalloc(64, GFP_ATOMIC)
    if kmem is None:
        raise ENOMEM("q_inval")
    order = ir.ecap_smts(iommu.ecap)
    desc = __get_free_pages(GFP_ATOMIC | __GFP_ZERO, order)
    if desc is None:
        kfree(kmem)
        raise ENOMEM("invalidation queue pages")
    status = kcalloc(ir.QI_LENGTH, 4, GFP_ATOMIC)
    if status is None:
        free_pages(desc, order)
        kfree(kmem)
        raise ENOMEM("invalidation queue status")
    iommu.qi = QInval(desc, order, status, kmem=kmem)
    __dmar_enable_qi(iommu)


# --------------------------------------------------------------------------- faults

DMA_REMAP_FAULT_REASONS = (
    "Software",
    "Present bit in root entry is clear",
    "Present bit in context entry is clear",
    "Invalid context entry",
    "Access beyond MGAW",
    "PTE Write access is not set",
    "PTE Read access is not set",
    "Next page table ptr is invalid",
    "Root table address invalid",
    "Context table ptr is invalid",
    "non-zero reserved fields in RTP",
    "non-zero reserved fields in CTP",
    "non-zero reserved fields in PTE",
    "PCE for translation request specifies blocking",
)

_U = "Unknown"
DMA_REMAP_SM_FAULT_REASONS = (
    "SM: Invalid Root Table Address",
    "SM: TTM 0 for request with PASID",
    "SM: TTM 0 for page group request",
    *([_U] * 5),
    "SM: Error attempting to access Root Entry",
    "SM: Present bit in Root Entry is clear",
    "SM: Non-zero reserved field set in Root Entry",
    *([_U] * 5),
    "SM: Error attempting to access Context Entry",
    "SM: Present bit in Context Entry is clear",
    "SM: Non-zero reserved field set in the Context Entry",
    "SM: Invalid Context Entry",
    "SM: DTE field in Context Entry is clear",
    "SM: PASID Enable field in Context Entry is clear",
    "SM: PASID is larger than the max in Context Entry",
    "SM: PRE field in Context-Entry is clear",
    "SM: RID_PASID field error in Context-Entry",
    *([_U] * 7),
    "SM: Error attempting to access the PASID Directory Entry",
    "SM: Present bit in Directory Entry is clear",
    "SM: Non-zero reserved field set in PASID Directory Entry",
    *([_U] * 5),
    "SM: Error attempting to access PASID Table Entry",
    "SM: Present bit in PASID Table Entry is clear",
    "SM: Non-zero reserved field set in PASID Table Entry",
    "SM: Invalid Scalable-Mode PASID Table Entry",
    "SM: ERE field is clear in PASID Table Entry",
    "SM: SRE field is clear in PASID Table Entry",
    *([_U] * 18),
    "SM: Error attempting to access first-level paging entry",
    "SM: Present bit in first-level paging entry is clear",
    "SM: Non-zero reserved field set in first-level paging entry",
    "SM: Error attempting to access FL-PML4 entry",
    "SM: First-level entry address beyond MGAW in Nested translation",
    "SM: Read permission error in FL-PML4 entry in Nested translation",
    "SM: Read permission error in first-level paging entry in Nested translation",
    "SM: Write permission error in first-level paging entry in Nested translation",
    "SM: Error attempting to access second-level paging entry",
    "SM: Read/Write permission error in second-level paging entry",
    "SM: Non-zero reserved field set in second-level paging entry",
    "SM: Invalid second-level page table pointer",
    "SM: A/D bit update needed in second-level entry when set up in no snoop",
    *([_U] * 3),
    "SM: Address in first-level translation is not canonical",
    "SM: U/S set 0 for first-level translation with user privilege",
    "SM: No execute permission for request with PASID and ER=1",
    "SM: Address beyond the DMA hardware max",
    "SM: Second-level entry address beyond the max",
    "SM: No write permission for Write/AtomicOp request",
    "SM: No read permission for Read/AtomicOp request",
    "SM: Invalid address-interrupt address",
    *([_U] * 8),
    "SM: A/D bit update needed in first-level entry when set up in no snoop",
)

IRQ_REMAP_FAULT_REASONS = (
    "Detected reserved fields in the decoded interrupt-remapped request",
    "Interrupt index exceeded the interrupt-remapping table size",
    "Present field in the IRTE entry is clear",
    "Error accessing interrupt-remapping table pointed by IRTA_REG",
    "Detected reserved fields in the IRTE entry",
    "Blocked a compatibility format interrupt request",
    "Blocked an interrupt request due to source-id verification failure",
)

DMA_REMAP, INTR_REMAP, UNKNOWN = 0, 1, 2


def dmar_get_fault_reason(fault_reason: int) -> tuple[str, int]:
    """``dmar_get_fault_reason``: the reason string and the fault type."""
    if 0x20 <= fault_reason < 0x20 + len(IRQ_REMAP_FAULT_REASONS):
        return IRQ_REMAP_FAULT_REASONS[fault_reason - 0x20], INTR_REMAP
    if 0x30 <= fault_reason < 0x30 + len(DMA_REMAP_SM_FAULT_REASONS):
        return DMA_REMAP_SM_FAULT_REASONS[fault_reason - 0x30], DMA_REMAP
    if fault_reason < len(DMA_REMAP_FAULT_REASONS):
        return DMA_REMAP_FAULT_REASONS[fault_reason], DMA_REMAP
    return _U, UNKNOWN


def dmar_fault_do_one(
    iommu: IntelIommu, type: int, fault_reason: int, pasid: int, source_id: int, addr: int
) -> None:
    """``dmar_fault_do_one``: one fault record, in the kernel's words."""
    reason, fault_type = dmar_get_fault_reason(fault_reason)
    bus, slot, fn = source_id >> 8, (source_id >> 3) & 0x1F, source_id & 7
    dev = f"[{bus:02x}:{slot:02x}.{fn}]"
    if fault_type == INTR_REMAP:
        pr_err(
            f"DMAR: [INTR-REMAP] Request device {dev} fault index {addr >> 48:#x} "
            f"[fault reason {fault_reason:#04x}] {reason}"
        )
        return
    kind = "DMA Read" if type else "DMA Write"
    tag = f"{kind} NO_PASID" if pasid < 0 else f"{kind} PASID {pasid:#x}"
    pr_err(
        f"DMAR: [{tag}] Request device {dev} fault addr {addr:#x} "
        f"[fault reason {fault_reason:#04x}] {reason}"
    )


def __ratelimit(rs: RateLimit, func: str) -> bool:
    """``__ratelimit``: the burst per interval, and the "callbacks suppressed" line
    when a new interval starts after misses."""
    now = ktime_get_ns()
    if rs.begin >= 0 and now - rs.begin >= rs.interval_ns and rs.missed:
        printk(KERN_WARNING, f"{func}: {rs.missed} callbacks suppressed")
        rs.missed = 0
    return rs.allow(now)


PRIMARY_FAULT_REG_LEN = 16


def dmar_fault(irq: int, iommu: IntelIommu) -> int:
    """``dmar_fault``: the fault-event interrupt handler. Walks the fault recording
    registers from FSTS.FRI, prints and clears every pending record, then clears
    the summary bits."""
    rs = dmar_state().fault_rs
    reg = iommu.regs
    fault_status = reg.readl(ir.DMAR_FSTS_REG)
    if fault_status and __ratelimit(rs, "dmar_fault"):
        pr_err(f"DMAR: DRHD: handling fault status reg {fault_status:x}")
    if not fault_status & ir.DMA_FSTS_PPF:
        return IRQ_HANDLED
    fault_index = ir.dma_fsts_fault_record_index(fault_status)
    base = ir.cap_fault_reg_offset(iommu.cap)
    nfr = ir.cap_num_fault_regs(iommu.cap)
    while True:
        ratelimited = not __ratelimit(rs, "dmar_fault")
        rec = base + fault_index * PRIMARY_FAULT_REG_LEN
        data = reg.readl(rec + 12)
        if not data & ir.DMA_FRCD_F:
            break
        if not ratelimited:
            fault_reason = ir.dma_frcd_fault_reason(data)
            type = ir.dma_frcd_type(data)
            pasid = ir.dma_frcd_pasid_value(data)
            data2 = reg.readl(rec + 8)
            source_id = ir.dma_frcd_source_id(data2)
            pasid_present = ir.dma_frcd_pasid_present(data2)
            guest_addr = ir.dma_frcd_page_addr(reg.readq(rec))
        reg.writel(ir.DMA_FRCD_F, rec + 12)
        if not ratelimited:
            dmar_fault_do_one(
                iommu, type, fault_reason, pasid if pasid_present else -1, source_id, guest_addr
            )
        fault_index = (fault_index + 1) % nfr
    reg.writel(ir.DMA_FSTS_PFO | ir.DMA_FSTS_PPF | ir.DMA_FSTS_PRO, ir.DMAR_FSTS_REG)
    return IRQ_HANDLED


def dmar_set_interrupt(iommu: IntelIommu) -> None:
    """``dmar_set_interrupt``: an interrupt vector for the fault event, its MSI
    message in FEDATA/FEADDR/FEUADDR (``dmar_msi_write``), the handler, unmask."""
    try:
        desc = irq_alloc(iommu.name)
    except KernelError:
        pr_err("DMAR: No free IRQ vectors")
        raise
    iommu.irq = desc.irq
    addr, data = desc.msi_msg()
    reg = iommu.regs
    reg.writel(data, ir.DMAR_FEDATA_REG)
    reg.writel(addr & 0xFFFF_FFFF, ir.DMAR_FEADDR_REG)
    reg.writel(addr >> 32, ir.DMAR_FEUADDR_REG)
    try:
        request_irq(desc.irq, _dmar_fault_irq, 0, iommu.name, iommu)
    except KernelError:
        pr_err("DMAR: Can't request irq")
        irq_free(desc.irq)
        iommu.irq = 0
        raise
    reg.writel(0, ir.DMAR_FECTL_REG)
    reg.readl(ir.DMAR_FECTL_REG)


def _dmar_fault_irq(irq: int, dev_id: object) -> int:
    assert isinstance(dev_id, IntelIommu)
    return dmar_fault(irq, dev_id)
