"""VT-d interrupt remapping (Linux 6.12 drivers/iommu/intel/irq_remapping.c).

Bring-up, in Linux's order, over every DMAR unit before any DMA remapping (the x86
APIC step of :mod:`kernel.irq_remapping` calls :data:`intel_irq_remap_ops`):
``intel_prepare_irq_remapping`` decides once whether remapping is possible (every
unit the DMAR table parse set up has ECAP.IR, ``intremap=off`` not given) and in
which mode (x2APIC when every unit has ECAP.EIM), then ``intel_setup_irq_remapping``
on each unit in turn: the 65536-entry table (order-8 pages), queued invalidation
(QIE), IRTA and SIRTP (wait IRTPS), the global IEC flush (``qi_global_iec``, unless
CAP.ESIRTPS). Then ``intel_enable_irq_remapping`` sets IRE (and clears CFI) on each
unit and prints "Enabled IRQ remapping in ... mode" once. This happens whatever
``intel_iommu=`` says: with ``intel_iommu=off`` interrupts are remapped and DMA is
not translated, as in Linux.

Each unit's MSI parent domain (:class:`IntelIrDomain`) gives each MSI/MSI-X vector of
a device behind the unit its own IRTE. The entry is written, each time with an
index-selective IEC flush (``modify_irte`` -> ``qi_flush_iec``), at these points of
6.12's irq core, which give the vector's flush sequence:

1. ``pci_alloc_irq_vectors``: ``intel_irq_remapping_alloc`` only reserves the entry
   (``alloc_irte``, ``prepare_irte``, ``set_msi_sid``, ``fill_msi_msg``: no write);
   the MSI core then activates the vector early in reservation mode
   (``msi_init_virq``), so ``intel_irq_remapping_activate`` writes it pointing at
   ``MANAGED_IRQ_SHUTDOWN_VECTOR`` -- flush 1;
2. ``request_irq``: ``__setup_irq`` -> ``irq_activate`` activates it again for its
   real vector (``activate_reserved``), ``intel_irq_remapping_activate`` -- flush 2;
   then ``irq_startup`` -> ``irq_setup_affinity`` -> ``intel_ir_set_affinity`` ->
   ``intel_ir_reconfigure_irte`` -- flush 3. Flushes 2 and 3 are the pair the real
   trace shows at every ``request_irq`` (ftrace flags ``d..3``/``d..4``: the second
   one runs under ``irq_setup_affinity``'s ``mask_lock`` as well);
3. ``free_irq``: ``__free_irq`` -> ``irq_domain_deactivate_irq`` ->
   ``intel_irq_remapping_deactivate`` writes a zero entry -- one flush;
4. ``pci_free_irq_vectors``: ``intel_free_irq_resources`` -> ``clear_entries`` -- one
   flush (IM = the block's mask).

Differences from Linux: there is no IOAPIC or HPET (no "IOAPIC id ... under DRHD"
line, no IOAPIC entries); the CPU is taken to support x2APIC exactly when every
DMAR unit offers ECAP.EIM and the DMAR table never sets the x2APIC opt-out flag (so
``no_x2apic_optout`` changes nothing). Posted interrupts are never used for MSIs
(no ``posted_msi``). One CPU: affinity changes never move a vector.
"""

from __future__ import annotations

from attrs import define, field

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import (
    IOMMU_WAIT_OP,
    dmar_disable_qi,
    dmar_enable_qi,
    dmar_fault,
    dmar_free_units,
    dmar_state,
    dmar_writeq,
    qi_global_iec,
    qi_submit_sync,
)
from drivers.intel_iommu.structs import VTD_FLAG_IRQ_REMAP_PRE_ENABLED, IntelIommu
from kernel.bug import WARN
from kernel.context import KernelSlot
from kernel.device import Device
from kernel.errno import EINVAL, ENODEV, ENOMEM, ENOSPC, KernelError
from kernel.irq import MANAGED_IRQ_SHUTDOWN_VECTOR, IrqDesc
from kernel.irq_remapping import (
    IrqRemapOps,
    irq_remap_register_domain,
    irq_remap_state,
    irq_remap_unregister_domain,
)
from kernel.mm import (
    __GFP_ZERO,
    GFP_KERNEL,
    __get_free_pages,
    free_pages,
    memory_read,
    memory_write,
    virt_to_phys,
)
from kernel.pci import PciDev, pci_dev_id
from kernel.printk import pr_err, pr_info, pr_warn

