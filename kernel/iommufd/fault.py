"""drivers/iommu/iommufd/fault.c (Linux 6.12): the iommufd fault queue.

IOMMU_FAULT_QUEUE_ALLOC makes an :class:`IommufdFault` object and a file
(``[iommufd-pgfault]``) whose descriptor user space reads
``struct iommu_hwpt_pgfault`` records from and writes
``struct iommu_hwpt_page_response`` records to. A HWPT allocated with
IOMMU_HWPT_FAULT_ID_VALID and the object's id is IOPF-capable: its domain's
``iopf_handler`` (:func:`iommufd_fault_iopf_handler`) queues each page-request
group on the object instead of resolving it, and attaching it to a device enables
IOPF on the device (PRI, through the vendor driver) for as long as a fault-capable
HWPT is attached. A group read is given a cookie; writing a response with that
cookie sends the PRG response to the device. Detaching (or replacing) the HWPT
answers the groups still queued or read but unanswered with Invalid Request
(:func:`iommufd_auto_response_faults`), as does destroying the object.

``read(buf, count)``/``write(buf, count)`` take a user buffer of the calling task
and answer like the syscalls: a byte count, or a negative errno (EFAULT when the
buffer cannot be written or read).

Departures from Linux: the file is an :class:`IommufdFaultFile` found by its
descriptor in one table of fault files (:func:`fault_fd_get`), not in the task's
descriptor table. A group whose records cannot be copied out stays queued (6.12
takes it off the queue and loses it) and a response that cannot be read is
-EFAULT (6.12 returns the uncopied byte count). One thread: no
mutex or wait queue (``poll`` is :meth:`IommufdFaultFile.poll`). The attach handle
of 6.12 is replaced by the device lookup in :func:`_idev_of` (the domain's device).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define, field

from kernel.context import KernelSlot
from kernel.device import Device
from kernel.errno import EFAULT, EINVAL, ENOENT, ENOMEM, EOPNOTSUPP, ESPIPE, KernelError
from kernel.fault_inject import should_fail
from kernel.iommu.io_pgfault import (
    IOMMU_PAGE_RESP_INVALID,
    IopfGroup,
    iopf_free_group,
    iopf_group_response,
)
from kernel.iommu.iommu import (
    IOMMU_DEV_FEAT_IOPF,
    iommu_dev_disable_feature,
    iommu_dev_enable_feature,
)
from kernel.iommufd.main import (
    IommufdCtx,
    IommufdObject,
    IommufdObjectType,
    IommufdUcmd,
    iommufd_get_object,
    iommufd_object_abort_and_destroy,
    iommufd_object_alloc,
    iommufd_object_finalize,
    iommufd_ucmd_respond,
)
from kernel.iommufd.user import copy_from_user, copy_to_user
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from kernel.iommufd.device import IommufdDevice
    from kernel.iommufd.hw_pagetable import IommufdHwPagetable

IOMMUFD_OBJ_FAULT = IommufdObjectType.IOMMUFD_OBJ_FAULT
XA_LIMIT_32B = (1 << 32) - 1


@define(eq=False)
class IommufdFault(IommufdObject):
    """``struct iommufd_fault``: groups delivered and not yet read (``deliver``),
    groups read and awaiting a response by cookie (``response``), the file."""

    deliver: list[tuple[IopfGroup, IommufdDevice]] = field(factory=list, repr=False)
    response: dict[int, tuple[IopfGroup, IommufdDevice]] = field(factory=dict, repr=False)
    next_cookie: int = 1
    filep: IommufdFaultFile | None = field(default=None, repr=False)

    def destroy(self) -> None:
        """``iommufd_fault_destroy``: every group still held is answered Invalid."""
        for group, _ in self.deliver:
            iopf_group_response(group, IOMMU_PAGE_RESP_INVALID)
            iopf_free_group(group)
        self.deliver.clear()
        for group, _ in self.response.values():
            iopf_group_response(group, IOMMU_PAGE_RESP_INVALID)
            iopf_free_group(group)
        self.response.clear()


@define(eq=False)
class IommufdFaultFile:
    """The fault queue's file (``iommufd_fault_fops``)."""

    fault: IommufdFault
    fd: int = -1
    released: bool = False

    def read(self, buf: int, count: int) -> int:
        """``iommufd_fault_fops_read``: whole groups of records to the user buffer
        ``buf`` while they fit in ``count`` bytes; returns the bytes written (0 when
        nothing is queued); ESPIPE unless ``count`` is a multiple of the record
        size."""
        return iommufd_fault_fops_read(self.fault, buf, count)

    def write(self, buf: int, count: int) -> int:
        """``iommufd_fault_fops_write`` of ``count`` bytes of responses at the user
        address ``buf``: bytes consumed, or a negative errno if the first response
        failed."""
        return iommufd_fault_fops_write(self.fault, buf, count)

    def poll(self) -> bool:
        """``iommufd_fault_fops_poll``: readable (EPOLLIN) when a group is queued."""
        return bool(self.fault.deliver)

    def close(self) -> None:
        """``close(fd)`` → ``iommufd_fault_fops_release``: drop the object's user."""
        if self.released:
            return
        self.released = True
        FAULT_FDS.get().pop(self.fd, None)
        self.fault.users -= 1


