"""drivers/dma/idxd/init.c: the PCI driver (probe/remove), capability reading,
WQ/engine/group allocation, interrupts, and the system PASID.

``idxd_enable_system_pasid`` follows the IOMMU core's PASID API generation
(kernel parameter ``iommu.pasid_api``):

- ``upstream`` (v6.6+, f5ccf55e1028): the default domain from
  ``iommu_get_domain_for_dev`` (-EPERM without one), a PASID from
  ``iommu_alloc_global_pasid`` (-ENOSPC), ``iommu_attach_device_pasid`` (the PASID
  freed again if that fails), then GENCFG.user_int_en because kernel descriptors
  now use user privilege;
- ``seed-v3`` (the 2022 series, patch 3/4): ``iommu_attach_dma_pasid(dev)``;
- ``kernel-sva`` (5.15, what the series replaced): a supervisor SVA bind of the
  kernel's address space (drivers/idxd/kernel_sva.py).

With the first two kernel descriptors then use user privilege and
GENCFG.user_int_en is set (see ``idxd_wq_kernel_priv``; ``idxd.kernel_priv=1``
keeps 2022's priv=1); ``kernel-sva`` always uses priv=1.

A failure leaves the device without PASID ("No in-kernel DMA with PASID"): the
dedicated WQ still works, a shared one cannot be enabled.

Module parameters: ``idxd.sva`` (default on: try the system PASID),
``idxd.default_config`` (default on: configure and enable the default kernel WQs
at probe), ``idxd.default_wqs`` (how many: default 2, 0 = every WQ), ``idxd.config``
(an accel-config JSON file to load instead).
"""

from __future__ import annotations

from drivers.idxd import kernel_sva
from drivers.idxd import registers as regs
from drivers.idxd.device import (
    PASID_API_SEED_V3,
    idxd_cmd_exec,
    idxd_set_user_intr,
)
from drivers.idxd.idxd import (
    IdxdDevice,
    IdxdEngine,
    IdxdGroup,
    IdxdHw,
    IdxdWq,
)
from drivers.idxd.irq import idxd_misc_thread
from drivers.idxd.sysfs import (
    idxd_default_config,
    idxd_disable,
    idxd_enable,
    idxd_load_config,
    idxd_load_config_file,
)
from kernel.context import KernelSlot, current_kernel
from kernel.delay import del_timer
from kernel.device import dev_get_drvdata, dev_set_drvdata
from kernel.dma.direction import DMA_BIT_MASK
from kernel.dma.mapping import dma_set_mask_and_coherent
from kernel.errno import ENOMEM, ENOSPC, ENXIO, EPERM, KernelError
from kernel.idr import IDA, ida_alloc, ida_free
from kernel.io import iounmap
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import (
    IOMMU_DEV_FEAT_IOPF,
    IOMMU_DEV_FEAT_SVA,
    PASID_API_KERNEL_SVA,
    iommu_dev_disable_feature,
    iommu_dev_enable_feature,
    iommu_get_domain_for_dev,
    iommu_state,
)
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.irq import free_irq, request_threaded_irq
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.pci import (
    PCI_IRQ_MSIX,
    PciDev,
    PciDeviceId,
    PciDriver,
    pci_alloc_irq_vectors,
    pci_disable_device,
    pci_enable_device,
    pci_free_irq_vectors,
    pci_ioremap_bar,
    pci_irq_vector,
    pci_msix_vec_count,
    pci_register_driver,
    pci_set_master,
    pci_unregister_driver,
)
from kernel.printk import dev_err, dev_info, dev_warn

DRV_NAME = "idxd"


class IdxdState:
    """Per-kernel driver state: the bound devices and the device-number IDA."""

    def __init__(self) -> None:
        self.devices: list[IdxdDevice] = []
        self.ida = IDA()


_STATE: KernelSlot[IdxdState] = KernelSlot("idxd", IdxdState)


def idxd_state() -> IdxdState:
    """This kernel's driver state (created on first use)."""
    return _STATE.get()


def idxd_devices() -> list[IdxdDevice]:
    """Every bound idxd device of the running kernel (``/sys/bus/dsa/devices``)."""
    st = _STATE.peek()
    return list(st.devices) if st is not None else []


def idxd_find(name: str = "dsa0") -> IdxdDevice:
    for idxd in idxd_devices():
        if idxd.name == name:
            return idxd
    raise ENXIO(f"no idxd device {name}")


# -- system PASID -------------------------------------------------------------------------