PFX = "DMAR-IR: "
INTR_REMAP_PAGE_ORDER = 8
INTR_REMAP_TABLE_REG_SIZE = 0xF
INTR_REMAP_TABLE_ENTRIES = 65536
IRTE_SIZE = 16
X86_MSI_BASE_ADDRESS_LOW = 0xFEE0_0000
APIC_DELIVERY_MODE_FIXED = 0

SVT_NO_VERIFY = 0x0
SVT_VERIFY_SID_SQ = 0x1
SVT_VERIFY_BUS = 0x2
SQ_ALL_16 = 0x0


def IR_X2APIC_MODE(mode: bool) -> int:
    return 1 << 11 if mode else 0


# -- struct irte (remapped format) --------------------------------------------------


@define
class Irte:
    """``struct irte``: the fields Linux sets, packed into the two qwords."""

    present: int = 0
    fpd: int = 0
    dst_mode: int = 0
    redir_hint: int = 0
    trigger_mode: int = 0
    dlvry_mode: int = 0
    avail: int = 0
    pst: int = 0
    vector: int = 0
    dest_id: int = 0
    sid: int = 0
    sq: int = 0
    svt: int = 0

    @property
    def low(self) -> int:
        return (
            self.present
            | self.fpd << 1
            | self.dst_mode << 2
            | self.redir_hint << 3
            | self.trigger_mode << 4
            | self.dlvry_mode << 5
            | self.avail << 8
            | self.pst << 15
            | self.vector << 16
            | self.dest_id << 32
        )

    @property
    def high(self) -> int:
        return self.sid | self.sq << 16 | self.svt << 18

    @classmethod
    def decode(cls, low: int, high: int) -> Irte:
        return cls(
            present=low & 1,
            fpd=(low >> 1) & 1,
            dst_mode=(low >> 2) & 1,
            redir_hint=(low >> 3) & 1,
            trigger_mode=(low >> 4) & 1,
            dlvry_mode=(low >> 5) & 7,
            avail=(low >> 8) & 0xF,
            pst=(low >> 15) & 1,
            vector=(low >> 16) & 0xFF,
            dest_id=low >> 32,
            sid=high & 0xFFFF,
            sq=(high >> 16) & 3,
            svt=(high >> 18) & 3,
        )


@define(eq=False)
class IrTable:
    """``struct ir_table``: the table pages (kernel virtual) and the allocation bitmap."""

    base: int
    bitmap: bytearray = field(factory=lambda: bytearray(INTR_REMAP_TABLE_ENTRIES))


@define(eq=False)
class Irq2Iommu:
    """``struct irq_2_iommu`` + ``struct intel_ir_data`` of one vector."""

    iommu: IntelIommu
    irte_index: int
    sub_handle: int = 0
    irte_mask: int = 0
    irte_entry: Irte = field(factory=Irte)
    msi_entry: tuple[int, int] = (0, 0)
    activated: bool = False
    """``irqd_is_activated``: cleared again after a reservation-mode activation."""


@define(eq=False)
class IrState:
    """The file's statics: ``eim_mode``."""

    eim_mode: bool = False


_IR: KernelSlot[IrState] = KernelSlot("intel_irq_remapping", IrState)


def ir_state() -> IrState:
    return _IR.get()


# -- prepare: may remapping be used, and in which mode ---------------------------------


def intel_cleanup_irq_remapping() -> None:
    """``intel_cleanup_irq_remapping``: undo the setup of every unit, and the
    warning when the CPU could have used x2APIC."""
    units = dmar_state().units
    for iommu in units:
        if ir.ecap_ir_support(iommu.ecap):
            iommu_disable_irq_remapping(iommu)
            intel_teardown_irq_remapping(iommu)
    if any(ir.ecap_eim_support(u.ecap) for u in units):  # x2apic_supported()
        pr_warn(
            f"{PFX}Failed to enable irq remapping. You are vulnerable to irq-injection attacks."
        )