FAULT_FDS: KernelSlot[dict[int, IommufdFaultFile]] = KernelSlot("iommufd_fault_fds", dict)


def fault_fd_get(fd: int) -> IommufdFaultFile:
    """The open fault-queue file of descriptor ``fd`` (EBADF's stand-in: ENOENT)."""
    filep = FAULT_FDS.get().get(fd)
    if filep is None:
        raise ENOENT(f"fd {fd} is not an open fault queue")
    return filep


def _fd_unused(fds: dict[int, IommufdFaultFile]) -> int:
    """``get_unused_fd_flags``: the lowest free descriptor."""
    fd = 3
    while fd in fds:
        fd += 1
    return fd


def _fd_install(filep: IommufdFaultFile, fd: int) -> None:
    """``fd_install``."""
    FAULT_FDS.get()[fd] = filep
    filep.fd = fd


# --------------------------------------------------------------------------- ioctl


def iommufd_fault_alloc(ucmd: IommufdUcmd) -> None:
    """``iommufd_fault_alloc`` (IOMMU_FAULT_QUEUE_ALLOC): the object and its fd."""
    cmd: uapi.iommu_fault_alloc = ucmd.cmd
    if cmd.flags:
        raise EOPNOTSUPP(f"fault_alloc flags {cmd.flags:#x}")
    ictx = ucmd.ictx
    fault = iommufd_object_alloc(ictx, lambda: IommufdFault(ictx, IOMMUFD_OBJ_FAULT))
    if should_fail("kmalloc"):  # anon_inode_getfile
        iommufd_object_abort_and_destroy(ictx, fault)
        raise ENOMEM("[iommufd-pgfault] file (injected)")
    fault.filep = IommufdFaultFile(fault)
    cmd.out_fault_id = fault.id
    cmd.out_fault_fd = _fd_unused(FAULT_FDS.get())
    try:
        iommufd_ucmd_respond(ucmd, uapi.iommu_fault_alloc.SIZE)
    except KernelError:  # put_unused_fd, fput, abort
        iommufd_object_abort_and_destroy(ictx, fault)
        raise
    fault.users += 1
    iommufd_object_finalize(ictx, fault)
    _fd_install(fault.filep, cmd.out_fault_fd)


def iommufd_get_fault(ictx: IommufdCtx, oid: int) -> IommufdFault:
    """``iommufd_get_fault``: a reference to fault object ``oid`` or ENOENT."""
    obj = iommufd_get_object(ictx, oid, IOMMUFD_OBJ_FAULT)
    assert isinstance(obj, IommufdFault)
    return obj


