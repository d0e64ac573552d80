"""Shared Virtual Addressing (drivers/iommu/iommu-sva.c).

``iommu_sva_bind_device(dev, mm)`` gives the process address space
(:class:`kernel.mm_types.MmStruct`) a global PASID (shared with
``iommu_alloc_global_pasid``), finds or allocates an SVA domain for the mm
(``domain_alloc_sva``, which pins the mm with ``mmgrab`` and whose vendor driver
subscribes an mmu notifier) and attaches it at that PASID; unbind undoes it on
the last reference. The PASID stays with the mm until its last ``mmdrop``
(:func:`mm_pasid_drop`), which may come after the process exited.

Page requests: an SVA domain's ``iopf_handler`` is :func:`iommu_sva_iopf_handler`,
which queues the fault group on the device's IOPF workqueue; the work
(:func:`iommu_sva_handle_iopf`) resolves each fault against the mm
(:func:`iommu_sva_handle_mm`: the VMA must exist and allow the access, then
``handle_mm_fault``) and sends one response for the group: Success, or Invalid
Request at the first fault it could not resolve.

Differences from Linux: the per-mm IOMMU data (``mm->iommu_mm``) lives on the mm
itself; no mmap lock (one thread).
"""

from __future__ import annotations

from typing import cast

from attrs import define

from kernel.device import Device, dev_name
from kernel.errno import ENODEV, ENOMEM, ENOSPC, EOPNOTSUPP, EOVERFLOW, KernelError
from kernel.fork import mmdrop, mmget_not_zero, mmgrab, mmput
from kernel.iommu.io_pgfault import (
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
    IOMMU_FAULT_PERM_EXEC,
    IOMMU_FAULT_PERM_PRIV,
    IOMMU_FAULT_PERM_READ,
    IOMMU_FAULT_PERM_WRITE,
    IOMMU_PAGE_RESP_INVALID,
    IOMMU_PAGE_RESP_SUCCESS,
    IommuFault,
    IopfGroup,
    iopf_free_group,
    iopf_group_response,
    queue_work,
)
from kernel.iommu.iommu import dev_iommu_ops, iommu_domain_free
from kernel.iommu.iommu_h import (
    IOMMU_DOMAIN_SVA,
    IOMMU_PASID_INVALID,
    IommuDomain,
    SupportsDomainAllocSva,
    has_optional_op,
)
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.memory import (
    FAULT_FLAG_INSTRUCTION,
    FAULT_FLAG_REMOTE,
    FAULT_FLAG_USER,
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    handle_mm_fault,
)
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.mm_types import MmStruct
from kernel.mmap import VM_EXEC, VM_READ, VM_WRITE, vma_lookup


@define(eq=False)
class IommuSva:
    """``struct iommu_sva``: one device's bond to an mm."""

    dev: Device
    domain: IommuDomain
    users: int = 1
    kmem: int = 0


def mm_pasid_drop(mm: MmStruct) -> None:
    """``mm_pasid_drop`` (from ``__mmdrop``): the mm's PASID goes back."""
    if mm.pasid != IOMMU_PASID_INVALID:
        iommu_free_global_pasid(mm.pasid)
        mm.pasid = IOMMU_PASID_INVALID


def iommu_sva_alloc_pasid(mm: MmStruct, dev: Device) -> int:
    """``iommu_alloc_mm_data`` + ``mm_pasid``: one global PASID per mm."""
    assert dev.iommu is not None
    if mm.pasid != IOMMU_PASID_INVALID:
        if mm.pasid >= dev.iommu.max_pasids:
            raise EOVERFLOW(f"mm PASID {mm.pasid} beyond {dev_name(dev)}'s max_pasids")
        return mm.pasid
    pasid = iommu_alloc_global_pasid(dev)
    if pasid == IOMMU_PASID_INVALID:
        raise ENOSPC(f"{dev_name(dev)}: no PASID for the mm")
    mm.pasid = pasid
    return pasid


def iommu_sva_domain_alloc(dev: Device, mm: MmStruct) -> IommuDomain:
    """``iommu_sva_domain_alloc``: the driver's ``domain_alloc_sva``."""
    ops = dev_iommu_ops(dev)
    if not has_optional_op(ops, "domain_alloc_sva"):
        raise EOPNOTSUPP(f"{dev_name(dev)}: driver has no SVA domains")
    dom = cast(SupportsDomainAllocSva, ops).domain_alloc_sva(dev, mm)
    dom.type = IOMMU_DOMAIN_SVA
    dom.owner = ops
    dom.mm = mm
    dom.iopf_handler = iommu_sva_iopf_handler
    mmgrab(mm)
    return dom


