"""Interrupt remapping, the generic half (drivers/iommu/irq_remapping.c) and the x86
MSI parent-domain choice (arch/x86/kernel/apic/msi.c, ``dev_get_msi_domain``).

- Bring-up order. Linux turns interrupt remapping on from ``start_kernel``'s x86 APIC
  setup (``apic_intr_mode_init`` -> ``enable_IR_x2apic`` -> ``irq_remapping_prepare``
  then ``irq_remapping_enable``), after ``setup_arch`` found the DMAR table and long
  before any initcall: every unit gets its table, QI, SIRTP and global IEC flush
  (``remap_ops->prepare``), then every unit gets IRE (``remap_ops->enable``), and DMA
  remapping comes much later (``intel_iommu_init`` from the ``rootfs_initcall``
  ``pci_iommu_init``). The model's boot has initcall levels only, so the same order is
  kept with levels: a vendor module at CORE level parses its firmware table
  (``detect_intel_iommu`` + ``dmar_table_init``) and offers its :class:`IrqRemapOps`
  (:func:`irq_remap_register_ops`, Linux's fixed candidate list in
  ``irq_remapping_prepare``); the POSTCORE initcall :func:`irq_remapping_apic_setup`
  stands for the APIC step and runs prepare and enable over all units; PCI
  enumeration (SUBSYS) and the IOMMU units' DMA bring-up (ROOTFS) follow. Nothing here
  looks at ``intel_iommu=off``: as in Linux, remapping is on with DMA remapping off.

- ``intremap=`` is parsed as ``setup_irqremap`` does: comma-separated ``on``,
  ``off``, ``nosid``, ``no_x2apic_optout``, ``nopost``; an option Linux does not know
  is skipped silently, as there.
- A vendor driver that enables remapping registers an :class:`IrqRemapDomain` per
  unit (Linux: ``iommu->ir_domain``, set as each covered PCI device's MSI domain by
  ``intel_irq_remap_add_device``). The MSI layer asks :func:`msi_domain_alloc_irq`
  for each vector's message: the remapping domain that covers the device allocates
  its IRTE and composes a remappable-format message; with none (remapping off or
  ``intremap=off``) the message is the compatibility format of the vector's
  destination and vector (``x86_vector_msi_compose_msg``).

Differences from Linux: one domain is looked up per device at allocation time
instead of being stored in ``dev->msi.domain``; there are no IOAPIC/HPET domains
(the model has neither), and ``posted_msi`` is not offered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from attrs import define, field, frozen

from kernel.context import KernelSlot
from kernel.errno import ENODEV
from kernel.init import initcall
from kernel.module import InitLevel
from kernel.params import Param, parse_str

if TYPE_CHECKING:
    from kernel.boot import Kernel
    from kernel.device import Device
    from kernel.irq import IrqDesc


class IrqRemapDomain(Protocol):
    """What a remapping unit's MSI parent domain offers the MSI layer."""

    @property
    def name(self) -> str: ...

    def covers(self, dev: Device) -> bool:
        """The unit remaps interrupts of ``dev`` (its DRHD scope holds it)."""
        ...

    def alloc(self, dev: Device, desc: IrqDesc) -> tuple[int, int]:
        """Allocate and program the vector's remapping entry; its MSI message."""
        ...

    def activate(self, desc: IrqDesc, reserve: bool) -> None:
        """``irq_domain_activate_irq`` reaching the remapping level: program the
        vector's entry for its current vector (``reserve``: the reservation-mode
        activation at allocation, before ``request_irq`` assigns the real vector)."""
        ...

    def set_affinity(self, desc: IrqDesc) -> None:
        """``irq_set_affinity`` reaching the remapping level (``intel_ir_set_affinity``)."""
        ...

    def deactivate(self, desc: IrqDesc) -> None:
        """``irq_domain_deactivate_irq`` at the remapping level."""
        ...

    def free(self, desc: IrqDesc) -> None: ...


@frozen
class IrqRemapOps:
    """``struct irq_remap_ops`` (the part the model uses) of one vendor driver.

    ``prepare``/``enable`` return 0 or a negative errno as C does; ``shutdown`` is the
    model's own: run at kernel shutdown after every later initcall's teardown, it
    turns remapping off and releases what the vendor's early firmware parse set up."""

    name: str
    prepare: Callable[[], int]
    enable: Callable[[], int]
    shutdown: Callable[[], None]


@define(eq=False)
class IrqRemapState:
    """The globals of drivers/iommu/irq_remapping.c."""

    disable_irq_remap: bool = False
    disable_irq_post: bool = False
    disable_sourceid_checking: bool = False
    no_x2apic_optout: bool = False
    irq_remapping_enabled: bool = False
    domains: list[IrqRemapDomain] = field(factory=list)
    candidates: list[IrqRemapOps] = field(factory=list)
    """Vendor ops offered at early boot (Linux: the fixed list in ``irq_remapping_prepare``)."""
    remap_ops: IrqRemapOps | None = None
    """The ops whose ``prepare`` succeeded (``remap_ops``)."""


_STATE: KernelSlot[IrqRemapState] = KernelSlot("irq_remapping", IrqRemapState)


def irq_remap_state() -> IrqRemapState:
    return _STATE.get()


