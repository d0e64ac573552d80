"""drivers/dma/idxd/cdev.c: the character device of a user WQ (``/dev/dsa/wqD.Q``).

A process opens the node: with SVA on (``IDXD_FLAG_USER_PASID_ENABLED``) the
opener's address space is bound to the device (``iommu_sva_bind_device``) and its
PASID recorded; a dedicated WQ takes that PASID in its WQCFG (one opener at a time,
EBUSY for a second). The process maps the WQ's limited portal page (``mmap``,
one page, uncached, CAP_SYS_RAWIO needed where user submission is not safe —
INTEL-SA-01084) and submits with ENQCMD (shared WQ, PASID from IA32_PASID) or
MOVDIR64B (dedicated WQ), or hands descriptors to ``write``, which checks them
and submits on the process's behalf (ENQCMDS with the context's PASID, priv 0).
``poll`` reports a pending software error. Closing the last reference drains what
the device accepted for the PASID (Drain PASID on a shared WQ, Disable WQ on a
dedicated one) before the bond is dropped, so no descriptor runs against an
unbound address space.

Differences from Linux: no per-file ``file%d`` device or its sysfs counters, no
event log (``idxd_cdev_evl_drain_pasid`` has nothing to drain), no
``idxd_copy_cr`` (completion-record faults go to the page-request path).
"""

from __future__ import annotations

from attrs import define

from drivers.idxd import registers as regs
from drivers.idxd.device import (
    idxd_device_drain_pasid,
    idxd_drv_disable_wq,
    idxd_drv_enable_wq,
    idxd_wq_disable_pasid,
    idxd_wq_drain,
    idxd_wq_set_pasid,
)
from drivers.idxd.idxd import (
    IDXD_DEV_ENABLED,
    IDXD_WQ_ENABLED,
    IDXD_WQT_USER,
    IdxdWq,
)
from drivers.idxd.submit import idxd_enqcmds, idxd_wq_portal_addr
from kernel.errno import (
    EAGAIN,
    EBUSY,
    EFAULT,
    EINVAL,
    EIO,
    ENODEV,
    ENOMEM,
    ENXIO,
    EOPNOTSUPP,
    EPERM,
    KernelError,
)
from kernel.fs import File, Inode, cdev_device_add, cdev_device_del
from kernel.io import movdir64b
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.iommu.iommu_sva import (
    IommuSva,
    iommu_sva_bind_device,
    iommu_sva_get_pasid,
    iommu_sva_unbind_device,
)
from kernel.memory import remap_pfn_range
from kernel.mm import GFP_KERNEL, PAGE_SIZE, kfree, kzalloc
from kernel.mm_types import MmStruct, VmAreaStruct
from kernel.mmap import VM_DONTCOPY
from kernel.pci import pci_resource_start
from kernel.pgtable import pgprot_noncached
from kernel.printk import dev_dbg, dev_err, dev_info, dev_warn
from kernel.sched import CAP_SYS_RAWIO, capable, get_current
from kernel.trace import define_tracepoint
from kernel.uaccess import copy_from_user
from kernel.uapi.idxd import DSA_OPCODE_BATCH, DsaHwDesc

EPOLLIN = 0x0001
EPOLLRDNORM = 0x0040
DSA_COMP_ADDR_ALIGN = 0x20

trace_idxd_user_submit = define_tracepoint(
    "idxd:user_submit",
    ("wq", "pid", "pasid", "opcode", "insn"),
    "{wq}: pid {pid} pasid={pasid} opcode={opcode} via {insn}",
)


@define(eq=False)
class IdxdUserContext:
    """``struct idxd_user_context``: one open file of a user WQ."""

    wq: IdxdWq
    pid: int
    kmem: int
    pasid: int = IOMMU_PASID_INVALID
    mm: MmStruct | None = None
    sva: IommuSva | None = None


@define(eq=False)
class IdxdCdev:
    """``struct idxd_cdev``: the node of one user WQ."""

    wq: IdxdWq
    path: str
    kmem: int


def _ctx(filp: File) -> IdxdUserContext:
    ctx = filp.private_data
    assert isinstance(ctx, IdxdUserContext)
    return ctx


