"""Device page faults (drivers/iommu/io-pgfault.c of 6.12, with iommu.c's
``report_iommu_fault``).

Two paths, as in Linux:

- :func:`report_iommu_fault` — an unrecoverable translation fault a vendor driver read
  from its fault log (VT-d fault records, the SMMUv3 event queue): traced as
  ``iommu:io_page_fault`` and handed to the domain's ``handler``.
- :func:`iommu_report_device_fault` — a recoverable page request (PCIe PRI) a vendor
  driver read from its page request queue. Requests are grouped by PRG index: a request
  that is not the last of its group waits on the device's ``partial`` list; the last
  one builds an :class:`IopfGroup` (the partial ones of the same index first) that is
  handed to the ``iopf_handler`` of the domain attached at the request's PASID (or the
  RID's domain), and is pending until :func:`iopf_group_response` sends the one
  response through the driver's ``page_response``. No domain, no handler, the handler
  refusing it, or no memory for the group: "iopf with pasid N aborted" and a Response
  Failure.

An :class:`IopfQueue` owns a workqueue (``iopf_queue/<name>``): SVA's handler queues the
group's work there, and the work runs on the machine's clock after the page request
interrupt returned (:data:`IOPF_WORK_NS`), or at once when the queue is flushed.

Differences from Linux: no RCU or locks (one thread); the attach handle of 6.11+ is
the domain itself (:func:`get_domain_for_iopf`), so the nested-domain fallback for a
user-managed PASID table is absent; ``iommu_page_response`` (gone in 6.12) is kept as
the name of the send step inside :func:`iopf_group_response`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from attrs import define, field

from hw.bus import TimerHandle
from kernel.bug import WARN_ON
from kernel.context import kernel_callback
from kernel.device import Device, dev_name
from kernel.errno import EBUSY, ENODEV, ENOMEM
from kernel.iommu.iommu import dev_iommu_ops, iommu_state
from kernel.iommu.iommu_h import IommuDomain, IommuGroup, SupportsPageResponse, has_optional_op
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.platform import platform
from kernel.printk import dev_warn
from kernel.trace import trace_io_page_fault

# enum iommu_fault_type
IOMMU_FAULT_PAGE_REQ = 1
# struct iommu_fault_page_request flags
IOMMU_FAULT_PAGE_REQUEST_PASID_VALID = 1 << 0
IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE = 1 << 1
IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID = 1 << 3
# perm
IOMMU_FAULT_PERM_READ = 1 << 0
IOMMU_FAULT_PERM_WRITE = 1 << 1
IOMMU_FAULT_PERM_EXEC = 1 << 2
IOMMU_FAULT_PERM_PRIV = 1 << 3
# enum iommu_page_response_code
IOMMU_PAGE_RESP_SUCCESS = 0
IOMMU_PAGE_RESP_INVALID = 1
IOMMU_PAGE_RESP_FAILURE = 2
IOMMU_PAGE_RESP_PASID_VALID = 1 << 0

IOPF_WORK_NS = 1_000
"""Time from queueing a fault group's work to a worker running it."""


# --------------------------------------------------------------------------- structures


@define(eq=False)
class IommuFaultPageRequest:
    """``struct iommu_fault_page_request``."""

    flags: int = 0
    pasid: int = 0
    grpid: int = 0
    perm: int = 0
    addr: int = 0


@define(eq=False)
class IommuFault:
    """``struct iommu_fault``."""

    type: int = IOMMU_FAULT_PAGE_REQ
    prm: IommuFaultPageRequest = field(factory=IommuFaultPageRequest)


@define(eq=False)
class IopfFault:
    """``struct iopf_fault``: one fault (a copy of the reported event)."""

    fault: IommuFault
    kmem: int = 0


@define(eq=False)
class IommuPageResponse:
    """``struct iommu_page_response``."""

    pasid: int = 0
    grpid: int = 0
    code: int = IOMMU_PAGE_RESP_SUCCESS
    flags: int = 0


@define(eq=False)
class IopfQueue:
    """``struct iopf_queue``: the devices whose faults it takes and its workqueue."""

    name: str
    devices: list[IommuFaultParam] = field(factory=list)
    work: deque[Callable[[], None]] = field(factory=deque)
    timer: TimerHandle | None = None
    kmem: int = 0


@define(eq=False)
class IommuFaultParam:
    """``struct iommu_fault_param``: a device's pending groups and partial faults."""

    dev: Device
    queue: IopfQueue
    faults: list[IopfGroup] = field(factory=list)
    """Groups reported and not yet answered (``pending_node`` list)."""
    partial: list[IopfFault] = field(factory=list)
    users: int = 1
    kmem: int = 0


@define(eq=False)
class IopfGroup:
    """``struct iopf_group``: the faults of one PRG index, the last one last."""

    last_fault: IopfFault
    fault_param: IommuFaultParam
    faults: list[IopfFault] = field(factory=list)
    domain: IommuDomain | None = None
    pending: bool = False
    kmem: int = 0

    @property
    def fault_count(self) -> int:
        return len(self.faults)


