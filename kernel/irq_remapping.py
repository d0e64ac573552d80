"""Interrupt remapping, the generic half (drivers/iommu/irq_remapping.c) and the x86
MSI parent-domain choice (arch/x86/kernel/apic/msi.c, ``dev_get_msi_domain``).

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

from typing import TYPE_CHECKING, Protocol

from attrs import define, field

from kernel.context import KernelSlot
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

    def free(self, desc: IrqDesc) -> None: ...


@define(eq=False)
class IrqRemapState:
    """The globals of drivers/iommu/irq_remapping.c."""

    disable_irq_remap: bool = False
    disable_irq_post: bool = False
    disable_sourceid_checking: bool = False
    no_x2apic_optout: bool = False
    irq_remapping_enabled: bool = False
    domains: list[IrqRemapDomain] = field(factory=list)


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
    """The MSI message for ``desc`` (``msi_domain_alloc_irqs`` + activation +
    ``irq_chip_compose_msi_msg``): remappable through the device's remapping domain,
    compatibility format without one. Records the domain on the descriptor."""
    domain = dev_get_msi_domain(dev)
    if domain is None:
        return desc.msi_msg()
    msg = domain.alloc(dev, desc)
    desc.domain = domain
    return msg


def msi_domain_free_irq(desc: IrqDesc) -> None:
    """Release what :func:`msi_domain_alloc_irq` set up (deactivate + free)."""
    domain = desc.domain
    if domain is not None:
        desc.domain = None
        domain.free(desc)