def idxd_enable_system_pasid(idxd: IdxdDevice) -> None:
    """``idxd_enable_system_pasid`` in the IOMMU core's API generation."""
    dev = idxd.pdev
    api = iommu_state().pasid_api
    if api == PASID_API_SEED_V3:
        pasid = iommu_attach_dma_pasid(dev)
    elif api == PASID_API_KERNEL_SVA:
        pasid = kernel_sva.idxd_enable_system_pasid(idxd)
    else:
        domain = iommu_get_domain_for_dev(dev)
        if domain is None:
            raise EPERM(f"{dev.init_name}: no DMA domain")
        pasid = iommu_alloc_global_pasid(dev)
        if pasid == IOMMU_PASID_INVALID:
            raise ENOSPC(f"{dev.init_name}: no global PASID")
        try:
            iommu_attach_device_pasid(domain, dev, pasid)
        except KernelError:
            dev_err(dev, f"failed to attach device pasid {pasid}, domain type {domain.type}")
            iommu_free_global_pasid(pasid)
            raise
    if not idxd.kernel_priv:
        idxd_set_user_intr(idxd, True)
    idxd.pasid = pasid
    idxd.pasid_api = api
    idxd.pasid_enabled = True
    what = "bound to init_mm" if api == PASID_API_KERNEL_SVA else "attached to the DMA domain"
    dev_info(dev, f"system PASID {pasid} {what} ({api} API)")


def idxd_disable_system_pasid(idxd: IdxdDevice) -> None:
    """``idxd_disable_system_pasid``: detach, free, clear GENCFG.user_int_en."""
    if not idxd.pasid_enabled:
        return
    dev = idxd.pdev
    if idxd.pasid_api == PASID_API_SEED_V3:
        iommu_detach_dma_pasid(dev)
    elif idxd.pasid_api == PASID_API_KERNEL_SVA:
        kernel_sva.idxd_disable_system_pasid(idxd)
    else:
        domain = iommu_get_domain_for_dev(dev)
        if domain is not None:
            iommu_detach_device_pasid(domain, dev, idxd.pasid)
            iommu_free_global_pasid(idxd.pasid)
    if idxd.user_int_en:
        idxd_set_user_intr(idxd, False)
    dev_info(dev, f"system PASID {idxd.pasid} detached")
    idxd.pasid = IOMMU_PASID_INVALID
    idxd.pasid_enabled = False


# -- probe steps -----------------------------------------------------------------------


def idxd_device_init_reset(idxd: IdxdDevice) -> None:
    """``idxd_device_init_reset``: Reset Device with CMDSTS polling (no interrupt
    yet); a halted device needing more than a software reset is refused."""
    status = idxd_cmd_exec(idxd, regs.IDXD_CMD_RESET_DEVICE, 0)
    if regs.CMDSTS_ERR.get(status):
        dev_err(idxd.pdev, f"device reset failed: {status:#x}")
        raise ENXIO(f"{idxd.name}: reset failed with status {status:#x}")


def idxd_read_caps(idxd: IdxdDevice) -> None:
    """``idxd_read_caps`` and ``idxd_read_table_offsets``."""
    reg = idxd.reg_base
    assert reg is not None
    hw = IdxdHw()
    hw.version = reg.readl(regs.IDXD_VER_OFFSET)
    hw.gen_cap = reg.readq(regs.IDXD_GENCAP_OFFSET)
    if regs.GENCAP_CMD_CAP.get(hw.gen_cap):
        hw.cmd_cap = reg.readl(regs.IDXD_CMDCAP_OFFSET)
    hw.wq_cap = reg.readq(regs.IDXD_WQCAP_OFFSET)
    hw.group_cap = reg.readq(regs.IDXD_GRPCAP_OFFSET)
    hw.engine_cap = reg.readq(regs.IDXD_ENGCAP_OFFSET)
    hw.opcap = tuple(
        reg.readq(regs.IDXD_OPCAP_OFFSET + 8 * i) for i in range(regs.IDXD_OPCAP_NOREAD)
    )
    idxd.hw = hw
    idxd.configurable = bool(regs.GENCAP_CONFIG_EN.get(hw.gen_cap))
    idxd.max_xfer_bytes = 1 << regs.GENCAP_MAX_XFER_SHIFT.get(hw.gen_cap)
    idxd.max_batch_size = 1 << regs.GENCAP_MAX_BATCH_SHIFT.get(hw.gen_cap)
    idxd.max_groups = regs.GRPCAP_NUM_GROUPS.get(hw.group_cap)
    idxd.max_rdbufs = regs.GRPCAP_TOTAL_RDBUFS.get(hw.group_cap)
    idxd.max_engines = regs.ENGCAP_NUM_ENGINES.get(hw.engine_cap)
    idxd.max_wqs = regs.WQCAP_NUM_WQS.get(hw.wq_cap)
    idxd.max_wq_size = regs.WQCAP_TOTAL_WQ_SIZE.get(hw.wq_cap)
    idxd.wqcfg_size = 1 << (regs.WQCAP_WQCFG_SIZE.get(hw.wq_cap) + 5)
    offsets = reg.readq(regs.IDXD_TABLE_OFFSET)
    idxd.grpcfg_offset = regs.TABLE_GRPCFG.get(offsets) * regs.IDXD_TABLE_MULT
    idxd.wqcfg_offset = regs.TABLE_WQCFG.get(offsets) * regs.IDXD_TABLE_MULT
    idxd.msix_perm_offset = regs.TABLE_MSIX_PERM.get(offsets) * regs.IDXD_TABLE_MULT