# --------------------------------------------------------------------------- file


def _compose(group: IopfGroup, idev: IommufdDevice, cookie: int) -> bytes:
    """``iommufd_compose_fault_message`` for each fault of the group."""
    out = bytearray()
    for iopf in group.faults:
        prm = iopf.fault.prm
        rec = uapi.iommu_hwpt_pgfault(
            flags=prm.flags
            & (uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID | uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE),
            dev_id=idev.id,
            pasid=prm.pasid,
            grpid=prm.grpid,
            perm=prm.perm,
            addr=prm.addr,
            length=0,
            cookie=cookie,
        )
        out += rec.to_bytes()
    return bytes(out)


def iommufd_fault_fops_read(fault: IommufdFault, buf: int, count: int) -> int:
    """``iommufd_fault_fops_read``; a group whose records do not all fit, or cannot
    be copied out (EFAULT), stays queued. Fault injection: the cookie allocation
    (``xa_alloc``)."""
    size = uapi.iommu_hwpt_pgfault.SIZE
    if count % size:
        return -ESPIPE.errno
    done = 0
    rc = 0
    while fault.deliver and count > done:
        group, idev = fault.deliver[0]
        if group.fault_count * size > count - done:
            break
        if should_fail("xa_alloc"):
            rc = -ENOMEM.errno
            break
        cookie = fault.next_cookie
        while cookie in fault.response:
            cookie = cookie + 1 if cookie < XA_LIMIT_32B else 1
        try:
            copy_to_user(buf + done, _compose(group, idev, cookie))
        except EFAULT:
            rc = -EFAULT.errno
            break
        fault.next_cookie = cookie + 1 if cookie < XA_LIMIT_32B else 1
        fault.response[cookie] = (group, idev)
        fault.deliver.pop(0)
        done += group.fault_count * size
    return done if done else rc


def iommufd_fault_fops_write(fault: IommufdFault, buf: int, count: int) -> int:
    """``iommufd_fault_fops_write``: each response's code must be SUCCESS or
    INVALID and its cookie one read and not yet answered (EINVAL otherwise); an
    unreadable buffer is EFAULT."""
    size = uapi.iommu_hwpt_page_response.SIZE
    if count % size:
        return -ESPIPE.errno
    done = 0
    rc = 0
    while count > done:
        try:
            resp = uapi.iommu_hwpt_page_response.from_bytes(copy_from_user(buf + done, size))
        except EFAULT:
            rc = -EFAULT.errno
            break
        if resp.code not in (uapi.IOMMUFD_PAGE_RESP_SUCCESS, uapi.IOMMUFD_PAGE_RESP_INVALID):
            rc = -EINVAL.errno
            break
        entry = fault.response.pop(resp.cookie, None)
        if entry is None:
            rc = -EINVAL.errno
            break
        iopf_group_response(entry[0], resp.code)
        iopf_free_group(entry[0])
        done += size
    return done if done else rc


# --------------------------------------------------------------------------- handler


def _idev_of(hwpt: IommufdHwPagetable, dev: Device) -> IommufdDevice | None:
    """The bound iommufd device of ``dev`` (6.12 finds it through the attach handle)."""
    from kernel.iommufd.device import IommufdDevice

    for obj in hwpt.ictx.objects.values():
        if isinstance(obj, IommufdDevice) and obj.dev is dev:
            return obj
    return None


def iommufd_fault_iopf_handler(hwpt: IommufdHwPagetable, group: IopfGroup) -> int:
    """``iommufd_fault_iopf_handler``: queue the group on the HWPT's fault object
    for user space (nonzero, so io-pgfault aborts it, if the device is not bound)."""
    fault = hwpt.fault
    idev = _idev_of(hwpt, group.fault_param.dev)
    if fault is None or idev is None:
        return -EINVAL.errno
    fault.deliver.append((group, idev))
    return 0