def intel_prepare_irq_remapping() -> int:
    """``intel_prepare_irq_remapping``: -ENODEV when remapping cannot be used on this
    machine; else every unit set up (table, QI, SIRTP, global IEC flush)."""
    st = dmar_state()
    units = st.units
    if not st.table_parsed or not units:  # dmar_table_init() failed
        return -ENODEV.errno
    if not any(ir.ecap_ir_support(u.ecap) for u in units):  # dmar_ir_support: no INTR_REMAP
        return -ENODEV.errno
    if not all(ir.ecap_ir_support(u.ecap) for u in units):
        intel_cleanup_irq_remapping()
        return -ENODEV.errno
    eim = any(ir.ecap_eim_support(u.ecap) for u in units)  # x2apic_supported(), no opt-out
    for iommu in units:
        if eim and not ir.ecap_eim_support(iommu.ecap):
            pr_info(f"{PFX}{iommu.name} does not support EIM")
            eim = False
    ir_state().eim_mode = eim
    if eim:
        pr_info(f"{PFX}Queued invalidation will be enabled to support x2apic and Intr-remapping.")
    for iommu in units:
        try:
            intel_setup_irq_remapping(iommu)
        except KernelError:
            pr_err(f"{PFX}Failed to setup irq remapping for {iommu.name}")
            intel_cleanup_irq_remapping()
            return -ENODEV.errno
    return 0


def intel_enable_irq_remapping() -> int:
    """``intel_enable_irq_remapping``: IRE on every unit, then the one line; the
    remapping mode (``IRQ_REMAP_XAPIC_MODE`` 0 / ``IRQ_REMAP_X2APIC_MODE`` 1).
    Each unit's MSI domain becomes the parent of its devices' MSIs
    (``intel_irq_remap_add_device``)."""
    units = dmar_state().units
    if not units:
        intel_cleanup_irq_remapping()
        return -1
    for iommu in units:
        if not iommu.flags & VTD_FLAG_IRQ_REMAP_PRE_ENABLED:
            iommu_enable_irq_remapping(iommu)
        if iommu.ir_domain is not None:
            irq_remap_register_domain(iommu.ir_domain)
    irq_remap_state().irq_remapping_enabled = True
    eim = ir_state().eim_mode
    pr_info(f"{PFX}Enabled IRQ remapping in {'x2apic' if eim else 'xapic'} mode")
    return 1 if eim else 0


def intel_irq_remapping_shutdown() -> None:
    """The model's shutdown of what the early boot set up (Linux leaves remapping on
    until the machine resets): remapping off and tables freed on every unit, then
    the units themselves (queue, registers) go (:func:`.dmar.dmar_free_units`)."""
    for iommu in reversed(dmar_state().units):
        if iommu.ir_table is not None:
            iommu_disable_irq_remapping(iommu)
            intel_teardown_irq_remapping(iommu)
    irq_remap_state().irq_remapping_enabled = False
    dmar_free_units()


intel_irq_remap_ops = IrqRemapOps(
    "intel",
    lambda: intel_prepare_irq_remapping(),
    lambda: intel_enable_irq_remapping(),
    lambda: intel_irq_remapping_shutdown(),
)
"""``intel_irq_remap_ops`` (prepare, enable; shutdown is the model's). The lambdas
look the functions up at call time, so tests can wrap them."""


# -- unit bring-up -----------------------------------------------------------------------


def init_ir_status(iommu: IntelIommu) -> None:
    if iommu.regs.readl(ir.DMAR_GSTS_REG) & ir.DMA_GSTS_IRES:
        iommu.flags |= VTD_FLAG_IRQ_REMAP_PRE_ENABLED


def iommu_set_irq_remapping(iommu: IntelIommu, mode: bool) -> None:
    """``iommu_set_irq_remapping``: IRTA (table, EIME, size 0xF), SIRTP and wait for
    IRTPS; then the global IEC flush unless CAP.ESIRTPS."""
    table = iommu.ir_table
    assert isinstance(table, IrTable)
    reg = iommu.regs
    addr = virt_to_phys(table.base)
    dmar_writeq(iommu, ir.DMAR_IRTA_REG, addr | IR_X2APIC_MODE(mode) | INTR_REMAP_TABLE_REG_SIZE)
    reg.writel(iommu.gcmd | ir.DMA_GCMD_SIRTP, ir.DMAR_GCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: bool(v & ir.DMA_GSTS_IRTPS))
    if not ir.cap_esirtps(iommu.cap):
        qi_global_iec(iommu)


