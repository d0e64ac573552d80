"""Thin typed helpers over :meth:`~kernel.iommufd.main.IommufdCtx.ioctl`, as a
user-space library (or the selftest's ``test_ioctl_*`` macros) would write them:
each packs its UAPI struct into the process's memory, issues ``ioctl(fd, cmd,
arg)`` as the process and raises the :class:`~kernel.errno.KernelError` of the
errno it returned.

An :class:`Iommufd` belongs to a user process (a :class:`~kernel.sched.TaskStruct`
with its own address space): its argument structs travel through one page of that
process (``arg``, mapped at open), and array arguments (IOVA ranges, vendor data,
dirty bitmaps, fault records) through user buffers the caller passes by address.
No kernel-side shortcut: everything goes through the bytes of
``include/uapi/linux/iommufd.h`` in user memory, so these exercise exactly what
user space reaches.
"""

from __future__ import annotations

from attrs import define, field

from kernel import uaccess
from kernel.errno import BY_ERRNO, EFAULT, KernelError
from kernel.fs import ksys_mmap
from kernel.iommufd.main import IommufdCtx, iommufd_fops_open
from kernel.mm import PAGE_SIZE
from kernel.mmap import (
    MAP_ANONYMOUS,
    MAP_POPULATE,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    do_munmap,
)
from kernel.sched import TaskStruct, use_task
from kernel.uapi import iommufd as uapi
from kernel.uapi.iommufd import UapiStruct

RW = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE


def raise_errno(rc: int, what: str) -> None:
    """Raise the KernelError for a negative return ``rc``."""
    if rc:
        cls = BY_ERRNO.get(-rc)
        if cls is None:
            raise KernelError(f"{what}: errno {-rc}")
        raise cls(what)


def do_ioctl(fd: Iommufd, cmd: int, st: UapiStruct) -> bytes:
    """Issue ``cmd`` with ``st`` (``size`` filled in when zero); return the struct's
    bytes after the call. Raises on a negative return."""
    if getattr(st, "size", None) == 0:
        st.size = st.SIZE  # type: ignore[attr-defined]
    rc, out = fd.ioctl(cmd, st.to_bytes())
    raise_errno(rc, type(st).__name__)
    return out