def iommufd_fault_iopf_enable(idev: IommufdDevice) -> None:
    """``iommufd_fault_iopf_enable``: IOPF on for the device (counted). 6.12 refuses
    a virtual function (EINVAL); the model has no SR-IOV, so that check is absent."""
    if not idev.iopf_enabled:
        iommu_dev_enable_feature(idev.device, IOMMU_DEV_FEAT_IOPF)
    idev.iopf_enabled += 1


def iommufd_fault_iopf_disable(idev: IommufdDevice) -> None:
    """``iommufd_fault_iopf_disable``."""
    idev.iopf_enabled -= 1
    if not idev.iopf_enabled:
        iommu_dev_disable_feature(idev.device, IOMMU_DEV_FEAT_IOPF)


def iommufd_auto_response_faults(hwpt: IommufdHwPagetable, idev: IommufdDevice) -> None:
    """``iommufd_auto_response_faults``: the device's groups on the HWPT's fault
    object, queued or read, are answered Invalid Request."""
    fault = hwpt.fault
    if fault is None:
        return
    for entry in [e for e in fault.deliver if e[1] is idev]:
        fault.deliver.remove(entry)
        iopf_group_response(entry[0], IOMMU_PAGE_RESP_INVALID)
        iopf_free_group(entry[0])
    for cookie in [c for c, e in fault.response.items() if e[1] is idev]:
        group, _ = fault.response.pop(cookie)
        iopf_group_response(group, IOMMU_PAGE_RESP_INVALID)
        iopf_free_group(group)


def iommufd_fault_attach_prepare(hwpt: IommufdHwPagetable, idev: IommufdDevice) -> None:
    """The IOPF half of ``iommufd_fault_domain_attach_dev`` (before the domain is
    attached): EINVAL unless the HWPT is fault-capable, then IOPF on."""
    if hwpt.fault is None:
        raise EINVAL("HWPT is not fault capable")
    iommufd_fault_iopf_enable(idev)


def iommufd_fault_detach_finish(hwpt: IommufdHwPagetable, idev: IommufdDevice) -> None:
    """The IOPF half of ``iommufd_fault_domain_detach_dev`` (after the domain is
    detached): outstanding faults answered, IOPF off."""
    iommufd_auto_response_faults(hwpt, idev)
    iommufd_fault_iopf_disable(idev)


def iommufd_fault_replace(
    old: IommufdHwPagetable, new: IommufdHwPagetable, idev: IommufdDevice, *, done: bool
) -> None:
    """``iommufd_fault_domain_replace_dev``'s IOPF halves: before the replace
    (``done`` False) IOPF on if the new HWPT takes faults and the old did not;
    after it (``done`` True) the old HWPT's faults answered and IOPF off if the new
    HWPT does not take faults."""
    if not done:
        if new.fault is not None and old.fault is None:
            iommufd_fault_iopf_enable(idev)
        return
    if old.fault is not None:
        iommufd_auto_response_faults(old, idev)
        if new.fault is None:
            iommufd_fault_iopf_disable(idev)


def iommufd_fault_replace_abort(
    old: IommufdHwPagetable, new: IommufdHwPagetable, idev: IommufdDevice
) -> None:
    """Undo :func:`iommufd_fault_replace`'s first half when the replace failed."""
    if new.fault is not None and old.fault is None:
        iommufd_fault_iopf_disable(idev)


def iommufd_hwpt_set_fault(hwpt: IommufdHwPagetable, ictx: IommufdCtx, fault_id: int) -> None:
    """IOMMU_HWPT_ALLOC's fault part (``iommufd_hwpt_alloc``): the HWPT holds the
    fault object and its domain's faults go to it. ENOENT for an id that is not a
    fault object."""
    fault = iommufd_get_fault(ictx, fault_id)
    assert hwpt.domain is not None
    hwpt.fault = fault
    hwpt.domain.iopf_handler = lambda group: iommufd_fault_iopf_handler(hwpt, group)
    # The HWPT's hold replaces the lookup reference (refcount_inc + put_object).
