"""Page requests on VT-d (drivers/iommu/intel/prq.c; in 6.12 this code is still in
svm.c, split out unchanged in 6.13), and the IOPF device feature of iommu.c
(``intel_iommu_enable_iopf``/``intel_iommu_disable_iopf``, ``intel_iommu_enable_sva``).

- :func:`intel_iommu_enable_prq` (from unit bring-up when the unit has PASID and
  ECAP.PRS): ``PRQ_ORDER`` pages of queue, the "dmar<N>-iopfq" IOPF queue, a threaded
  interrupt "dmar<N>-prq" whose MSI is in PEDATA/PEADDR/PEUADDR, PQH = PQT = 0, PQA.
- :func:`prq_event_thread`: clear PPR, walk PQH..PQT; reject (Invalid Request, when it
  is the last of its group) a non-canonical address, a privileged request with R/W,
  an execute request with R, or an unknown requester; drop stop markers; otherwise
  report to the IOMMU core (:func:`kernel.iommu.io_pgfault.iommu_report_device_fault`)
  and trace ``intel_iommu:prq_report``. Then PQH = PQT; on PRO with an empty queue the
  partial faults are discarded and PRO cleared; waiters on ``prq_complete`` wake.
- :func:`intel_iommu_page_response`: the page group response descriptor (type 9) with
  the core's response code, through ``qi_submit_sync``.
- :func:`intel_iommu_drain_pasid_prq`: wait until the thread handled every queued
  request of the device and PASID, flush the IOPF queue, then an invalidation wait with
  PD=1 fenced behind IOTLB and device-TLB invalidations; retry while PRO is set.

Differences from Linux: the requester lookup is the PCI device at that RID behind this
unit (Linux keeps an rbtree); the core's response code goes into the descriptor as
Linux passes it (IOMMU_PAGE_RESP_FAILURE = 2, which PCIe reserves: the device takes it
as Response Failure).
"""

from __future__ import annotations

from typing import Any

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import (
    QiDesc,
    qi_desc_dev_iotlb,
    qi_desc_dev_iotlb_pasid,
    qi_desc_iotlb,
    qi_desc_piotlb,
    qi_submit_sync,
)
from drivers.intel_iommu.structs import DeviceDomainInfo, IntelIommu, domain_id_iommu
from kernel.delay import complete, completion_done, init_completion, wait_for_completion
from kernel.device import Device, dev_name
from kernel.errno import EBUSY, EINVAL, ENODEV, ENOMEM, KernelError
from kernel.iommu.io_pgfault import (
    IOMMU_FAULT_PAGE_REQ,
    IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
    IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
    IOMMU_FAULT_PERM_EXEC,
    IOMMU_FAULT_PERM_PRIV,
    IOMMU_FAULT_PERM_READ,
    IOMMU_FAULT_PERM_WRITE,
    IommuFault,
    IommuFaultPageRequest,
    IommuPageResponse,
    IopfFault,
    iommu_report_device_fault,
    iopf_queue_add_device,
    iopf_queue_alloc,
    iopf_queue_discard_partial,
    iopf_queue_flush_dev,
    iopf_queue_free,
    iopf_queue_remove_device,
)
from kernel.iommu.iommu_h import IOMMU_NO_PASID
from kernel.irq import free_irq, irq_alloc, irq_free, request_threaded_irq
from kernel.mm import (
    __GFP_ZERO,
    GFP_KERNEL,
    __get_free_pages,
    free_pages,
    memory_read,
    virt_to_phys,
)
from kernel.pci import (
    PciDev,
    pci_disable_pri,
    pci_enable_pri,
    pci_get_domain_bus_and_slot,
    pci_prg_resp_pasid_required,
    pci_reset_pri,
)
from kernel.printk import pr_err, pr_info, pr_warn
from kernel.trace import define_tracepoint

PRQ_ORDER = 4
PRQ_RING_MASK = (0x1000 << PRQ_ORDER) - 0x20
PRQ_DEPTH = (0x1000 << PRQ_ORDER) >> 5
PRQ_DESC_SIZE = 32
__VIRTUAL_MASK_SHIFT = 47


def _prq_shown(v: dict[str, Any]) -> dict[str, Any]:
    """``TP_printk``: the sequence number in decimal, the descriptor decoded."""
    desc = decode_prq_descriptor(v["dw0"], v["dw1"], v["dw2"], v["dw3"])
    return {"seq": str(v["seq"]), "desc": desc}