@define(eq=False)
class Iommufd:
    """An open iommufd of a user process, and its commands."""

    ctx: IommufdCtx
    task: TaskStruct
    arg: int
    """A user page of ``task`` the ioctl argument structs are written to."""
    fault_fds: list[int] = field(factory=list)
    """Fault-queue descriptors this process got, closed with the iommufd."""

    @classmethod
    def open(cls, task: TaskStruct) -> Iommufd:
        """``open("/dev/iommu")`` by ``task``."""
        prot, flags = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE
        arg = ksys_mmap(task, 0, PAGE_SIZE, prot, flags, -1)
        return cls(iommufd_fops_open(), task, arg)

    def ioctl(self, cmd: int, data: bytes) -> tuple[int, bytes]:
        """``ioctl(fd, cmd, arg)`` with ``data`` at ``arg``: the return value and the
        same number of bytes read back from ``arg`` afterwards."""
        if len(data) > PAGE_SIZE:
            raise ValueError(f"ioctl argument of {len(data)} bytes")
        with use_task(self.task):
            if uaccess.copy_to_user(self.arg, data):
                raise EFAULT("ioctl argument page")
            rc = self.ctx.ioctl(cmd, self.arg)
            out, _ = uaccess.copy_from_user(self.arg, len(data))
        return rc, out

    def write(self, uptr: int, data: bytes) -> None:
        """The process stores ``data`` at ``uptr`` (its pages fault in)."""
        with use_task(self.task):
            left = uaccess.copy_to_user(uptr, data)
        if left:
            raise EFAULT(f"pid {self.task.pid}: store at {uptr:#x}")

    def read(self, uptr: int, size: int) -> bytes:
        """The process loads ``size`` bytes at ``uptr``."""
        with use_task(self.task):
            data, left = uaccess.copy_from_user(uptr, size)
        if left:
            raise EFAULT(f"pid {self.task.pid}: load at {uptr:#x}")
        return data

    def close(self) -> None:
        """Close every fault-queue fd still open, then the iommufd (a process exit)."""
        from kernel.iommufd.fault import FAULT_FDS

        for fd in self.fault_fds:
            filep = FAULT_FDS.get().get(fd)
            if filep is not None and filep.fault.ictx is self.ctx:
                filep.close()
        self.fault_fds.clear()
        self.ctx.close()
        if self.task.mm is not None:
            do_munmap(self.task.mm, self.arg, PAGE_SIZE)

    def destroy(self, oid: int) -> None:
        do_ioctl(self, uapi.IOMMU_DESTROY, uapi.iommu_destroy(id=oid))

    def ioas_alloc(self) -> int:
        buf = do_ioctl(self, uapi.IOMMU_IOAS_ALLOC, uapi.iommu_ioas_alloc())
        return uapi.iommu_ioas_alloc.from_bytes(buf).out_ioas_id

    def ioas_map(
        self, ioas_id: int, user_va: int, length: int, iova: int | None = None, flags: int = RW
    ) -> int:
        """IOMMU_IOAS_MAP; ``iova`` given means FIXED_IOVA. Returns the IOVA."""
        if iova is not None:
            flags |= uapi.IOMMU_IOAS_MAP_FIXED_IOVA
        cmd = uapi.iommu_ioas_map(
            flags=flags, ioas_id=ioas_id, user_va=user_va, length=length, iova=iova or 0
        )
        return uapi.iommu_ioas_map.from_bytes(do_ioctl(self, uapi.IOMMU_IOAS_MAP, cmd)).iova

    def ioas_unmap(self, ioas_id: int, iova: int, length: int) -> int:
        """IOMMU_IOAS_UNMAP; returns the bytes unmapped."""
        cmd = uapi.iommu_ioas_unmap(ioas_id=ioas_id, iova=iova, length=length)
        buf = do_ioctl(self, uapi.IOMMU_IOAS_UNMAP, cmd)
        return uapi.iommu_ioas_unmap.from_bytes(buf).length

    def ioas_copy(
        self,
        dst_ioas_id: int,
        src_ioas_id: int,
        src_iova: int,
        length: int,
        dst_iova: int | None = None,
        flags: int = RW,
    ) -> int:
        """IOMMU_IOAS_COPY; returns the destination IOVA."""
        if dst_iova is not None:
            flags |= uapi.IOMMU_IOAS_MAP_FIXED_IOVA
        cmd = uapi.iommu_ioas_copy(
            flags=flags,
            dst_ioas_id=dst_ioas_id,
            src_ioas_id=src_ioas_id,
            length=length,
            dst_iova=dst_iova or 0,
            src_iova=src_iova,
        )
        buf = do_ioctl(self, uapi.IOMMU_IOAS_COPY, cmd)
        return uapi.iommu_ioas_copy.from_bytes(buf).dst_iova

    def hwpt_alloc(
        self,
        dev_id: int,
        pt_id: int,
        flags: int = 0,
        fault_id: int = 0,
        data_type: int = uapi.IOMMU_HWPT_DATA_NONE,
        data: UapiStruct | None = None,
        data_uptr: int = 0,
    ) -> int:
        """IOMMU_HWPT_ALLOC; vendor ``data`` (a nested HWPT's stage-1 config) travels
        through the user buffer at ``data_uptr``."""
        cmd = uapi.iommu_hwpt_alloc(flags=flags, dev_id=dev_id, pt_id=pt_id, fault_id=fault_id)
        if data is not None:
            self.write(data_uptr, data.to_bytes())
            cmd.data_type, cmd.data_len, cmd.data_uptr = data_type, data.SIZE, data_uptr
        buf = do_ioctl(self, uapi.IOMMU_HWPT_ALLOC, cmd)
        return uapi.iommu_hwpt_alloc.from_bytes(buf).out_hwpt_id

    def hwpt_invalidate(
        self, hwpt_id: int, data_type: int, entries: list[UapiStruct], data_uptr: int
    ) -> int:
        """IOMMU_HWPT_INVALIDATE of ``entries`` (copied to ``data_uptr``); returns the
        ``entry_num`` handled."""
        entry_len = entries[0].SIZE if entries else 0
        self.write(data_uptr, b"".join(e.to_bytes() for e in entries))
        cmd = uapi.iommu_hwpt_invalidate(
            hwpt_id=hwpt_id,
            data_uptr=data_uptr,
            data_type=data_type,
            entry_len=entry_len,
            entry_num=len(entries),
        )
        buf = do_ioctl(self, uapi.IOMMU_HWPT_INVALIDATE, cmd)
        return uapi.iommu_hwpt_invalidate.from_bytes(buf).entry_num

    def viommu_alloc(
        self, dev_id: int, hwpt_id: int, viommu_type: int = uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3
    ) -> int:
        """IOMMU_VIOMMU_ALLOC (6.13, ``iommufd.viommu=on``): the vIOMMU's id."""
        cmd = uapi.iommu_viommu_alloc(type=viommu_type, dev_id=dev_id, hwpt_id=hwpt_id)
        buf = do_ioctl(self, uapi.IOMMU_VIOMMU_ALLOC, cmd)
        return uapi.iommu_viommu_alloc.from_bytes(buf).out_viommu_id

    def vdevice_alloc(self, viommu_id: int, dev_id: int, virt_id: int) -> int:
        """IOMMU_VDEVICE_ALLOC (6.13, ``iommufd.viommu=on``): the vDEVICE's id."""
        cmd = uapi.iommu_vdevice_alloc(viommu_id=viommu_id, dev_id=dev_id, virt_id=virt_id)
        buf = do_ioctl(self, uapi.IOMMU_VDEVICE_ALLOC, cmd)
        return uapi.iommu_vdevice_alloc.from_bytes(buf).out_vdevice_id

    def fault_queue_alloc(self) -> tuple[int, int]:
        """IOMMU_FAULT_QUEUE_ALLOC: (fault object id, fault fd)."""
        buf = do_ioctl(self, uapi.IOMMU_FAULT_QUEUE_ALLOC, uapi.iommu_fault_alloc())
        out = uapi.iommu_fault_alloc.from_bytes(buf)
        self.fault_fds.append(out.out_fault_fd)
        return out.out_fault_id, out.out_fault_fd

    def option(self, option_id: int, op: int, val64: int = 0, object_id: int = 0) -> int:
        cmd = uapi.iommu_option(option_id=option_id, op=op, object_id=object_id, val64=val64)
        return uapi.iommu_option.from_bytes(do_ioctl(self, uapi.IOMMU_OPTION, cmd)).val64

    def fault_read(self, fault_fd: int, buf: int, count: int) -> bytes | int:
        """``read(fault_fd, buf, count)``: the records read, or the negative errno."""
        from kernel.iommufd.fault import fault_fd_get

        filep = fault_fd_get(fault_fd)
        with use_task(self.task):
            n = filep.read(buf, count)
        return self.read(buf, n) if n >= 0 else n

    def fault_write(self, fault_fd: int, buf: int, data: bytes) -> int:
        """``write(fault_fd, buf, len(data))`` after storing ``data`` at ``buf``."""
        from kernel.iommufd.fault import fault_fd_get

        filep = fault_fd_get(fault_fd)
        self.write(buf, data)
        with use_task(self.task):
            return filep.write(buf, len(data))
