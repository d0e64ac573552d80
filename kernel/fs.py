"""Files and character devices (fs/open.c, fs/char_dev.c, fs/read_write.c,
mm/mmap.c's ``ksys_mmap_pgoff``): just enough VFS for a driver's character device
to be opened, written, polled, mapped and closed by a user task.

A driver registers a node (``/dev/dsa/wq0.0``) with :func:`cdev_device_add` and a
``file_operations`` object providing any of ``open(inode, file)``,
``release(inode, file)``, ``write(file, buf_uaddr, count)``, ``mmap(file, vma)``
and ``poll(file)``. The syscalls act for a task: :func:`do_sys_open` returns a
file descriptor, :func:`close_fd` drops it (``release`` on the last reference),
:func:`ksys_write`, :func:`ksys_mmap` and :func:`vfs_poll` reach the driver.

Differences from Linux: no dentries, permissions or dev_t numbers — the node path
is the lookup key; a failing ``open`` errno is raised as the syscall's error.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field

from kernel.context import KernelSlot
from kernel.errno import EBADF, EINVAL, ENODEV, ENOENT, ENOMEM
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.mm_types import VmAreaStruct
from kernel.mmap import vm_mmap
from kernel.sched import TaskStruct, use_task


@define(eq=False)
class Inode:
    """``struct inode`` of a character device: ``i_cdev`` is the driver's object."""

    path: str
    i_cdev: Any
    fops: Any


@define(eq=False)
class File:
    """``struct file``."""

    f_inode: Inode
    f_op: Any
    private_data: Any = None
    f_count: int = 1
    kmem: int = 0


@define(eq=False)
class FsState:
    nodes: dict[str, Inode] = field(factory=dict)


_FS: KernelSlot[FsState] = KernelSlot("fs", FsState)


def cdev_device_add(path: str, i_cdev: Any, fops: Any) -> Inode:
    """``cdev_device_add``: the node appears; EINVAL if the path is taken."""
    nodes = _FS.get().nodes
    if path in nodes:
        raise EINVAL(f"{path}: already registered")
    inode = Inode(path, i_cdev, fops)
    nodes[path] = inode
    return inode


def cdev_device_del(path: str) -> None:
    """``cdev_device_del``: the node goes (open files keep working until closed)."""
    _FS.get().nodes.pop(path, None)


def lookup_node(path: str) -> Inode | None:
    return _FS.get().nodes.get(path)


def do_sys_open(task: TaskStruct, path: str) -> int:
    """``open(2)`` by ``task``: the driver's ``open`` runs as the task; returns the
    new file descriptor. ENOENT for an unknown node, ENOMEM for the file."""
    inode = _FS.get().nodes.get(path)
    if inode is None:
        raise ENOENT(f"{path}: no such device node")
    kmem = kzalloc(256, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("struct file")
    filp = File(inode, inode.fops, kmem=kmem)
    opener = getattr(inode.fops, "open", None)
    try:
        if opener is not None:
            with use_task(task):
                opener(inode, filp)
    except BaseException:
        kfree(kmem)
        raise
    fd = 3
    while fd in task.files:
        fd += 1
    task.files[fd] = filp
    return fd


def fget(task: TaskStruct, fd: int) -> File:
    filp = task.files.get(fd)
    if filp is None:
        raise EBADF(f"fd {fd} is not open")
    return filp


def fput(filp: File) -> None:
    """``fput``: the last reference runs the driver's ``release``."""
    filp.f_count -= 1
    if filp.f_count:
        return
    release = getattr(filp.f_op, "release", None)
    if release is not None:
        release(filp.f_inode, filp)
    kfree(filp.kmem)
    filp.kmem = 0


def close_fd(task: TaskStruct, fd: int) -> None:
    """``close(2)``: EBADF for a descriptor that is not open."""
    filp = task.files.pop(fd, None)
    if filp is None:
        raise EBADF(f"fd {fd} is not open")
    with use_task(task):
        fput(filp)


def ksys_write(task: TaskStruct, fd: int, buf: int, count: int) -> int:
    """``write(2)`` of ``count`` bytes at the user address ``buf``; returns what the
    driver's ``write`` returns (bytes written)."""
    filp = fget(task, fd)
    write = getattr(filp.f_op, "write", None)
    if write is None:
        raise EINVAL("file has no write operation")
    with use_task(task):
        n: int = write(filp, buf, count)
    return n


def vfs_poll(task: TaskStruct, fd: int) -> int:
    """``poll(2)`` on one descriptor: the driver's poll mask."""
    filp = fget(task, fd)
    poll = getattr(filp.f_op, "poll", None)
    if poll is None:
        return 0
    with use_task(task):
        mask: int = poll(filp)
    return mask


class _MmapFile:
    """Adapts a :class:`File` to what :func:`kernel.mmap.vm_mmap` calls: the mapping
    holds a file reference that the VMA's close drops."""

    def __init__(self, filp: File) -> None:
        self.filp = filp

    def mmap(self, _: Any, vma: VmAreaStruct) -> None:
        mmap = getattr(self.filp.f_op, "mmap", None)
        if mmap is None:
            raise ENODEV("file cannot be mapped")
        mmap(self.filp, vma)
        self.filp.f_count += 1
        vma.vm_file = self.filp


def ksys_mmap(
    task: TaskStruct, addr: int, length: int, prot: int, flags: int, fd: int, pgoff: int = 0
) -> int:
    """``mmap(2)`` of a file (anonymous memory with ``fd=-1``)."""
    if task.mm is None:
        raise EINVAL("task has no address space")
    with use_task(task):
        if fd < 0:
            return vm_mmap(task.mm, addr, length, prot, flags, None, pgoff)
        filp = fget(task, fd)
        return vm_mmap(task.mm, addr, length, prot, flags, _MmapFile(filp), pgoff)