trace_prq_report = define_tracepoint(
    "intel_iommu:prq_report",
    ("iommu", "dev", "dw0", "dw1", "dw2", "dw3", "seq"),
    "{iommu}/{dev} seq# {seq}: {desc}",
    _prq_shown,
)


def decode_prq_descriptor(dw0: int, dw1: int, dw2: int, dw3: int) -> str:
    """``decode_prq_descriptor`` (include/linux/intel-iommu.h / intel/iommu.h)."""
    flags = (
        ("r" if dw1 & 1 else "-")
        + ("w" if dw1 & 2 else "-")
        + ("x" if dw0 >> 52 & 1 else "-")
        + ("p" if dw0 >> 53 & 1 else "-")
        + ("l" if dw1 & 4 else "-")
    )
    text = (
        f"rid={dw0 >> 16 & 0xFFFF:#x} addr={dw1 >> 12:#x} {flags} "
        f"pasid={dw0 >> 32 & 0xFFFFF:#x} index={dw1 >> 3 & 0x1FF:#x}"
    )
    if dw0 >> 9 & 1:
        text += f" private={dw2:#x}/{dw3:#x}\n"
    return text


def _trace_prq(iommu: IntelIommu, dev: Device, q: tuple[int, ...], seq: int) -> None:
    trace_prq_report(
        iommu=iommu.name,
        dev=dev_name(dev),
        dw0=q[0],
        dw1=q[1],
        dw2=q[2],
        dw3=q[3],
        seq=seq,
    )


# --------------------------------------------------------------------------- queue set-up


def intel_iommu_enable_prq(iommu: IntelIommu) -> None:
    """``intel_iommu_enable_prq``: queue pages, interrupt, IOPF queue, registers."""
    prq = __get_free_pages(GFP_KERNEL | __GFP_ZERO, PRQ_ORDER)
    if prq is None:
        pr_warn(f"IOMMU: {iommu.name}: Failed to allocate page request queue")
        raise ENOMEM("page request queue")
    iommu.prq = prq
    try:
        desc = irq_alloc(f"dmar{iommu.seq_id}-prq")
    except KernelError:
        pr_err(f"IOMMU: {iommu.name}: Failed to create IRQ vector for page request queue")
        free_pages(prq, PRQ_ORDER)
        iommu.prq = 0
        raise EINVAL("prq irq") from None
    iommu.pr_irq = desc.irq
    addr, data = desc.msi_msg()  # dmar_msi_write to the PECTL block
    reg = iommu.regs
    reg.writel(data, ir.DMAR_PEDATA_REG)
    reg.writel(addr & 0xFFFF_FFFF, ir.DMAR_PEADDR_REG)
    reg.writel(addr >> 32, ir.DMAR_PEUADDR_REG)
    iopfq = iopf_queue_alloc(f"dmar{iommu.seq_id}-iopfq")
    if iopfq is None:
        pr_err(f"IOMMU: {iommu.name}: Failed to allocate iopf queue")
        _free_hwirq(iommu)
        free_pages(prq, PRQ_ORDER)
        iommu.prq = 0
        raise ENOMEM("iopf queue")
    iommu.iopf_queue = iopfq
    try:
        request_threaded_irq(desc.irq, None, _prq_thread, 0, f"dmar{iommu.seq_id}-prq", iommu)
    except KernelError:
        pr_err(f"IOMMU: {iommu.name}: Failed to request IRQ for page request queue")
        iopf_queue_free(iopfq)
        iommu.iopf_queue = None
        _free_hwirq(iommu)
        free_pages(prq, PRQ_ORDER)
        iommu.prq = 0
        raise
    reg.writel(0, ir.DMAR_PECTL_REG)  # the interrupt is unmasked when requested
    reg.writeq(0, ir.DMAR_PQH_REG)
    reg.writeq(0, ir.DMAR_PQT_REG)
    reg.writeq(virt_to_phys(prq) | PRQ_ORDER, ir.DMAR_PQA_REG)
    init_completion(iommu.prq_complete)


def _free_hwirq(iommu: IntelIommu) -> None:
    """``dmar_free_hwirq``: mask the event and give the vector back."""
    iommu.regs.writel(ir.DMA_FECTL_IM, ir.DMAR_PECTL_REG)
    irq_free(iommu.pr_irq)
    iommu.pr_irq = 0