def _shadow(idxd: IdxdDevice, size: int, what: str) -> None:
    addr = kzalloc(size, GFP_KERNEL)
    if addr is None:
        raise ENOMEM(f"{idxd.name}: {what}")
    idxd.allocs.append(addr)


def idxd_setup_internals(idxd: IdxdDevice) -> None:
    """``idxd_setup_internals``: groups, engines and WQs (each with its kzalloc'd
    C structure shadow, so allocation failures and leaks are visible)."""
    _shadow(idxd, 64 * idxd.max_groups, "groups")
    idxd.groups = [IdxdGroup(i) for i in range(idxd.max_groups)]
    _shadow(idxd, 32 * idxd.max_engines, "engines")
    idxd.engines = [IdxdEngine(i) for i in range(idxd.max_engines)]
    _shadow(idxd, 256 * idxd.max_wqs, "wqs")
    idxd.wqs = [IdxdWq(i, idxd) for i in range(idxd.max_wqs)]


def idxd_setup_interrupts(idxd: IdxdDevice) -> None:
    """``idxd_setup_interrupts``: every MSI-X vector, the misc handler on vector 0,
    then GENCTRL software-error and halt interrupts unmasked."""
    pdev = idxd.pdev
    count = pci_msix_vec_count(pdev)
    idxd.irq_cnt = pci_alloc_irq_vectors(pdev, count, count, PCI_IRQ_MSIX)
    ie = idxd.misc_ie
    ie.vector = pci_irq_vector(pdev, 0)
    try:
        request_threaded_irq(ie.vector, None, idxd_misc_thread, 0, f"idxd{idxd.id}", idxd)
    except KernelError:
        pci_free_irq_vectors(pdev)
        raise
    ie.requested = True
    reg = idxd.reg_base
    assert reg is not None
    v = regs.GENCTRL_SOFTERR_INT_EN.put(0, 1)
    reg.writel(regs.GENCTRL_HALT_INT_EN.put(v, 1), regs.IDXD_GENCTRL_OFFSET)


def idxd_cleanup_interrupts(idxd: IdxdDevice) -> None:
    reg = idxd.reg_base
    assert reg is not None
    reg.writel(0, regs.IDXD_GENCTRL_OFFSET)
    if idxd.misc_ie.requested:
        free_irq(idxd.misc_ie.vector, idxd)
        idxd.misc_ie.requested = False
    pci_free_irq_vectors(idxd.pdev)


def _free_shadows(idxd: IdxdDevice) -> None:
    while idxd.allocs:
        kfree(idxd.allocs.pop())


def idxd_enable_sva(pdev: PciDev) -> None:
    """``idxd_enable_sva`` (6.12): IOPF (PRI through the IOMMU's page request queue),
    then SVA; IOPF is turned off again if SVA fails."""
    iommu_dev_enable_feature(pdev, IOMMU_DEV_FEAT_IOPF)
    try:
        iommu_dev_enable_feature(pdev, IOMMU_DEV_FEAT_SVA)
    except KernelError:
        iommu_dev_disable_feature(pdev, IOMMU_DEV_FEAT_IOPF)
        raise


def idxd_disable_sva(pdev: PciDev) -> None:
    """``idxd_disable_sva``."""
    iommu_dev_disable_feature(pdev, IOMMU_DEV_FEAT_SVA)
    iommu_dev_disable_feature(pdev, IOMMU_DEV_FEAT_IOPF)