def iommu_enable_irq_remapping(iommu: IntelIommu) -> None:
    """``iommu_enable_irq_remapping``: IRE, wait IRES; clear CFI if CFIS is set."""
    reg = iommu.regs
    iommu.gcmd |= ir.DMA_GCMD_IRE
    reg.writel(iommu.gcmd, ir.DMAR_GCMD_REG)
    sts = IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: bool(v & ir.DMA_GSTS_IRES))
    if sts & ir.DMA_GSTS_CFIS:
        iommu.gcmd &= ~ir.DMA_GCMD_CFI
        reg.writel(iommu.gcmd, ir.DMAR_GCMD_REG)
        sts = IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: not v & ir.DMA_GSTS_CFIS)
    WARN(
        bool(sts & ir.DMA_GSTS_CFIS),
        "Compatibility-format IRQs enabled despite intr remapping;\n"
        "you are vulnerable to IRQ injection.",
    )


def iommu_disable_irq_remapping(iommu: IntelIommu) -> None:
    """``iommu_disable_irq_remapping``: global IEC flush, then clear IRE."""
    if not ir.ecap_ir_support(iommu.ecap):
        return
    if not ir.cap_esirtps(iommu.cap):
        qi_global_iec(iommu)
    reg = iommu.regs
    if not reg.readl(ir.DMAR_GSTS_REG) & ir.DMA_GSTS_IRES:
        return
    iommu.gcmd &= ~ir.DMA_GCMD_IRE
    reg.writel(iommu.gcmd, ir.DMAR_GCMD_REG)
    IOMMU_WAIT_OP(iommu, ir.DMAR_GSTS_REG, reg.readl, lambda v: not v & ir.DMA_GSTS_IRES)


def intel_setup_irq_remapping(iommu: IntelIommu) -> None:
    """``intel_setup_irq_remapping``: the table, the domain, QI (unless already on),
    the pre-enabled check, then IRTA/SIRTP and the global IEC flush."""
    if iommu.ir_table is not None:
        return
    base = __get_free_pages(GFP_KERNEL | __GFP_ZERO, INTR_REMAP_PAGE_ORDER)
    if base is None:
        pr_err(f"{PFX}IR{iommu.seq_id}: failed to allocate pages of order {INTR_REMAP_PAGE_ORDER}")
        raise ENOMEM("interrupt remapping table")
    iommu.ir_table = IrTable(base)
    iommu.ir_domain = IntelIrDomain(iommu)
    try:
        if iommu.qi is None:
            dmar_fault(-1, iommu)
            dmar_disable_qi(iommu)
            try:
                dmar_enable_qi(iommu)
            except KernelError:
                pr_err(f"{PFX}Failed to enable queued invalidation")
                raise
        init_ir_status(iommu)
        if iommu.flags & VTD_FLAG_IRQ_REMAP_PRE_ENABLED:
            pr_info(f"{PFX}IRQ remapping was enabled on {iommu.name} but we are not in kdump mode")
            iommu.flags &= ~VTD_FLAG_IRQ_REMAP_PRE_ENABLED
            iommu_disable_irq_remapping(iommu)
        iommu_set_irq_remapping(iommu, ir_state().eim_mode)
    except KernelError:
        intel_teardown_irq_remapping(iommu)
        raise


def intel_teardown_irq_remapping(iommu: IntelIommu) -> None:
    """``intel_teardown_irq_remapping``: the domain and the table go."""
    if iommu.ir_domain is not None:
        irq_remap_unregister_domain(iommu.ir_domain)
        iommu.ir_domain = None
    table = iommu.ir_table
    if isinstance(table, IrTable):
        free_pages(table.base, INTR_REMAP_PAGE_ORDER)
    iommu.ir_table = None


# -- IRTE allocation and programming ----------------------------------------------------


def _table(iommu: IntelIommu) -> IrTable:
    table = iommu.ir_table
    assert isinstance(table, IrTable), f"{iommu.name}: no interrupt remapping table"
    return table


def alloc_irte(iommu: IntelIommu, count: int) -> Irq2Iommu | None:
    """``alloc_irte``: ``count`` (rounded up to a power of two) naturally aligned free
    entries; None (with Linux's lines) when the mask is too wide or none are free."""
    if count < 1:
        return None
    mask = (count - 1).bit_length() if count > 1 else 0
    if mask > ir.ecap_max_handle_mask(iommu.ecap):
        pr_err(
            f"{PFX}Requested mask {mask:x} exceeds the max invalidation handle mask value "
            f"{ir.ecap_max_handle_mask(iommu.ecap):x}"
        )
        return None
    bitmap = _table(iommu).bitmap
    n = 1 << mask
    for index in range(0, INTR_REMAP_TABLE_ENTRIES, n):
        if not any(bitmap[index : index + n]):
            bitmap[index : index + n] = b"\x01" * n
            return Irq2Iommu(iommu, index, 0, mask)
    pr_warn(f"{PFX}IR{iommu.seq_id}: can't allocate an IRTE")
    return None