def intel_iommu_finish_prq(iommu: IntelIommu) -> None:
    """``intel_iommu_finish_prq``: registers cleared, interrupt, IOPF queue, pages."""
    reg = iommu.regs
    reg.writeq(0, ir.DMAR_PQH_REG)
    reg.writeq(0, ir.DMAR_PQT_REG)
    reg.writeq(0, ir.DMAR_PQA_REG)
    if iommu.pr_irq:
        free_irq(iommu.pr_irq, iommu)
        _free_hwirq(iommu)
    if iommu.iopf_queue is not None:
        iopf_queue_free(iommu.iopf_queue)
        iommu.iopf_queue = None
    if iommu.prq:
        free_pages(iommu.prq, PRQ_ORDER)
        iommu.prq = 0


# --------------------------------------------------------------------------- the thread


def _read_desc(iommu: IntelIommu, head: int) -> tuple[int, ...]:
    raw = memory_read(iommu.prq + head, PRQ_DESC_SIZE)
    return tuple(int.from_bytes(raw[8 * i : 8 * i + 8], "little") for i in range(4))


def _is_canonical_address(addr: int) -> bool:
    shift = 64 - (__VIRTUAL_MASK_SHIFT + 1)
    top = addr >> (64 - shift - 1)
    return top == 0 or top == (1 << (shift + 1)) - 1


def handle_bad_prq_event(iommu: IntelIommu, q: tuple[int, ...], result: int) -> None:
    """``handle_bad_prq_event``: log it; answer ``result`` if it ends its group."""
    pr_err(f"{iommu.name}: Invalid page request: {q[0]:08x} {q[1]:08x}")
    if not q[1] & 4:
        return
    qw0 = (
        ir.QI_PGRP_PASID(q[0] >> 32)
        | ir.QI_PGRP_DID(q[0] >> 16)
        | ir.QI_PGRP_PASID_P(q[0] >> 8)
        | ir.QI_PGRP_RESP_CODE(result)
        | ir.QI_PGRP_RESP_TYPE
    )
    qw1 = ir.QI_PGRP_IDX(q[1] >> 3) | ir.QI_PGRP_LPIG(q[1] >> 2)
    qi_submit_sync(iommu, [(qw0, qw1, 0, 0)])


def prq_to_iommu_prot(q: tuple[int, ...]) -> int:
    """``prq_to_iommu_prot``."""
    prot = 0
    if q[1] & 1:
        prot |= IOMMU_FAULT_PERM_READ
    if q[1] & 2:
        prot |= IOMMU_FAULT_PERM_WRITE
    if q[0] >> 52 & 1:
        prot |= IOMMU_FAULT_PERM_EXEC
    if q[0] >> 53 & 1:
        prot |= IOMMU_FAULT_PERM_PRIV
    return prot


def intel_prq_report(dev: Device, q: tuple[int, ...]) -> None:
    """``intel_prq_report``: the descriptor as an IOMMU core page request fault."""
    prm = IommuFaultPageRequest(
        addr=q[1] & ~0xFFF,
        pasid=q[0] >> 32 & 0xFFFFF,
        grpid=q[1] >> 3 & 0x1FF,
        perm=prq_to_iommu_prot(q),
    )
    if q[1] & 4:
        prm.flags |= IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
    if q[0] >> 8 & 1:
        prm.flags |= IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID
    iommu_report_device_fault(dev, IommuFault(IOMMU_FAULT_PAGE_REQ, prm))


def _device_find(iommu: IntelIommu, rid: int) -> Device | None:
    """``device_rbtree_find``: the probed device with this RID behind ``iommu``."""
    pdev = pci_get_domain_bus_and_slot(iommu.segment, rid >> 8, rid & 0xFF)
    if pdev is None or pdev.iommu is None:
        return None
    info = pdev.iommu.priv
    if not isinstance(info, DeviceDomainInfo) or info.iommu is not iommu:
        return None
    return pdev