# --------------------------------------------------------------------------- unrecoverable


def report_iommu_fault(dev: Device, iova: int, flags: int, pasid: int | None = None) -> int:
    """``report_iommu_fault``: trace the fault, hand it to the fault handler of the
    domain the device (or the PASID) is attached to; returns the handler's result
    or -ENOSYS (38)."""
    drv = dev.driver.name if dev.driver is not None else ""
    if trace_io_page_fault.enabled:
        trace_io_page_fault(device=dev_name(dev), driver=drv, iova=iova, flags=flags)
    iommu_state().faults.append((dev_name(dev), iova, flags))
    group: IommuGroup | None = dev.iommu_group
    domain: IommuDomain | None = None
    if group is not None:
        domain = group.pasid_array.get(pasid) if pasid else group.domain
    if domain is not None and domain.handler is not None:
        return domain.handler(domain, dev, iova, flags)
    return -38


# --------------------------------------------------------------------------- the workqueue


def queue_work(queue: IopfQueue, work: Callable[[], None]) -> bool:
    """``queue_work`` on the queue's workqueue: run ``work`` after :data:`IOPF_WORK_NS`
    (in this kernel, whatever kernel is current when the clock gets there)."""
    queue.work.append(work)
    if queue.timer is None:

        @kernel_callback
        def run() -> None:
            queue.timer = None
            flush_workqueue(queue)

        queue.timer = platform().clock.schedule(IOPF_WORK_NS, run, f"iopf_queue/{queue.name}")
    return True


def flush_workqueue(queue: IopfQueue) -> None:
    """``flush_workqueue``: run every queued work item now (and what they queue)."""
    while queue.work:
        queue.work.popleft()()


# --------------------------------------------------------------------------- reporting


def _get_fault_param(dev: Device) -> IommuFaultParam | None:
    """``iopf_get_dev_fault_param``: take a reference."""
    param: IommuFaultParam | None = dev.iommu.fault_param if dev.iommu is not None else None
    if param is not None:
        param.users += 1
    return param


def _put_fault_param(param: IommuFaultParam) -> None:
    """``iopf_put_dev_fault_param``."""
    param.users -= 1
    if param.users == 0:
        kfree(param.kmem)
        param.kmem = 0


def get_domain_for_iopf(dev: Device, fault: IommuFault) -> IommuDomain | None:
    """The domain a page request is for (6.12: ``iommu_attach_handle_get``): the one
    attached at its PASID, or the RID's domain for a request without PASID."""
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        return None
    if fault.prm.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID:
        return group.pasid_array.get(fault.prm.pasid)
    return group.domain


def _report_partial_fault(param: IommuFaultParam, fault: IommuFault) -> None:
    """``report_partial_fault``: keep a non-last request until its group's last one
    (dropped when there is no memory, as in Linux)."""
    kmem = kzalloc(64, GFP_KERNEL)
    if kmem is None:
        return
    param.partial.append(IopfFault(_copy(fault), kmem))


def _copy(fault: IommuFault) -> IommuFault:
    p = fault.prm
    return IommuFault(fault.type, IommuFaultPageRequest(p.flags, p.pasid, p.grpid, p.perm, p.addr))


def _iopf_group_alloc(param: IommuFaultParam, fault: IommuFault) -> IopfGroup:
    """``iopf_group_alloc``: the group with its partial faults; without memory an
    abort group (``kmem`` 0) that can still carry the response."""
    kmem = kzalloc(128, GFP_KERNEL)
    group = IopfGroup(IopfFault(_copy(fault)), param, kmem=kmem or 0)
    grpid = fault.prm.grpid
    for iopf in [f for f in param.partial if f.fault.prm.grpid == grpid]:
        param.partial.remove(iopf)
        group.faults.append(iopf)
    group.faults.append(group.last_fault)
    group.pending = True
    param.faults.append(group)
    return group


def iommu_report_device_fault(dev: Device, fault: IommuFault) -> None:
    """``iommu_report_device_fault``: queue a partial request, or build the group of a
    last one and hand it to the domain's ``iopf_handler``; on any failure answer
    Response Failure (the request must not stay unanswered)."""
    param = _get_fault_param(dev)
    if WARN_ON(param is None, f"{dev_name(dev)}: page request without an IOPF queue"):
        return
    assert param is not None
    if not fault.prm.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE:
        _report_partial_fault(param, fault)
        _put_fault_param(param)
        return
    group = _iopf_group_alloc(param, fault)
    domain = get_domain_for_iopf(dev, fault) if group.kmem else None
    group.domain = domain
    if domain is not None and domain.iopf_handler is not None and domain.iopf_handler(group) == 0:
        return
    dev_warn(dev, f"iopf with pasid {fault.prm.pasid} aborted")
    iopf_group_response(group, IOMMU_PAGE_RESP_FAILURE)
    iopf_free_group(group)