def setup_irqremap(st: IrqRemapState, text: str) -> None:
    """``setup_irqremap``: each comma-separated option by prefix, as Linux compares."""
    for opt in filter(None, text.split(",")):
        if opt.startswith("on"):
            st.disable_irq_remap = False
            st.disable_irq_post = False
        elif opt.startswith("off"):
            st.disable_irq_remap = True
            st.disable_irq_post = True
        elif opt.startswith("nosid"):
            st.disable_sourceid_checking = True
        elif opt.startswith("no_x2apic_optout"):
            st.no_x2apic_optout = True
        elif opt.startswith("nopost"):
            st.disable_irq_post = True


def _teardown(k: Kernel) -> None:
    k.subsys.pop("irq_remapping", None)


@initcall(InitLevel.CORE, "irq_remapping_setup", _teardown)
def irq_remapping_setup(k: Kernel) -> None:
    """The ``intremap=`` early parameter."""
    param = k.cmdline.register(
        Param("intremap", "", parse_str, "on | off | nosid | no_x2apic_optout | nopost")
    )
    setup_irqremap(irq_remap_state(), str(param.value))


def irq_remap_register_ops(ops: IrqRemapOps) -> None:
    """A vendor driver offers its remapping ops before the APIC step runs."""
    st = irq_remap_state()
    if ops not in st.candidates:
        st.candidates.append(ops)


def irq_remapping_prepare() -> int:
    """``irq_remapping_prepare``: an error with ``intremap=off`` (C: -ENOSYS, here
    -ENODEV), else the first candidate whose ``prepare`` succeeds is ``remap_ops``."""
    st = irq_remap_state()
    if st.disable_irq_remap:
        return -ENODEV.errno
    for ops in st.candidates:
        if ops.prepare() == 0:
            st.remap_ops = ops
            return 0
    return -ENODEV.errno


def irq_remapping_enable() -> int:
    """``irq_remapping_enable``: the chosen ops' ``enable`` (the remapping mode, or
    a negative errno)."""
    st = irq_remap_state()
    if st.remap_ops is None:
        return -ENODEV.errno
    return st.remap_ops.enable()


def _apic_setup_teardown(k: Kernel) -> None:
    st = _STATE.peek()
    if st is None:
        return
    for ops in reversed(st.candidates):
        ops.shutdown()
    st.candidates.clear()
    st.remap_ops = None


@initcall(InitLevel.POSTCORE, "irq_remapping_apic_setup", _apic_setup_teardown)
def irq_remapping_apic_setup(k: Kernel) -> None:
    """The x86 APIC setup's remapping step (``enable_IR_x2apic``): prepare, then
    enable, across every unit of the vendor that takes it."""
    if irq_remapping_prepare() == 0:
        irq_remapping_enable()


def irq_remap_register_domain(domain: IrqRemapDomain) -> None:
    irq_remap_state().domains.append(domain)


def irq_remap_unregister_domain(domain: IrqRemapDomain) -> None:
    st = _STATE.peek()
    if st is not None and domain in st.domains:
        st.domains.remove(domain)


def dev_get_msi_domain(dev: Device) -> IrqRemapDomain | None:
    """The remapping domain of ``dev``'s MSIs, None for the plain vector domain."""
    st = _STATE.peek()
    if st is None:
        return None
    return next((d for d in st.domains if d.covers(dev)), None)


def msi_domain_alloc_irq(dev: Device, desc: IrqDesc) -> tuple[int, int]:
    """The MSI message for ``desc`` (``msi_domain_alloc_irqs``: the domain's
    ``alloc``, then ``msi_init_virq``'s early activation in reservation mode, as PCI
    MSI-X is set up on x86 with ``MSI_FLAG_ACTIVATE_EARLY | MSI_FLAG_MUST_REACTIVATE``,
    then ``irq_chip_compose_msi_msg``): remappable through the device's remapping
    domain, compatibility format without one. Records the domain on the descriptor.

    Difference from Linux: a compatibility-format message carries the vector's final
    vector from the start (Linux composes the reservation vector first and rewrites
    the message when ``request_irq`` activates the interrupt)."""
    domain = dev_get_msi_domain(dev)
    if domain is None:
        return desc.msi_msg()
    msg = domain.alloc(dev, desc)
    desc.domain = domain
    domain.activate(desc, True)
    return msg


def irq_startup_remapped(desc: IrqDesc) -> None:
    """What ``request_irq`` does to a remapped vector (``__setup_irq``): activate it
    for its real vector (``irq_activate``), then ``irq_startup`` sets its affinity
    first (``IRQCHIP_AFFINITY_PRE_STARTUP``: ``irq_setup_affinity``)."""
    domain = desc.domain
    if domain is not None:
        domain.activate(desc, False)
        domain.set_affinity(desc)


def irq_shutdown_remapped(desc: IrqDesc) -> None:
    """What ``free_irq`` does to a remapped vector once its last handler is gone
    (``__free_irq``: ``irq_domain_deactivate_irq``)."""
    domain = desc.domain
    if domain is not None:
        domain.deactivate(desc)


def msi_domain_free_irq(desc: IrqDesc) -> None:
    """Release what :func:`msi_domain_alloc_irq` set up (``__msi_domain_free_irqs``:
    deactivate if still active, then the domain's ``free``)."""
    domain = desc.domain
    if domain is not None:
        desc.domain = None
        domain.deactivate(desc)
        domain.free(desc)