def prq_event_thread(irq: int, iommu: IntelIommu) -> int:
    """``prq_event_thread``: handle every descriptor from PQH to PQT."""
    reg = iommu.regs
    reg.writel(ir.DMA_PRS_PPR, ir.DMAR_PRS_REG)
    tail = reg.readq(ir.DMAR_PQT_REG) & PRQ_RING_MASK
    head = reg.readq(ir.DMAR_PQH_REG) & PRQ_RING_MASK
    handled = head != tail
    while head != tail:
        q = _read_desc(iommu, head)
        rd, wr = q[1] & 1, q[1] >> 1 & 1
        bad = ""
        if not _is_canonical_address(q[1] & ~0xFFF):
            bad = f"IOMMU: {iommu.name}: Address is not canonical"
        elif q[0] >> 53 & 1 and (rd or wr):
            bad = f"IOMMU: {iommu.name}: Page request in Privilege Mode"
        elif q[0] >> 52 & 1 and rd:
            bad = f"IOMMU: {iommu.name}: Execution request not supported"
        if bad:
            pr_err(bad)
            handle_bad_prq_event(iommu, q, ir.QI_RESP_INVALID)
        elif q[1] & 4 and not rd and not wr:
            pass  # a stop marker: no response
        else:
            dev = _device_find(iommu, q[0] >> 16 & 0xFFFF)
            if dev is None:
                handle_bad_prq_event(iommu, q, ir.QI_RESP_INVALID)
            else:
                intel_prq_report(dev, q)
                if trace_prq_report.enabled:
                    _trace_prq(iommu, dev, q, iommu.prq_seq_number)
                iommu.prq_seq_number += 1
        head = (head + PRQ_DESC_SIZE) & PRQ_RING_MASK
    reg.writeq(tail, ir.DMAR_PQH_REG)
    if reg.readl(ir.DMAR_PRS_REG) & ir.DMA_PRS_PRO:
        pr_info(f"IOMMU: {iommu.name}: PRQ overflow detected")
        head = reg.readq(ir.DMAR_PQH_REG) & PRQ_RING_MASK
        tail = reg.readq(ir.DMAR_PQT_REG) & PRQ_RING_MASK
        if head == tail:
            iopf_queue_discard_partial(iommu.iopf_queue)
            reg.writel(ir.DMA_PRS_PRO, ir.DMAR_PRS_REG)
            pr_info(f"IOMMU: {iommu.name}: PRQ overflow cleared")
    if not completion_done(iommu.prq_complete):
        complete(iommu.prq_complete)
    return 1 if handled else 0


def _prq_thread(irq: int, dev_id: object) -> int:
    assert isinstance(dev_id, IntelIommu)
    return prq_event_thread(irq, dev_id)


# --------------------------------------------------------------------------- responses


def intel_iommu_page_response(dev: Device, evt: IopfFault, msg: IommuPageResponse) -> None:
    """``intel_iommu_page_response``: one page group response descriptor."""
    info = dev.iommu.priv if dev.iommu is not None else None
    assert isinstance(info, DeviceDomainInfo)
    prm = evt.fault.prm
    pasid_present = bool(prm.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID)
    last_page = bool(prm.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE)
    qw0 = (
        ir.QI_PGRP_PASID(prm.pasid)
        | ir.QI_PGRP_DID(info.sid)
        | ir.QI_PGRP_PASID_P(int(pasid_present))
        | ir.QI_PGRP_RESP_CODE(msg.code)
        | ir.QI_PGRP_RESP_TYPE
    )
    qw1 = ir.QI_PGRP_IDX(prm.grpid) | ir.QI_PGRP_LPIG(int(last_page))
    qi_submit_sync(info.iommu, [(qw0, qw1, 0, 0)])


# --------------------------------------------------------------------------- drain


