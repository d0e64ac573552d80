"""Tasks (include/linux/sched.h, kernel/exit.c, kernel/fork.c): user processes for
shared virtual addressing.

A :class:`TaskStruct` is a process with its own address space (``task->mm``),
open files, capabilities and the x86 per-task PASID state: ``pasid_activated``
and the IA32_PASID MSR value ENQCMD takes its PASID from (arch/x86's
``fpu`` PASID xstate). :func:`get_current` is ``current`` (None while the kernel
runs on its own behalf, as a kernel thread has no mm); :func:`use_task` runs code
as a task. :func:`do_exit` follows Linux's order: ``exit_mm`` (the address space
goes, mmu notifiers are released) before ``exit_files`` (each open file's
``release``, where a driver drains and unbinds).

Differences from Linux: no scheduler, threads or signals; processes are made
empty with :func:`user_process_create` instead of fork/exec; a task runs only
while :func:`use_task` holds it current.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from attrs import define, field

from kernel.context import KernelSlot
from kernel.errno import ENOMEM
from kernel.fork import mm_alloc, mmput
from kernel.mm_types import MmStruct

if TYPE_CHECKING:
    from kernel.fs import File

CAP_IPC_LOCK = 14
CAP_SYS_RAWIO = 17
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24

RLIMIT_MEMLOCK = 8
RLIM_INFINITY = (1 << 64) - 1
MLOCK_LIMIT = 8 << 20
"""The default RLIMIT_MEMLOCK (include/uapi/linux/resource.h, 8 MiB)."""

MSR_IA32_PASID = 0x0000_0D93
MSR_IA32_PASID_VALID = 1 << 31


@define(eq=False)
class UserStruct:
    """``struct user_struct`` (a uid's resource counters): ``locked_vm`` is the
    pages pinned by io_uring/iommufd-style accounting, shared by every task of the
    user."""

    locked_vm: int = 0


@define(eq=False)
class TaskStruct:
    """``struct task_struct`` reduced to what user SVA needs."""

    pid: int
    comm: str
    mm: MmStruct | None
    caps: frozenset[int] = frozenset()
    files: dict[int, File] = field(factory=dict)
    """The file descriptor table (``files_struct``)."""
    pasid_activated: bool = False
    ia32_pasid: int = 0
    """The IA32_PASID MSR: bit 31 valid, bits 19:0 the PASID ENQCMD puts in a descriptor."""
    exited: bool = False
    user: UserStruct = field(factory=UserStruct)
    """``current_user()`` (``cred->user``)."""
    rlim: dict[int, int] = field(factory=lambda: {RLIMIT_MEMLOCK: MLOCK_LIMIT})
    """``signal->rlim``: soft limits by RLIMIT_* (absent = infinity)."""


def task_rlimit(task: TaskStruct, limit: int) -> int:
    """``task_rlimit``: the soft limit of ``limit`` (bytes for RLIMIT_MEMLOCK)."""
    return task.rlim.get(limit, RLIM_INFINITY)


@define(eq=False)
class SchedState:
    tasks: dict[int, TaskStruct] = field(factory=dict)
    next_pid: int = 1000
    current: TaskStruct | None = None


_SCHED: KernelSlot[SchedState] = KernelSlot("sched", SchedState)


def sched_state() -> SchedState:
    return _SCHED.get()


def get_current() -> TaskStruct | None:
    """``current``: the user task running now, or None for kernel context."""
    return _SCHED.get().current


def capable(cap: int) -> bool:
    """``capable``: the current task holds ``cap`` (kernel context holds every one)."""
    task = get_current()
    return task is None or cap in task.caps


@contextmanager
def use_task(task: TaskStruct) -> Iterator[TaskStruct]:
    """Run the body as ``task`` (a context switch to it and back)."""
    state = _SCHED.get()
    prev = state.current
    state.current = task
    try:
        yield task
    finally:
        state.current = prev


def user_process_create(comm: str, caps: frozenset[int] = frozenset()) -> TaskStruct:
    """A new process with an empty address space (what fork + exec leave a task
    with, minus the image); ENOMEM without memory for its page tables."""
    mm = mm_alloc()
    if mm is None:
        raise ENOMEM(f"{comm}: no memory for an address space")
    state = _SCHED.get()
    pid = state.next_pid
    state.next_pid += 1
    task = TaskStruct(pid, comm, mm, caps)
    state.tasks[pid] = task
    return task


def exit_mm(task: TaskStruct) -> None:
    """``exit_mm``: the task lets go of its address space (the last user's
    ``mmput`` runs ``exit_mmap``)."""
    mm = task.mm
    if mm is None:
        return
    task.mm = None
    mmput(mm)


def exit_files(task: TaskStruct) -> None:
    """``exit_files``: every open file is closed (its ``release`` runs on the last
    reference)."""
    from kernel.fs import close_fd

    for fd in sorted(task.files):
        close_fd(task, fd)


def do_exit(task: TaskStruct) -> None:
    """``do_exit``: ``exit_mm`` then ``exit_files``, then the task is gone."""
    if task.exited:
        return
    with use_task(task):
        exit_mm(task)
        exit_files(task)
    task.exited = True
    task.pasid_activated = False
    task.ia32_pasid = 0
    _SCHED.get().tasks.pop(task.pid, None)