def idxd_probe(idxd: IdxdDevice) -> None:
    """``idxd_probe``: reset, user SVA (IOPF), system PASID, capabilities, structures,
    interrupts. Unlike 6.12, the system PASID is tried even when user SVA could not be
    turned on (a unit without page requests still serves in-kernel PASID DMA)."""
    idxd_device_init_reset(idxd)
    kernel_sva_api = iommu_state().pasid_api == PASID_API_KERNEL_SVA
    idxd.kernel_priv = kernel_sva_api or bool(current_kernel().param("idxd.kernel_priv"))
    if current_kernel().param("idxd.sva"):
        try:
            idxd_enable_sva(idxd.pdev)
            idxd.user_pasid_enabled = True
        except KernelError:
            dev_warn(idxd.pdev, "Unable to turn on user SVA feature.")
        try:
            idxd_enable_system_pasid(idxd)
        except KernelError as err:
            dev_warn(idxd.pdev, f"No in-kernel DMA with PASID. ({err})")
    try:
        idxd_read_caps(idxd)
        idxd_setup_internals(idxd)
        idxd_setup_interrupts(idxd)
    except KernelError:
        _free_shadows(idxd)
        idxd_disable_system_pasid(idxd)
        _disable_user_sva(idxd)
        raise


def _disable_user_sva(idxd: IdxdDevice) -> None:
    if idxd.user_pasid_enabled:
        idxd_disable_sva(idxd.pdev)
        idxd.user_pasid_enabled = False


def _apply_boot_config(idxd: IdxdDevice) -> None:
    path = str(current_kernel().param("idxd.config"))
    if path:
        idxd_load_config_file(idxd, path)
    elif current_kernel().param("idxd.default_config"):
        count = int(current_kernel().param("idxd.default_wqs"))
        idxd_load_config(idxd, idxd_default_config(idxd, max(0, count)))
    else:
        return
    idxd_enable(idxd)


def idxd_pci_probe(pdev: PciDev, ident: PciDeviceId) -> None:
    """``idxd_pci_probe``: everything above, unwound in reverse on any failure."""
    st = idxd_state()
    pci_enable_device(pdev)
    idxd: IdxdDevice | None = None
    try:
        dma_set_mask_and_coherent(pdev, DMA_BIT_MASK(64))
        idxd = IdxdDevice(pdev, id=ida_alloc(st.ida))
        try:
            idxd.reg_base = pci_ioremap_bar(pdev, regs.IDXD_MMIO_BAR)
            idxd.wq_base = pci_ioremap_bar(pdev, regs.IDXD_WQ_BAR)
            pci_set_master(pdev)
            dev_set_drvdata(pdev, idxd)
            idxd_probe(idxd)
            try:
                _apply_boot_config(idxd)
            except KernelError:
                _idxd_teardown(idxd)
                raise
        except KernelError:
            _unmap(idxd)
            ida_free(st.ida, idxd.id)
            raise
    except KernelError as err:
        dev_err(pdev, f"Intel(R) IDXD DMA Engine init failed ({err})")
        pci_disable_device(pdev)
        raise
    st.devices.append(idxd)
    dev_info(
        pdev,
        f"Intel(R) Accelerator Device (v{idxd.hw.version:x}) {idxd.name}: "
        f"{idxd.max_wqs} WQs, {idxd.max_engines} engines, {idxd.max_groups} groups",
    )


def _unmap(idxd: IdxdDevice) -> None:
    for m in (idxd.reg_base, idxd.wq_base):
        if m is not None:
            iounmap(m)


def _idxd_teardown(idxd: IdxdDevice) -> None:
    """Everything ``idxd_probe`` and the boot configuration set up, in reverse."""
    if idxd.reinit_timer is not None:
        del_timer(idxd.reinit_timer)
    idxd_disable(idxd)
    idxd_cleanup_interrupts(idxd)
    _free_shadows(idxd)
    idxd_disable_system_pasid(idxd)
    _disable_user_sva(idxd)


def idxd_remove(pdev: PciDev) -> None:
    """``idxd_remove``: channels, WQs, device, interrupts, PASID, mappings."""
    idxd = dev_get_drvdata(pdev)
    assert isinstance(idxd, IdxdDevice)
    _idxd_teardown(idxd)
    _unmap(idxd)
    st = idxd_state()
    st.devices.remove(idxd)
    ida_free(st.ida, idxd.id)
    pci_disable_device(pdev)
    dev_info(pdev, f"{idxd.name} removed")


idxd_pci_tbl = [PciDeviceId(regs.PCI_VENDOR_ID_INTEL, regs.PCI_DEVICE_ID_INTEL_DSA_SPR0)]
idxd_pci_driver = PciDriver(DRV_NAME, idxd_pci_tbl, idxd_pci_probe, idxd_remove)


def idxd_init_module() -> None:
    """``idxd_init_module``."""
    pci_register_driver(idxd_pci_driver)


def idxd_exit_module() -> None:
    pci_unregister_driver(idxd_pci_driver)