def qi_flush_iec(iommu: IntelIommu, index: int, mask: int) -> int:
    """``qi_flush_iec``: index-selective IEC invalidation of ``2**mask`` entries."""
    qw0 = ir.QI_IEC_IIDEX(index) | ir.QI_IEC_TYPE | ir.QI_IEC_IM(mask) | ir.QI_IEC_SELECTIVE
    return qi_submit_sync(iommu, [(qw0, 0, 0, 0)])


def _write_irte(iommu: IntelIommu, index: int, low: int, high: int) -> None:
    memory_write(
        _table(iommu).base + IRTE_SIZE * index,
        low.to_bytes(8, "little") + high.to_bytes(8, "little"),
    )


def modify_irte(irq_iommu: Irq2Iommu, irte: Irte) -> int:
    """``modify_irte``: write the 128-bit entry, then flush its IEC index."""
    iommu = irq_iommu.iommu
    index = irq_iommu.irte_index + irq_iommu.sub_handle
    _write_irte(iommu, index, irte.low, irte.high)
    return qi_flush_iec(iommu, index, 0)


def clear_entries(irq_iommu: Irq2Iommu) -> int:
    """``clear_entries``: zero the block, release it, flush it."""
    if irq_iommu.sub_handle:
        return 0
    iommu = irq_iommu.iommu
    index, n = irq_iommu.irte_index, 1 << irq_iommu.irte_mask
    memory_write(_table(iommu).base + IRTE_SIZE * index, bytes(IRTE_SIZE * n))
    _table(iommu).bitmap[index : index + n] = bytes(n)
    return qi_flush_iec(iommu, index, irq_iommu.irte_mask)


def set_irte_sid(irte: Irte, svt: int, sq: int, sid: int) -> None:
    """``set_irte_sid``; ``intremap=nosid`` turns validation off."""
    if irq_remap_state().disable_sourceid_checking:
        svt = SVT_NO_VERIFY
    irte.svt, irte.sq, irte.sid = svt, sq, sid


def set_msi_sid(irte: Irte, dev: PciDev) -> None:
    """``set_msi_sid``: the model has no PCIe-to-PCI bridges or DMA-alias quirks, so
    every function is verified by its own requester ID (SVT=1, SQ=0)."""
    set_irte_sid(irte, SVT_VERIFY_SID_SQ, SQ_ALL_16, pci_dev_id(dev))


def prepare_irte(irte: Irte, vector: int, dest: int) -> None:
    """``prepare_irte``: present, physical destination mode, edge, fixed, RH=1."""
    irte.present = 1
    irte.dst_mode = 0
    irte.trigger_mode = 0
    irte.dlvry_mode = APIC_DELIVERY_MODE_FIXED
    irte.vector = vector
    irte.dest_id = dest if ir_state().eim_mode else dest << 8  # IRTE_DEST
    irte.redir_hint = 1


def fill_msi_msg(index: int, subhandle: int) -> tuple[int, int]:
    """``fill_msi_msg``: remappable format, SHV set, handle in 19:5 and bit 2."""
    addr = (
        X86_MSI_BASE_ADDRESS_LOW
        | (index & 0x7FFF) << 5
        | 1 << 4  # dmar_format
        | 1 << 3  # dmar_subhandle_valid
        | (1 << 2 if index & 0x8000 else 0)
    )
    return addr, subhandle