def iommu_page_response(group: IopfGroup, msg: IommuPageResponse) -> None:
    """Send ``msg`` for ``group`` through the driver's ``page_response`` if the group is
    still pending (a device taken off its queue has been answered already)."""
    param = group.fault_param
    dev = param.dev
    if not group.pending:
        return
    ops = dev_iommu_ops(dev)
    if has_optional_op(ops, "page_response"):
        resp_ops: SupportsPageResponse = ops  # type: ignore[assignment]
        resp_ops.page_response(dev, group.last_fault, msg)
    group.pending = False
    if group in param.faults:
        param.faults.remove(group)


def iopf_group_response(group: IopfGroup, status: int) -> None:
    """``iopf_group_response``: one response for the whole group."""
    prm = group.last_fault.fault.prm
    resp = IommuPageResponse(prm.pasid, prm.grpid, status)
    if prm.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID and (
        prm.flags & IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID
    ):
        resp.flags = IOMMU_PAGE_RESP_PASID_VALID
    iommu_page_response(group, resp)


def iopf_free_group(group: IopfGroup) -> None:
    """``iopf_free_group``: free the partial faults, drop the reference, free it."""
    for iopf in group.faults:
        if iopf is not group.last_fault:
            kfree(iopf.kmem)
    group.faults.clear()
    _put_fault_param(group.fault_param)
    if group.kmem:
        kfree(group.kmem)
        group.kmem = 0


# --------------------------------------------------------------------------- queues


def iopf_queue_alloc(name: str) -> IopfQueue | None:
    """``iopf_queue_alloc``: None without memory."""
    kmem = kzalloc(64, GFP_KERNEL)
    if kmem is None:
        return None
    return IopfQueue(name, kmem=kmem)


def iopf_queue_add_device(queue: IopfQueue, dev: Device) -> None:
    """``iopf_queue_add_device``: ENODEV if the driver cannot respond, EBUSY if the
    device is on a queue already, ENOMEM."""
    ops = dev_iommu_ops(dev)
    if not has_optional_op(ops, "page_response"):
        raise ENODEV(f"{dev_name(dev)}: IOMMU driver has no page_response")
    assert dev.iommu is not None
    if dev.iommu.fault_param is not None:
        raise EBUSY(f"{dev_name(dev)}: already on an IOPF queue")
    kmem = kzalloc(64, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("iommu_fault_param")
    param = IommuFaultParam(dev, queue, kmem=kmem)
    queue.devices.append(param)
    dev.iommu.fault_param = param


def iopf_queue_remove_device(queue: IopfQueue, dev: Device) -> None:
    """``iopf_queue_remove_device``: drop partial faults, answer every pending group
    Invalid Request, detach the device's fault parameter."""
    param: IommuFaultParam | None = dev.iommu.fault_param if dev.iommu is not None else None
    if WARN_ON(param is None or param.queue is not queue, "device not on this IOPF queue"):
        return
    assert param is not None and dev.iommu is not None
    for iopf in param.partial:
        kfree(iopf.kmem)
    param.partial.clear()
    ops = dev_iommu_ops(dev)
    for group in list(param.faults):
        prm = group.last_fault.fault.prm
        resp = IommuPageResponse(prm.pasid, prm.grpid, IOMMU_PAGE_RESP_INVALID)
        if prm.flags & IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID:
            resp.flags = IOMMU_PAGE_RESP_PASID_VALID
        if has_optional_op(ops, "page_response"):
            resp_ops: SupportsPageResponse = ops  # type: ignore[assignment]
            resp_ops.page_response(dev, group.last_fault, resp)
        group.pending = False
    param.faults.clear()
    queue.devices.remove(param)
    dev.iommu.fault_param = None
    _put_fault_param(param)


def iopf_queue_flush_dev(dev: Device) -> None:
    """``iopf_queue_flush_dev``: every queued fault of the device's queue handled."""
    param: IommuFaultParam | None = dev.iommu.fault_param if dev.iommu is not None else None
    if WARN_ON(param is None, f"{dev_name(dev)}: not on an IOPF queue"):
        raise ENODEV(f"{dev_name(dev)}: not on an IOPF queue")
    assert param is not None
    flush_workqueue(param.queue)


def iopf_queue_discard_partial(queue: IopfQueue) -> None:
    """``iopf_queue_discard_partial``: after a queue overflow, last requests may have
    been lost; drop every partial fault."""
    for param in queue.devices:
        for iopf in param.partial:
            kfree(iopf.kmem)
        param.partial.clear()


def iopf_queue_free(queue: IopfQueue) -> None:
    """``iopf_queue_free``: remove every device, run what is queued, free it."""
    for param in list(queue.devices):
        iopf_queue_remove_device(queue, param.dev)
    flush_workqueue(queue)
    if queue.timer is not None:
        platform().clock.cancel(queue.timer)
        queue.timer = None
    kfree(queue.kmem)
    queue.kmem = 0