def _sva_domain_free(dom: IommuDomain, mm: MmStruct) -> None:
    """``iommu_domain_free`` of an SVA domain: the domain's ``mmgrab`` goes with it."""
    iommu_domain_free(dom)
    mmdrop(mm)


def iommu_sva_bind_device(dev: Device, mm: MmStruct) -> IommuSva:
    """``iommu_sva_bind_device``: reuse this device's bond, else reuse one of the mm's
    SVA domains, else allocate one; attach it at the mm's PASID."""
    if dev.iommu is None:
        raise ENODEV(f"{dev_name(dev)}: not behind an IOMMU")
    pasid = iommu_sva_alloc_pasid(mm, dev)
    for h in mm.sva_handles:
        bond: IommuSva = h
        if bond.dev is dev:
            bond.users += 1
            return bond
    kmem = kzalloc(64, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("iommu_sva")
    try:
        for dom in mm.sva_domains:
            try:
                iommu_attach_device_pasid(dom, dev, pasid)
            except KernelError:
                continue
            dom.users += 1
            handle = IommuSva(dev, dom, kmem=kmem)
            mm.sva_handles.append(handle)
            return handle
        dom = iommu_sva_domain_alloc(dev, mm)
        try:
            iommu_attach_device_pasid(dom, dev, pasid)
        except KernelError:
            _sva_domain_free(dom, mm)
            raise
    except KernelError:
        kfree(kmem)
        raise
    dom.users = 1
    mm.sva_domains.append(dom)
    handle = IommuSva(dev, dom, kmem=kmem)
    mm.sva_handles.append(handle)
    return handle


def iommu_sva_unbind_device(handle: IommuSva) -> None:
    """``iommu_sva_unbind_device``: on the last reference detach the PASID; free the
    domain when no device uses it."""
    dom = handle.domain
    mm: MmStruct = dom.mm
    handle.users -= 1
    if handle.users:
        return
    iommu_detach_device_pasid(dom, handle.dev, mm.pasid)
    mm.sva_handles.remove(handle)
    kfree(handle.kmem)
    dom.users -= 1
    if dom.users == 0:
        mm.sva_domains.remove(dom)
        _sva_domain_free(dom, mm)


def iommu_sva_get_pasid(handle: IommuSva) -> int:
    """``iommu_sva_get_pasid``."""
    mm: MmStruct = handle.domain.mm
    return mm.pasid


# --------------------------------------------------------------------------- page faults


def iommu_sva_handle_mm(fault: IommuFault, mm: MmStruct) -> int:
    """``iommu_sva_handle_mm``: Invalid Request for a request without PASID, an mm
    that is gone, an address outside every VMA or an access the VMA does not allow,
    or a fault ``handle_mm_fault`` cannot resolve; else Success."""
    prm = fault.prm
    status = IOMMU_PAGE_RESP_INVALID
    if not prm.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID:
        return status
    if not mmget_not_zero(mm):
        return status
    try:
        vma = vma_lookup(mm, prm.addr)
        if vma is None:
            return status
        access = 0
        flags = FAULT_FLAG_REMOTE
        if prm.perm & IOMMU_FAULT_PERM_READ:
            access |= VM_READ
        if prm.perm & IOMMU_FAULT_PERM_WRITE:
            access |= VM_WRITE
            flags |= FAULT_FLAG_WRITE
        if prm.perm & IOMMU_FAULT_PERM_EXEC:
            access |= VM_EXEC
            flags |= FAULT_FLAG_INSTRUCTION
        if not prm.perm & IOMMU_FAULT_PERM_PRIV:
            flags |= FAULT_FLAG_USER
        if access & ~vma.vm_flags:
            return status
        ret = handle_mm_fault(vma, prm.addr, flags)
        return IOMMU_PAGE_RESP_INVALID if ret & VM_FAULT_ERROR else IOMMU_PAGE_RESP_SUCCESS
    finally:
        mmput(mm)


def iommu_sva_handle_iopf(group: IopfGroup) -> None:
    """``iommu_sva_handle_iopf`` (the work item): resolve the group's faults in order,
    stopping at the first failure, then respond once and free the group."""
    status = IOMMU_PAGE_RESP_SUCCESS
    assert group.domain is not None
    mm: MmStruct = group.domain.mm
    for iopf in group.faults:
        if status != IOMMU_PAGE_RESP_SUCCESS:
            break
        status = iommu_sva_handle_mm(iopf.fault, mm)
    iopf_group_response(group, status)
    iopf_free_group(group)


def iommu_sva_iopf_handler(group: IopfGroup) -> int:
    """``iommu_sva_iopf_handler``: queue the group's work on the device's IOPF queue."""
    queue_work(group.fault_param.queue, lambda: iommu_sva_handle_iopf(group))
    return 0