@define(eq=False)
class IntelIrDomain:
    """``iommu->ir_domain`` (``intel_ir_domain_ops`` + ``intel_ir_chip``) as the
    kernel's :class:`kernel.irq_remapping.IrqRemapDomain`."""

    iommu: IntelIommu

    @property
    def name(self) -> str:
        return f"INTEL-IR-{self.iommu.seq_id}"

    def covers(self, dev: Device) -> bool:
        drhd = self.iommu.drhd
        return isinstance(dev, PciDev) and drhd is not None and bool(drhd.covers(dev.addr))

    def alloc(self, dev: Device, desc: IrqDesc) -> tuple[int, int]:
        """``intel_irq_remapping_alloc`` for one MSI-X vector: the entry reserved and
        prepared in memory, nothing written to the table yet; the MSI message."""
        if not isinstance(dev, PciDev):
            raise EINVAL(f"{dev.init_name}: not a PCI device")
        data = alloc_irte(self.iommu, 1)
        if data is None:
            pr_warn(f"{PFX}Failed to allocate IRTE")
            raise ENOSPC(f"{self.iommu.name}: no free IRTE")
        prepare_irte(data.irte_entry, desc.vector, desc.dest_apicid)
        set_msi_sid(data.irte_entry, dev)
        data.msi_entry = fill_msi_msg(data.irte_index, data.sub_handle)
        desc.chip_data = data
        return data.msi_entry

    def activate(self, desc: IrqDesc, reserve: bool) -> None:
        """``intel_irq_remapping_activate`` after the vector domain's
        ``x86_vector_activate``: in reservation mode the vector points at
        ``MANAGED_IRQ_SHUTDOWN_VECTOR`` on the first CPU (``vector_assign_managed_shutdown``)
        and the interrupt is left not activated; else at its own vector."""
        data = desc.chip_data
        if not isinstance(data, Irq2Iommu):
            return
        vector = MANAGED_IRQ_SHUTDOWN_VECTOR if reserve else desc.vector
        intel_ir_reconfigure_irte(data, vector, desc.dest_apicid, True)
        data.activated = not reserve

    def set_affinity(self, desc: IrqDesc) -> None:
        """``intel_ir_set_affinity``: the vector domain keeps the vector on the one
        CPU (``apic_set_affinity`` returns ``IRQ_SET_MASK_OK``), and the entry is
        rewritten (``intel_ir_reconfigure_irte``)."""
        data = desc.chip_data
        if isinstance(data, Irq2Iommu):
            intel_ir_reconfigure_irte(data, desc.vector, desc.dest_apicid, False)

    def deactivate(self, desc: IrqDesc) -> None:
        """``intel_irq_remapping_deactivate``: a zero entry, flushed (only for an
        activated interrupt, as the irq core calls it)."""
        data = desc.chip_data
        if isinstance(data, Irq2Iommu) and data.activated:
            data.activated = False
            modify_irte(data, Irte())

    def free(self, desc: IrqDesc) -> None:
        """``intel_free_irq_resources``: ``clear_entries`` (zeroed, released, flushed)."""
        data = desc.chip_data
        if not isinstance(data, Irq2Iommu):
            return
        desc.chip_data = None
        clear_entries(data)


def intel_ir_reconfigure_irte(data: Irq2Iommu, vector: int, dest: int, force: bool) -> None:
    """``intel_ir_reconfigure_irte``: the vector's current vector and destination
    into its entry, written with ``modify_irte`` (always: no posted mode here)."""
    irte = data.irte_entry
    irte.vector = vector
    irte.dest_id = dest if ir_state().eim_mode else dest << 8  # IRTE_DEST
    modify_irte(data, irte)


# -- debugfs ----------------------------------------------------------------------------


def ir_translation_struct(iommu: IntelIommu) -> list[str]:
    """One unit's part of debugfs ``ir_translation_struct``
    (``ir_translation_struct_show`` + ``ir_tbl_remap_entry_show``): the present,
    remapped-format entries of the table in RAM (posted ones are never made here)."""
    if not ir.ecap_ir_support(iommu.ecap):
        return []
    lines = [f"Remapped Interrupt supported on IOMMU: {iommu.name}"]
    table = iommu.ir_table
    if not isinstance(table, IrTable):
        return [*lines, "Interrupt Remapping is not enabled", ""]
    lines.append(f" IR table address:{virt_to_phys(table.base):x}")
    lines.append(" Entry SrcID   DstID    Vct IRTE_high\t\tIRTE_low")
    raw = memory_read(table.base, IRTE_SIZE * INTR_REMAP_TABLE_ENTRIES)
    for idx in range(INTR_REMAP_TABLE_ENTRIES):
        if not raw[IRTE_SIZE * idx] & 1:
            continue
        low = int.from_bytes(raw[IRTE_SIZE * idx : IRTE_SIZE * idx + 8], "little")
        high = int.from_bytes(raw[IRTE_SIZE * idx + 8 : IRTE_SIZE * idx + 16], "little")
        e = Irte.decode(low, high)
        if e.pst:
            continue
        sid = e.sid
        lines.append(
            f" {idx:<5d} {sid >> 8:02x}:{(sid >> 3) & 0x1F:02x}.{sid & 7:01x} "
            f"{e.dest_id:08x} {e.vector:02x}  {high:016x}\t{low:016x}"
        )
    lines.append("")
    return lines
