"""Interrupts: Linux IRQ numbers, x86 vectors, MSI messages and handlers
(kernel/irq/manage.c ``request_irq``/``free_irq``, arch/x86 MSI message format).

Compatibility-format MSI messages use the x86 layout: address ``0xFEE00000 |
dest_apic << 12``, data = vector (``x86_vector_msi_compose_msg``); with interrupt
remapping the MSI layer asks the remapping domain instead
(:mod:`kernel.irq_remapping`), and ``request_irq``/``free_irq`` activate and
deactivate a remapped vector there as ``__setup_irq``/``__free_irq`` do. The
interrupt controller (one CPU, APIC id 0) gets
every compatibility-format message the platform delivers, through :func:`deliver_msi`,
bound at boot to the kernel that owns the machine (so it lands there whichever
kernel is current), which runs the handler registered for that vector
synchronously (interrupt context is the device event that raised it). A handler
returning ``IRQ_WAKE_THREAD`` has its thread function run right after,
deterministically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

from kernel.bug import WARN
from kernel.context import current
from kernel.errno import EBUSY, EINVAL, ENOSPC
from kernel.irq_remapping import irq_shutdown_remapped, irq_startup_remapped
from kernel.printk import pr_err

IRQ_NONE = 0
IRQ_HANDLED = 1
IRQ_WAKE_THREAD = 2
IRQF_SHARED = 0x80
IRQF_ONESHOT = 0x2000

MSI_ADDR_BASE = 0xFEE0_0000
FIRST_EXTERNAL_VECTOR = 0x20
MANAGED_IRQ_SHUTDOWN_VECTOR = 0xEF
"""The vector a reservation-mode interrupt points at until ``request_irq`` gives it
its own (arch/x86 ``irq_vectors.h``); never handed out."""
NR_VECTORS = 256
FIRST_DYNAMIC_IRQ = 24

Handler = Callable[[int, Any], int]


@define(eq=False)
class IrqAction:
    handler: Handler | None
    thread_fn: Handler | None
    name: str
    dev_id: Any
    flags: int


@define(eq=False)
class IrqDesc:
    irq: int
    vector: int
    actions: list[IrqAction] = field(factory=list)
    count: int = 0
    unhandled: int = 0
    owner: str = ""
    dest_apicid: int = 0
    """``irq_cfg.dest_apicid``: the one CPU's APIC id."""
    domain: Any = None
    """The interrupt-remapping domain that composed this vector's MSI (None: none)."""
    chip_data: Any = None
    """That domain's per-vector data (``irq_data->chip_data``)."""

    def msi_msg(self) -> tuple[int, int]:
        """Compatibility format (``x86_vector_msi_compose_msg``)."""
        return MSI_ADDR_BASE | (self.dest_apicid & 0xFF) << 12, self.vector


@define(eq=False)
class IrqController:
    descs: dict[int, IrqDesc] = field(factory=dict)
    by_vector: dict[int, IrqDesc] = field(factory=dict)
    next_irq: int = FIRST_DYNAMIC_IRQ
    spurious: list[tuple[int, int]] = field(factory=list)
    in_irq: int = 0

    def alloc(self, owner: str) -> IrqDesc:
        used = set(self.by_vector)
        used.add(MANAGED_IRQ_SHUTDOWN_VECTOR)
        vector = next((v for v in range(FIRST_EXTERNAL_VECTOR, NR_VECTORS) if v not in used), None)
        if vector is None:
            raise ENOSPC("no free interrupt vector")
        desc = IrqDesc(self.next_irq, vector, owner=owner)
        self.next_irq += 1
        self.descs[desc.irq] = desc
        self.by_vector[vector] = desc
        return desc

    def free(self, irq: int) -> None:
        desc = self.descs.pop(irq, None)
        if desc is None:
            raise EINVAL(f"irq {irq} not allocated")
        if desc.actions:
            WARN(True, f"irq {irq} freed with {len(desc.actions)} handler(s) still installed")
        del self.by_vector[desc.vector]

    def deliver(self, address: int, data: int) -> None:
        desc = self.by_vector.get(data & 0xFF)
        if (address & 0xFFF0_0000) != MSI_ADDR_BASE or desc is None:
            self.spurious.append((address, data))
            pr_err(f"do_IRQ: 0.{data & 0xFF} No irq handler for vector")
            return
        desc.count += 1
        handled = False
        self.in_irq += 1
        try:
            for action in list(desc.actions):
                ret = action.handler(desc.irq, action.dev_id) if action.handler else IRQ_WAKE_THREAD
                if ret == IRQ_WAKE_THREAD and action.thread_fn is not None:
                    ret = action.thread_fn(desc.irq, action.dev_id)
                handled |= ret != IRQ_NONE
        finally:
            self.in_irq -= 1
        if not handled:
            desc.unhandled += 1


def irq_controller() -> IrqController:
    """The current kernel's interrupt table."""
    return current.kernel.irq


def deliver_msi(address: int, data: int) -> None:
    current.kernel.irq.deliver(address, data)


def irq_alloc(owner: str) -> IrqDesc:
    return current.kernel.irq.alloc(owner)


def irq_free(irq: int) -> None:
    current.kernel.irq.free(irq)


def irq_to_desc(irq: int) -> IrqDesc | None:
    return current.kernel.irq.descs.get(irq)


def request_threaded_irq(
    irq: int, handler: Handler | None, thread_fn: Handler | None, flags: int, name: str, dev_id: Any
) -> None:
    desc = current.kernel.irq.descs.get(irq)
    if desc is None:
        raise EINVAL(f"request_irq: irq {irq} does not exist")
    if handler is None and thread_fn is None:
        raise EINVAL("request_irq: no handler")
    if desc.actions and not (
        flags & IRQF_SHARED and all(a.flags & IRQF_SHARED for a in desc.actions)
    ):
        raise EBUSY(f"request_irq: irq {irq} already in use by {desc.actions[0].name}")
    first = not desc.actions
    desc.actions.append(IrqAction(handler, thread_fn, name, dev_id, flags))
    if first:
        irq_startup_remapped(desc)


def request_irq(irq: int, handler: Handler, flags: int, name: str, dev_id: Any) -> None:
    request_threaded_irq(irq, handler, None, flags, name, dev_id)


def free_irq(irq: int, dev_id: Any) -> None:
    desc = current.kernel.irq.descs.get(irq)
    action = None if desc is None else next((a for a in desc.actions if a.dev_id is dev_id), None)
    if desc is None or action is None:
        WARN(True, f"Trying to free already-free IRQ {irq}")
        return
    desc.actions.remove(action)
    if not desc.actions:
        irq_shutdown_remapped(desc)


def in_interrupt() -> bool:
    return current.kernel.irq.in_irq > 0
