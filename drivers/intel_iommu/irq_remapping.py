"""VT-d interrupt remapping (Linux 6.12 drivers/iommu/intel/irq_remapping.c).

Bring-up per unit, in Linux's order and before DMA remapping is set up:
``intel_prepare_irq_remapping`` decides once whether remapping is possible (every
DMAR unit has ECAP.IR, ``intremap=off`` not given) and in which mode (x2APIC when
every unit has ECAP.EIM); ``intel_setup_irq_remapping`` allocates the 65536-entry
table (order-8 pages), enables queued invalidation (QIE), points IRTA at the table
(SIRTP, wait IRTPS) and flushes the interrupt entry cache globally
(``qi_global_iec``, unless CAP.ESIRTPS); ``iommu_enable_irq_remapping`` sets IRE and
blocks compatibility-format interrupts (CFI). The unit's MSI parent domain
(:class:`IntelIrDomain`) then gives each MSI/MSI-X vector of a device behind the
unit its own IRTE (``intel_irq_remapping_alloc``: ``alloc_irte``,
``prepare_irte`` with source-id validation ``set_msi_sid``, ``fill_msi_msg``),
written on activation by ``modify_irte`` with an index-selective IEC flush;
freeing clears the entry (``intel_irq_remapping_deactivate`` + ``clear_entries``),
again with index flushes.

Differences from Linux: the core brings units up one at a time, so each unit's
interrupt remapping is enabled right before its DMA remapping (Linux enables it on
every unit before any DMA remapping) and "Enabled IRQ remapping" is printed after
the first unit. There is no IOAPIC or HPET (no "IOAPIC id ... under DRHD" line, no
IOAPIC entries); the CPU is taken to support x2APIC exactly when every DMAR unit
offers ECAP.EIM and the DMAR table never sets the x2APIC opt-out flag (so
``no_x2apic_optout`` changes nothing). Posted interrupts are never used (CAP.PI is
not modelled). With ``intel_iommu=off`` Linux still enables interrupt remapping;
here the unit is not brought up at all, so interrupts stay in compatibility format.
"""

from __future__ import annotations

from attrs import define, field

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import (
    IOMMU_WAIT_OP,
    dmar_disable_qi,
    dmar_enable_qi,
    dmar_fault,
    dmar_writeq,
    qi_global_iec,
    qi_submit_sync,
)
from drivers.intel_iommu.structs import VTD_FLAG_IRQ_REMAP_PRE_ENABLED, IntelIommu
from kernel.bug import WARN
from kernel.context import KernelSlot
from kernel.device import Device
from kernel.errno import EINVAL, ENOMEM, ENOSPC, KernelError
from kernel.io import ioremap, iounmap
from kernel.irq import IrqDesc
from kernel.irq_remapping import (
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
from kernel.platform import platform
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


@define(eq=False)
class IrState:
    """The file's statics: ``eim_mode``, the prepare decision, the announce-once."""

    prepared: bool | None = None
    eim_mode: bool = False
    enabled_units: int = 0
    announced: bool = False


_IR: KernelSlot[IrState] = KernelSlot("intel_irq_remapping", IrState)


def ir_state() -> IrState:
    return _IR.get()


# -- prepare: may remapping be used, and in which mode ---------------------------------


def _unit_ecaps() -> list[tuple[str, int]]:
    """Read every DMAR unit's ECAP as ``dmar_parse_one_drhd``/``map_iommu`` do."""
    out = []
    for i, u in enumerate(x for x in platform().firmware.iommus if x.table == "DMAR"):
        regs = ioremap(u.register_base, 0x1000)
        try:
            out.append((f"dmar{i}", regs.readq(ir.DMAR_ECAP_REG)))
        finally:
            iounmap(regs)
    return out


def intel_prepare_irq_remapping() -> bool:
    """``irq_remapping_prepare`` + ``intel_prepare_irq_remapping``: False (with
    Linux's lines) when remapping cannot be used on this machine."""
    gen = irq_remap_state()
    if gen.disable_irq_remap:
        return False
    ecaps = _unit_ecaps()
    if not any(ir.ecap_ir_support(e) for _, e in ecaps):  # dmar_ir_support: no INTR_REMAP flag
        return False
    if not all(ir.ecap_ir_support(e) for _, e in ecaps):
        if any(ir.ecap_eim_support(e) for _, e in ecaps):  # x2apic_supported()
            pr_warn(
                f"{PFX}Failed to enable irq remapping. You are vulnerable to irq-injection attacks."
            )
        return False
    eim = any(ir.ecap_eim_support(e) for _, e in ecaps)  # x2apic_supported(), no opt-out
    for name, e in ecaps:
        if eim and not ir.ecap_eim_support(e):
            pr_info(f"{PFX}{name} does not support EIM")
            eim = False
    ir_state().eim_mode = eim
    if eim:
        pr_info(f"{PFX}Queued invalidation will be enabled to support x2apic and Intr-remapping.")
    return True


def irq_remapping_wanted() -> bool:
    """The prepare decision, taken once per boot at the first unit."""
    st = ir_state()
    if st.prepared is None:
        st.prepared = intel_prepare_irq_remapping()
    return st.prepared


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


def intel_irq_remapping_init_unit(iommu: IntelIommu) -> bool:
    """Prepare + setup + enable for one unit (``irq_remapping_prepare``/
    ``irq_remapping_enable`` in the kernel's x86 APIC setup). True when on."""
    if not irq_remapping_wanted():
        return False
    try:
        intel_setup_irq_remapping(iommu)
    except KernelError:
        pr_err(f"{PFX}Failed to setup irq remapping for {iommu.name}")
        return False
    iommu_enable_irq_remapping(iommu)
    st = ir_state()
    st.enabled_units += 1
    irq_remap_register_domain(iommu.ir_domain)
    irq_remap_state().irq_remapping_enabled = True
    if not st.announced:
        st.announced = True
        pr_info(f"{PFX}Enabled IRQ remapping in {'x2apic' if st.eim_mode else 'xapic'} mode")
    return True


def intel_irq_remapping_shutdown_unit(iommu: IntelIommu) -> None:
    """Disable and tear down (``disable_irq_remapping`` + teardown) at unit shutdown."""
    if iommu.ir_table is None:
        return
    iommu_disable_irq_remapping(iommu)
    intel_teardown_irq_remapping(iommu)
    st = ir_state()
    st.enabled_units -= 1
    if not st.enabled_units:
        irq_remap_state().irq_remapping_enabled = False


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
        """``intel_irq_remapping_alloc`` for one MSI-X vector, then activation
        (``intel_irq_remapping_activate``: ``modify_irte`` + index flush)."""
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
        modify_irte(data, data.irte_entry)
        return data.msi_entry

    def free(self, desc: IrqDesc) -> None:
        """``intel_irq_remapping_deactivate`` (a zero entry, flushed) and
        ``intel_free_irq_resources`` (``clear_entries``)."""
        data = desc.chip_data
        if not isinstance(data, Irq2Iommu):
            return
        desc.chip_data = None
        modify_irte(data, Irte())
        clear_entries(data)


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