def intel_iommu_drain_pasid_prq(dev: Device, pasid: int) -> None:
    """``intel_iommu_drain_pasid_prq``: after DMA stopped and the PASID entry and
    caches were cleared, wait until the thread handled every queued request of this
    device and PASID, flush the IOPF queue, then drain the hardware: an invalidation
    wait with PD fenced behind an IOTLB and a device-TLB invalidation, again while
    PRS.PRO is set."""
    info = dev.iommu.priv if dev.iommu is not None else None
    if not isinstance(info, DeviceDomainInfo) or not info.pri_enabled:
        return
    iommu = info.iommu
    sid = info.sid
    domain = info.domain
    did = domain_id_iommu(domain, iommu) if domain is not None else ir.FLPT_DEFAULT_DID
    reg = iommu.regs
    while True:
        iommu.prq_complete.reinit()
        tail = reg.readq(ir.DMAR_PQT_REG) & PRQ_RING_MASK
        head = reg.readq(ir.DMAR_PQH_REG) & PRQ_RING_MASK
        waiting = False
        while head != tail:
            q = _read_desc(iommu, head)
            pasid_present = q[0] >> 8 & 1
            req_pasid = q[0] >> 32 & 0xFFFFF
            if (
                q[0] >> 16 & 0xFFFF != sid
                or (pasid_present and pasid != req_pasid)
                or (not pasid_present and pasid != IOMMU_NO_PASID)
            ):
                head = (head + PRQ_DESC_SIZE) & PRQ_RING_MASK
                continue
            waiting = True
            break
        if not waiting:
            break
        wait_for_completion(iommu.prq_complete)
    iopf_queue_flush_dev(dev)
    wait: QiDesc = (ir.QI_IWD_STATUS_DATA(ir.QI_DONE) | ir.QI_IWD_FENCE | ir.QI_IWD_TYPE, 0, 0, 0)
    if pasid == IOMMU_NO_PASID:
        descs = [
            wait,
            qi_desc_iotlb(iommu, did, 0, 0, ir.DMA_TLB_DSI_FLUSH),
            qi_desc_dev_iotlb(sid, info.pfsid, info.ats_qdep, 0, ir.MAX_AGAW_PFN_WIDTH),
        ]
    else:
        descs = [
            wait,
            qi_desc_piotlb(did, pasid, 0, -1, 0),
            qi_desc_dev_iotlb_pasid(
                sid, info.pfsid, pasid, info.ats_qdep, 0, ir.MAX_AGAW_PFN_WIDTH
            ),
        ]
    while True:
        iommu.prq_complete.reinit()
        qi_submit_sync(iommu, descs, ir.QI_OPT_WAIT_DRAIN)
        if not reg.readl(ir.DMAR_PRS_REG) & ir.DMA_PRS_PRO:
            break
        wait_for_completion(iommu.prq_complete)


# --------------------------------------------------------------------------- device features


def intel_iommu_enable_iopf(dev: Device) -> None:
    """``intel_iommu_enable_iopf``: ENODEV without ATS on or PRI support, EBUSY if on,
    EINVAL if the device has PASID but does not want the PASID in responses; then
    reset PRI, join the unit's IOPF queue and enable PRI with ``PRQ_DEPTH`` requests."""
    info = dev.iommu.priv if dev.iommu is not None else None
    if not isinstance(dev, PciDev) or not isinstance(info, DeviceDomainInfo):
        raise ENODEV(f"{dev_name(dev)}: not a PCI device behind VT-d")
    if not info.ats_enabled or not info.pri_supported:
        raise ENODEV(f"{dev_name(dev)}: no ATS or no PRI")
    if info.pri_enabled:
        raise EBUSY(f"{dev_name(dev)}: PRI already enabled")
    iommu = info.iommu
    if iommu.iopf_queue is None:
        raise EINVAL(f"{iommu.name}: no page request queue")
    if info.pasid_enabled and not pci_prg_resp_pasid_required(dev):
        raise EINVAL(f"{dev_name(dev)}: PRG responses without PASID")
    pci_reset_pri(dev)
    iopf_queue_add_device(iommu.iopf_queue, dev)
    try:
        pci_enable_pri(dev, PRQ_DEPTH)
    except KernelError:
        iopf_queue_remove_device(iommu.iopf_queue, dev)
        raise
    info.pri_enabled = True


def intel_iommu_disable_iopf(dev: Device) -> None:
    """``intel_iommu_disable_iopf``: PRI off, then leave the IOPF queue (outstanding
    groups answered Invalid Request). EINVAL if it was not on."""
    info = dev.iommu.priv if dev.iommu is not None else None
    if not isinstance(dev, PciDev) or not isinstance(info, DeviceDomainInfo):
        raise EINVAL(f"{dev_name(dev)}: not a PCI device behind VT-d")
    if not info.pri_enabled:
        raise EINVAL(f"{dev_name(dev)}: PRI not enabled")
    pci_disable_pri(dev)
    info.pri_enabled = False
    iopf_queue_remove_device(info.iommu.iopf_queue, dev)
