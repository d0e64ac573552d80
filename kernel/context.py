"""The current kernel: one pointer, the per-kernel slots, and callbacks bound to a kernel.

Linux finds its per-CPU state through one register (``current``, ``this_cpu_ptr``);
here every C-named API (``printk``, ``kmalloc``, ``ioremap``, ``dma_map_single``,
``request_irq`` ...) finds the booted kernel it acts on through :data:`current`,
whose one attribute ``kernel`` is the only mutable "current" pointer in the package.
Everything a kernel owns — dmesg ring, tracer, WARN state, page allocator, IRQ
table, init task stack, machine, and every subsystem's or driver's ``static`` state
— hangs off that :class:`kernel.boot.Kernel`, so two kernels on two machines live
side by side in one process and entering one (``with kernel:`` or
``kernel.activate()``) is one attribute store.

Why a plain pointer and not a :class:`contextvars.ContextVar`: the model is one
thread and deterministic (virtual time, DESIGN §3), nothing runs concurrently that
could need its own view, and a slot read is the cheapest lookup Python has — it
sits on every DMA map/unmap, printk and allocation. Code that runs on behalf of a
kernel while another may be current (MSI delivery, timers on the machine clock)
is wrapped with :func:`kernel_callback`, which re-enters the kernel that set it up.

Driver and subsystem state that C keeps in file-scope ``static`` variables (an
ASID IDA, the list of probed SMMUs, a bus's device list) is per boot in Linux and
per :class:`KernelSlot` here: ``SLOT = KernelSlot("arm_smmu_v3", ArmSmmuOps)`` at
module level, ``SLOT.get()`` returns the current kernel's instance, made on first
use. Differences from C: none in behaviour; fail_nth fault injection stays
process-wide because Linux arms it per task and the sweeping test is that task,
across the kernels it boots.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

if TYPE_CHECKING:
    from kernel.boot import Kernel

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

NO_KERNEL = "no kernel is booted (kernel.boot.boot() first)"


class _NoKernel:
    """What :data:`current` holds before any kernel is entered: every state read
    fails with one message naming the problem."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(NO_KERNEL)

    def __bool__(self) -> bool:
        return False


class _Current:
    """The current-kernel register. ``current.kernel`` is read on every kernel API call."""

    __slots__ = ("kernel",)

    def __init__(self) -> None:
        self.kernel: Kernel = cast("Kernel", _NoKernel())


current = _Current()
"""``current.kernel``: the kernel module-level APIs act on."""


def current_kernel() -> Kernel:
    """The running kernel; ``RuntimeError`` when none has been entered."""
    k = current.kernel
    if not k:
        raise RuntimeError(NO_KERNEL)
    return k


def has_kernel() -> bool:
    """Whether some kernel is current."""
    return bool(current.kernel)


def kernel_callback(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the kernel current now: calling it later enters that kernel
    for the call and restores whichever was current (what an interrupt or a timer
    softirq does on a real CPU: it runs in the kernel that installed the handler)."""
    k = current_kernel()

    def under_kernel(*args: P.args, **kwargs: P.kwargs) -> R:
        cur = current
        prev = cur.kernel
        cur.kernel = k
        try:
            return fn(*args, **kwargs)
        finally:
            cur.kernel = prev

    return under_kernel


class KernelSlot(Generic[T]):
    """A per-kernel variable: C's file-scope ``static`` (per boot in Linux).

    ``key`` names the slot in :attr:`Kernel.subsys` (a string for named subsystems,
    or the owning object itself); ``factory`` builds the kernel's instance on first
    :meth:`get`.
    """

    __slots__ = ("factory", "key")

    def __init__(self, key: Hashable, factory: Callable[[], T]) -> None:
        self.key = key
        self.factory = factory

    def get(self) -> T:
        """The current kernel's instance (created on first use)."""
        subsys = current.kernel.subsys
        try:
            return cast(T, subsys[self.key])
        except KeyError:
            value = subsys[self.key] = self.factory()
            return value

    def peek(self) -> T | None:
        """The current kernel's instance, or None when it has none (nothing created)."""
        return cast("T | None", current.kernel.subsys.get(self.key))