def idxd_cdev_open(inode: Inode, filp: File) -> None:
    """``idxd_cdev_open``: bind the opener's mm and record its PASID; a dedicated WQ
    takes the PASID (EBUSY while another process has it open). Every step unwinds
    on failure."""
    cdev: IdxdCdev = inode.i_cdev
    wq = cdev.wq
    idxd = wq.idxd
    dev = idxd.pdev
    task = get_current()
    if task is None or task.mm is None:
        raise EINVAL("idxd cdev opened without a user task")
    if wq.state != IDXD_WQ_ENABLED:
        raise ENXIO(f"{wq.name_dev}: not enabled")
    kmem = kzalloc(128, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("idxd_user_context")
    if wq.client_count > 0 and wq.dedicated:
        kfree(kmem)
        raise EBUSY(f"{wq.name_dev}: dedicated WQ already open")
    ctx = IdxdUserContext(wq, task.pid, kmem)
    if idxd.user_pasid_enabled:
        try:
            sva = iommu_sva_bind_device(dev, task.mm)
        except KernelError as err:
            dev_err(dev, f"pasid allocation failed: {-err.errno}")
            kfree(kmem)
            raise
        pasid = iommu_sva_get_pasid(sva)
        ctx.sva, ctx.pasid, ctx.mm = sva, pasid, task.mm
        if pasid in wq.upasid_xa:
            dev_warn(dev, "PASID entry already exist in xarray.")
        else:
            wq.upasid_xa[pasid] = ctx
        if wq.dedicated:
            try:
                idxd_wq_set_pasid(wq, pasid)
            except KernelError as err:
                dev_err(dev, f"wq set pasid failed: {-err.errno}")
                _xa_pasid_remove(ctx)
                iommu_sva_unbind_device(sva)
                kfree(kmem)
                raise
    filp.private_data = ctx
    wq.client_count += 1
    dev_dbg(dev, f"{wq.name_dev}: opened by pid {ctx.pid} (PASID {ctx.pasid})")


def _xa_pasid_remove(ctx: IdxdUserContext) -> None:
    """``idxd_xa_pasid_remove``."""
    wq = ctx.wq
    if wq.upasid_xa.get(ctx.pasid) is ctx:
        del wq.upasid_xa[ctx.pasid]
    else:
        dev_warn(wq.idxd.pdev, f"xarray cmpxchg failed for pasid {ctx.pasid}")


def idxd_cdev_release(inode: Inode, filp: File) -> None:
    """``idxd_cdev_release`` → ``idxd_file_dev_release``: wait for the work in flight
    (Drain PASID on a shared WQ, disabling a dedicated WQ's PASID drains it), then
    unbind the address space."""
    ctx = _ctx(filp)
    filp.private_data = None
    wq = ctx.wq
    idxd = wq.idxd
    if idxd.state == IDXD_DEV_ENABLED and wq.state == IDXD_WQ_ENABLED:
        if wq.shared:
            idxd_device_drain_pasid(idxd, ctx.pasid)
        elif idxd.user_pasid_enabled:
            try:
                idxd_wq_disable_pasid(wq)
            except KernelError:
                dev_err(idxd.pdev, "wq disable pasid failed.")
        else:
            idxd_wq_drain(wq)
    if ctx.sva is not None:
        iommu_sva_unbind_device(ctx.sva)
        _xa_pasid_remove(ctx)
    kfree(ctx.kmem)
    wq.client_count -= 1


def idxd_cdev_mmap(filp: File, vma: VmAreaStruct) -> None:
    """``idxd_cdev_mmap``: the WQ's limited portal page, uncached, into the
    process. EINVAL for more than a page; EPERM without CAP_SYS_RAWIO where user
    submission is not safe."""
    ctx = _ctx(filp)
    wq = ctx.wq
    idxd = wq.idxd
    if vma.vm_end - vma.vm_start > PAGE_SIZE:
        task = get_current()
        comm = task.comm if task is not None else "kernel"
        dev_info(
            idxd.pdev, f"{comm}: idxd_cdev_mmap: mapping too large: {vma.vm_end - vma.vm_start}"
        )
        raise EINVAL("idxd portal mapping larger than a page")
    if not idxd.user_submission_safe and not capable(CAP_SYS_RAWIO):
        raise EPERM(f"{wq.name_dev}: direct submission needs CAP_SYS_RAWIO")
    vma.vm_flags |= VM_DONTCOPY
    base = pci_resource_start(idxd.pdev, regs.IDXD_WQ_BAR)
    phys = base + regs.idxd_get_wq_portal_full_offset(wq.id, regs.IDXD_PORTAL_LIMITED)
    vma.vm_page_prot = pgprot_noncached(vma.vm_page_prot)
    vma.vm_private_data = ctx
    remap_pfn_range(vma, vma.vm_start, phys >> 12, PAGE_SIZE, vma.vm_page_prot)


def idxd_submit_user_descriptor(ctx: IdxdUserContext, udesc: int) -> None:
    """``idxd_submit_user_descriptor``: copy the descriptor in, refuse a batch where
    user submission is unsafe and a misaligned completion address (EINVAL), then
    MOVDIR64B (dedicated) or ENQCMDS with the context's PASID and priv 0 (shared;
    EAGAIN when the WQ keeps refusing)."""
    wq = ctx.wq
    raw, left = copy_from_user(udesc, 64)
    if left:
        raise EFAULT(f"descriptor at {udesc:#x} unreadable")
    desc = DsaHwDesc.from_bytes(raw)
    if desc.opcode == DSA_OPCODE_BATCH and not wq.idxd.user_submission_safe:
        raise EINVAL("batch descriptors cannot be submitted through write()")
    if desc.completion_addr % DSA_COMP_ADDR_ALIGN:
        raise EINVAL(f"completion address {desc.completion_addr:#x} not 32-byte aligned")
    if wq.portal is None or wq.state != IDXD_WQ_ENABLED:
        raise EIO(f"{wq.name_dev}: not enabled")
    portal = idxd_wq_portal_addr(wq)
    if wq.dedicated:
        movdir64b(portal, raw)
        insn = "movdir64b"
    else:
        desc.priv = 0
        desc.pasid = ctx.pasid
        rc = idxd_enqcmds(wq, portal, desc.to_bytes())
        if rc:
            raise EAGAIN(f"{wq.name_dev}: ENQCMDS refused")
        insn = "enqcmds"
    trace_idxd_user_submit(
        wq=wq.name_dev, pid=ctx.pid, pasid=ctx.pasid, opcode=desc.opcode, insn=insn
    )


def idxd_cdev_write(filp: File, buf: int, count: int) -> int:
    """``idxd_cdev_write``: submit ``count // 64`` descriptors from ``buf``; returns
    the bytes submitted, or the first error when none was."""
    ctx = _ctx(filp)
    written = 0
    for i in range(count // 64):
        try:
            idxd_submit_user_descriptor(ctx, buf + 64 * i)
        except KernelError:
            if written:
                return written
            raise
        written += 64
    return written


def idxd_cdev_poll(filp: File) -> int:
    """``idxd_cdev_poll``: readable while a software error is latched."""
    idxd = _ctx(filp).wq.idxd
    return EPOLLIN | EPOLLRDNORM if idxd.sw_err[0] & 1 else 0


class IdxdCdevFops:
    """``idxd_cdev_fops``."""

    open = staticmethod(idxd_cdev_open)
    release = staticmethod(idxd_cdev_release)
    mmap = staticmethod(idxd_cdev_mmap)
    write = staticmethod(idxd_cdev_write)
    poll = staticmethod(idxd_cdev_poll)


IDXD_CDEV_FOPS = IdxdCdevFops()


def idxd_cdev_path(wq: IdxdWq) -> str:
    return f"/dev/dsa/wq{wq.idxd.id}.{wq.id}"


def idxd_wq_add_cdev(wq: IdxdWq) -> None:
    """``idxd_wq_add_cdev``: the WQ's node appears."""
    kmem = kzalloc(64, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("idxd_cdev")
    path = idxd_cdev_path(wq)
    cdev = IdxdCdev(wq, path, kmem)
    try:
        cdev_device_add(path, cdev, IDXD_CDEV_FOPS)
    except KernelError:
        kfree(kmem)
        raise
    wq.idxd_cdev = cdev


def idxd_wq_del_cdev(wq: IdxdWq) -> None:
    """``idxd_wq_del_cdev``: the node goes (open files keep their context)."""
    cdev = wq.idxd_cdev
    if cdev is None:
        return
    wq.idxd_cdev = None
    cdev_device_del(cdev.path)
    kfree(cdev.kmem)


def idxd_user_drv_probe(wq: IdxdWq) -> None:
    """``idxd_user_drv_probe``: a user WQ needs SVA (EOPNOTSUPP otherwise: without it
    a process could reach physical memory through the WQ); then enable it and add
    its node."""
    idxd = wq.idxd
    if idxd.state != IDXD_DEV_ENABLED:
        raise ENXIO(f"{idxd.name}: not enabled")
    if not idxd.user_pasid_enabled:
        dev_dbg(idxd.pdev, "User type WQ cannot be enabled without SVA.")
        raise EOPNOTSUPP(f"{wq.name_dev}: user WQ needs SVA")
    if wq.driver_name and wq.driver_name != "user":
        raise ENODEV(f"{wq.name_dev}.driver_name: {wq.driver_name!r} is not the user driver")
    wq.type = IDXD_WQT_USER
    idxd_drv_enable_wq(wq)
    try:
        idxd_wq_add_cdev(wq)
    except KernelError:
        idxd_drv_disable_wq(wq)
        raise


def idxd_user_drv_remove(wq: IdxdWq) -> None:
    """``idxd_user_drv_remove``: the node goes, then the WQ is disabled. The WQ keeps
    its ``type`` (Linux resets it to none; here it is configuration the JSON
    round-trip keeps)."""
    if wq.idxd_cdev is None:
        return
    idxd_wq_del_cdev(wq)
    idxd_drv_disable_wq(wq)
