"""drivers/dma/idxd/device.c: the command interface, device and WQ enable/disable,
configuration writes (WQCFG, GRPCFG, GENCFG), WQ interrupts and resources.

Differences from Linux: commands complete either by the misc interrupt
(``int_req=1`` once the misc vector is up) or by polling CMDSTS; a command that
never completes times out after ``IDXD_CMD_TIMEOUT_US`` of virtual time instead of
waiting forever. WQ configuration is written for the one WQ being enabled (it is
disabled, so the device accepts the write) rather than for every WQ.
"""

from __future__ import annotations

from drivers.idxd import registers as regs
from drivers.idxd.idxd import (
    DSA_COMP_RECORD_SIZE,
    IDXD_COMPLETE_ABORT,
    IDXD_DEV_DISABLED,
    IDXD_DEV_ENABLED,
    IDXD_DEV_HALTED,
    IDXD_WQ_DISABLED,
    IDXD_WQ_ENABLED,
    IDXD_WQT_KERNEL,
    IdxdDesc,
    IdxdDevice,
    IdxdIrqEntry,
    IdxdWq,
)
from kernel.delay import ktime_get_ns, wait_for_completion_timeout, wait_next_event
from kernel.dma.mapping import dma_alloc_coherent, dma_free_coherent
from kernel.errno import EBUSY, EINVAL, EIO, ENOMEM, ENXIO, EOPNOTSUPP, ETIMEDOUT, KernelError
from kernel.io import IoMem, ioremap, iounmap
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.irq import free_irq, request_threaded_irq
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.pci import PCI_PASID_CAP_PRIV, pci_irq_vector, pci_resource_start
from kernel.printk import dev_dbg, dev_err, dev_info, dev_warn
from kernel.trace import define_tracepoint

PASID_API_SEED_V3 = "seed-v3"

trace_idxd_cmd = define_tracepoint(
    "idxd:cmd",
    ("dev", "cmd", "operand", "status"),
    "{dev}: cmd {cmd} operand={operand} status={status}",
)


# -- command interface ---------------------------------------------------------------


def _reg(idxd: IdxdDevice) -> IoMem:
    assert idxd.reg_base is not None
    return idxd.reg_base


def idxd_device_state(idxd: IdxdDevice) -> int:
    return regs.GENSTS_STATE.get(_reg(idxd).readl(regs.IDXD_GENSTATS_OFFSET))


def idxd_is_enabled(idxd: IdxdDevice) -> bool:
    return idxd_device_state(idxd) == regs.IDXD_DEVICE_STATE_ENABLED


def idxd_device_is_halted(idxd: IdxdDevice) -> bool:
    return idxd_device_state(idxd) == regs.IDXD_DEVICE_STATE_HALT


def idxd_cmd_exec(idxd: IdxdDevice, cmd_code: int, operand: int) -> int:
    """``idxd_cmd_exec``: write CMD, wait for completion, return CMDSTS.

    A halted device is not sent commands (status 0x03, as Linux reports) except
    Reset Device, the way out of a software-reset halt. With
    the misc vector up the command asks for a completion interrupt and the
    waiter sleeps on ``idxd.cmd_done``; otherwise CMDSTS.active is polled.
    Raises ETIMEDOUT if the device never finishes.
    """
    reg = _reg(idxd)
    if cmd_code != regs.IDXD_CMD_RESET_DEVICE and idxd_device_is_halted(idxd):
        dev_warn(idxd.pdev, "Device is HALTED!")
        idxd.cmd_status = regs.IDXD_CMDSTS_HW_ERR
        return regs.IDXD_CMDSTS_HW_ERR
    use_irq = idxd.misc_ie.requested
    value = regs.CMD_CMD.put(regs.CMD_OPERAND.put(0, operand), cmd_code)
    if use_irq:
        value = regs.CMD_INT_REQ.put(value, 1)
        idxd.cmd_done.reinit()
    reg.writel(value, regs.IDXD_CMD_OFFSET)
    timeout_ms = regs.IDXD_CMD_TIMEOUT_US // 1000
    if use_irq:
        if not wait_for_completion_timeout(idxd.cmd_done, timeout_ms):
            dev_err(idxd.pdev, f"command {regs.CMD_NAMES[cmd_code]} timed out")
            raise ETIMEDOUT(f"{idxd.name}: command {cmd_code} timed out")
        status = reg.readl(regs.IDXD_CMDSTS_OFFSET)
    else:
        # C spins on CMDSTS.active with cpu_relax(); each spin here jumps to the next
        # clock event, the only thing that can change the register (as qi_submit_sync).
        deadline = ktime_get_ns() + regs.IDXD_CMD_TIMEOUT_US * 1000
        status = reg.readl(regs.IDXD_CMDSTS_OFFSET)
        while regs.CMDSTS_ACTIVE.get(status):
            expired = not wait_next_event(deadline)
            status = reg.readl(regs.IDXD_CMDSTS_OFFSET)
            if expired and regs.CMDSTS_ACTIVE.get(status):
                dev_err(idxd.pdev, f"command {regs.CMD_NAMES[cmd_code]} timed out")
                raise ETIMEDOUT(f"{idxd.name}: command {cmd_code} timed out")
    idxd.cmd_status = regs.CMDSTS_ERR.get(status)
    trace_idxd_cmd(dev=idxd.name, cmd=cmd_code, operand=operand, status=idxd.cmd_status)
    return status


def idxd_device_reset(idxd: IdxdDevice) -> None:
    """``idxd_device_reset``: Reset Device, then forget the software state."""
    status = idxd_cmd_exec(idxd, regs.IDXD_CMD_RESET_DEVICE, 0)
    if regs.CMDSTS_ERR.get(status):
        dev_err(idxd.pdev, f"Resetting device failed: {status:#x}")
        raise ENXIO(f"{idxd.name}: reset failed with status {status:#x}")
    idxd.resets += 1
    idxd.user_int_en = False
    idxd.state = IDXD_DEV_DISABLED


def idxd_device_enable(idxd: IdxdDevice) -> None:
    """``idxd_device_enable``: Enable Device; "already enabled" is success."""
    if idxd_is_enabled(idxd):
        dev_dbg(idxd.pdev, "Device already enabled")
        raise ENXIO(f"{idxd.name}: already enabled")
    status = idxd_cmd_exec(idxd, regs.IDXD_CMD_ENABLE_DEVICE, 0)
    err = regs.CMDSTS_ERR.get(status)
    if err and err != regs.IDXD_CMDSTS_ERR_DEV_ENABLED:
        dev_err(idxd.pdev, f"Enabling device failed: {status:#x}")
        raise ENXIO(f"{idxd.name}: enable device failed with status {err:#x}")
    idxd.state = IDXD_DEV_ENABLED


def idxd_device_disable(idxd: IdxdDevice) -> None:
    """``idxd_device_disable``: Disable Device (0x31 "not enabled" is tolerated)."""
    if not idxd_is_enabled(idxd):
        idxd.state = IDXD_DEV_HALTED if idxd_device_is_halted(idxd) else IDXD_DEV_DISABLED
        return
    status = idxd_cmd_exec(idxd, regs.IDXD_CMD_DISABLE_DEVICE, 0)
    err = regs.CMDSTS_ERR.get(status)
    if err and not err & regs.IDXD_CMDSTS_ERR_DIS_DEV_EN:
        dev_err(idxd.pdev, f"Disabling device failed: {status:#x}")
        raise ENXIO(f"{idxd.name}: disable device failed with status {err:#x}")
    idxd.state = IDXD_DEV_DISABLED


def _wq_cmd(wq: IdxdWq, code: int, what: str) -> None:
    status = idxd_cmd_exec(wq.idxd, code, regs.wq_cmd_operand(wq.id))
    err = regs.CMDSTS_ERR.get(status)
    if err and err != regs.IDXD_CMDSTS_ERR_DEV_NOT_EN:
        dev_err(wq.idxd.pdev, f"{what} {wq.name_dev} failed: {status:#x}")
        raise ENXIO(f"{wq.name_dev}: {what} failed with status {err:#x}")


def idxd_wq_drain(wq: IdxdWq) -> None:
    """``idxd_wq_drain``: Drain WQ (every accepted descriptor completes)."""
    _wq_cmd(wq, regs.IDXD_CMD_DRAIN_WQ, "drain")


def idxd_wq_abort(wq: IdxdWq) -> None:
    """``idxd_wq_abort``: Abort WQ (queued descriptors are dropped unwritten)."""
    _wq_cmd(wq, regs.IDXD_CMD_ABORT_WQ, "abort")


def idxd_wq_reset(wq: IdxdWq) -> None:
    """``idxd_wq_reset``: Reset WQ (disables it and clears its WQCFG)."""
    _wq_cmd(wq, regs.IDXD_CMD_RESET_WQ, "reset")
    wq.wqcfg = [0] * 8


def idxd_wq_disable(wq: IdxdWq) -> None:
    """``idxd_wq_disable``: Disable WQ (drains it first, in hardware)."""
    _wq_cmd(wq, regs.IDXD_CMD_DISABLE_WQ, "disable")


def idxd_device_drain_pasid(idxd: IdxdDevice, pasid: int) -> None:
    """``idxd_device_drain_pasid``: Drain PASID — every descriptor the device
    accepted with ``pasid`` completes before the command does."""
    status = idxd_cmd_exec(idxd, regs.IDXD_CMD_DRAIN_PASID, pasid)
    if regs.CMDSTS_ERR.get(status):
        dev_err(idxd.pdev, f"drain PASID {pasid} failed: {status:#x}")


def _wq_write_pasid(wq: IdxdWq, pasid: int, enable: bool) -> None:
    """WQCFG dword 2 read-modify-write of PASID_EN and PASID (the WQ is disabled)."""
    reg = _reg(wq.idxd)
    off = _wqcfg_addr(wq, regs.WQCFG_PASID_IDX)
    dw2 = regs.WQCFG_PASID_EN.put(reg.readl(off), int(enable))
    dw2 = regs.WQCFG_PASID.put(dw2, pasid)
    reg.writel(dw2, off)
    wq.wqcfg[regs.WQCFG_PASID_IDX] = dw2


def idxd_wq_set_pasid(wq: IdxdWq, pasid: int) -> None:
    """``idxd_wq_set_pasid``: a dedicated WQ takes ``pasid`` (disable, WQCFG, enable)."""
    idxd_wq_disable(wq)
    _wq_write_pasid(wq, pasid, True)
    wq.pasid = pasid
    idxd_wq_enable(wq)


def idxd_wq_disable_pasid(wq: IdxdWq) -> None:
    """``idxd_wq_disable_pasid``: the WQ forgets its PASID; disabling it first
    drains what the device accepted."""
    idxd_wq_disable(wq)
    _wq_write_pasid(wq, 0, False)
    wq.pasid = IOMMU_PASID_INVALID
    idxd_wq_enable(wq)


def idxd_wq_enable(wq: IdxdWq) -> None:
    """``idxd_wq_enable``: Enable WQ; "already enabled" (0x21) is success."""
    status = idxd_cmd_exec(wq.idxd, regs.IDXD_CMD_ENABLE_WQ, wq.id)
    err = regs.CMDSTS_ERR.get(status)
    if err and err != regs.IDXD_CMDSTS_ERR_WQ_ENABLED:
        dev_err(wq.idxd.pdev, f"WQ enable failed: {status:#x}")
        raise ENXIO(f"{wq.name_dev}: enable failed with status {err:#x}")


def idxd_wq_occupancy(wq: IdxdWq) -> int:
    """sysfs ``occupancy``: WQCFG occupancy, when WQCAP advertises it (EOPNOTSUPP
    otherwise, as Linux); :attr:`IdxdWq.in_flight` is the driver's own count."""
    if not regs.WQCAP_OCCUPANCY.get(wq.idxd.hw.wq_cap):
        raise EOPNOTSUPP(f"{wq.name_dev}: occupancy not supported by WQCAP")
    return regs.WQCFG_OCCUPANCY.get(_wqcfg_read(wq, regs.WQCFG_OCCUP_IDX))


# -- configuration writes ---------------------------------------------------------


def _wqcfg_addr(wq: IdxdWq, dword: int) -> int:
    idxd = wq.idxd
    return idxd.wqcfg_offset + wq.id * idxd.wqcfg_size + 4 * dword


def _wqcfg_read(wq: IdxdWq, dword: int) -> int:
    return _reg(wq.idxd).readl(_wqcfg_addr(wq, dword))


def idxd_set_user_intr(idxd: IdxdDevice, enable: bool) -> None:
    """``idxd_set_user_intr``: GENCFG.user_int_en read-modify-write (writable
    only while the device is disabled)."""
    reg = _reg(idxd)
    v = reg.readl(regs.IDXD_GENCFG_OFFSET)
    reg.writel(regs.GENCFG_USER_INT_EN.put(v, int(enable)), regs.IDXD_GENCFG_OFFSET)
    idxd.user_int_en = enable


def idxd_wq_kernel_priv(idxd: IdxdDevice) -> int:
    """Privilege of kernel descriptors and kernel dedicated WQs.

    With a system PASID: user privilege (0) under ``upstream`` and ``seed-v3``,
    because the VT-d driver sets kernel-DMA PASID entries up non-privileged
    (SRE=0; a7050fbde36e, v6.4). The 2022 seed-era idxd kept priv=1 for kernel WQs
    (WQCFG.priv and ``hw->priv``) and relied on the supervisor-request PASID
    entries VT-d made then; ``idxd.kernel_priv=1`` restores that behaviour, and
    against today's VT-d entries every descriptor then faults (the model reports
    it). ``kernel-sva`` forces ``kernel_priv``: its PASID entry is a supervisor
    one (SRE=1) over ``init_mm``. Without a PASID the request carries no privilege
    at all; kernel WQs keep priv=1 so their completion interrupts do not depend on
    GENCFG.user_int_en.
    """
    if idxd.pasid_enabled and not idxd.kernel_priv:
        return 0
    return 1


def idxd_wq_config_write(wq: IdxdWq) -> None:
    """``idxd_wq_config_write``: merge the sticky hardware bits into the shadow,
    fill it from the WQ's configuration, write every dword."""
    idxd = wq.idxd
    if not idxd.configurable:
        return
    shadow = [_wqcfg_read(wq, i) for i in range(8)]
    if wq.size == 0:
        dev_warn(idxd.pdev, "Incorrect work queue size: 0")
        raise EINVAL(f"{wq.name_dev}: size is 0")
    shadow[regs.WQCFG_SIZE_IDX] = regs.WQCFG_WQ_SIZE.put(0, wq.size)
    shadow[regs.WQCFG_THRESH_IDX] = regs.WQCFG_WQ_THRESH.put(0, wq.threshold)
    dw2 = regs.WQCFG_MODE.put(0, int(wq.dedicated))
    dw2 = regs.WQCFG_PRIORITY.put(dw2, wq.priority)
    if regs.GENCAP_BLOCK_ON_FAULT.get(idxd.hw.gen_cap) and wq.block_on_fault:
        dw2 = regs.WQCFG_BOF.put(dw2, 1)
    if regs.WQCAP_WQ_PRS_SUPPORT.get(idxd.hw.wq_cap) and wq.prs_disable:
        dw2 = regs.WQCFG_PRS_DISABLE.put(dw2, 1)
    if idxd.wq_pasid_enabled(wq):
        dw2 = regs.WQCFG_PASID_EN.put(dw2, 1)
        kernel_dwq = wq.dedicated and wq.type == IDXD_WQT_KERNEL
        dw2 = regs.WQCFG_PASID.put(dw2, idxd.pasid if kernel_dwq else 0)
        if kernel_dwq and not idxd.pdev.pasid_features & PCI_PASID_CAP_PRIV:
            dev_err(idxd.pdev, f"{wq.name_dev}: dedicated kernel WQ needs PASID privileged mode")
            raise EOPNOTSUPP(f"{wq.name_dev}: PCI PASID privileged mode not enabled")
    if wq.type == IDXD_WQT_KERNEL:
        dw2 = regs.WQCFG_PRIV.put(dw2, idxd_wq_kernel_priv(idxd))
    shadow[regs.WQCFG_PASID_IDX] = dw2
    dw3 = regs.WQCFG_MAX_XFER_SHIFT.put(0, wq.max_xfer_shift)
    shadow[regs.WQCFG_SHIFTS_IDX] = regs.WQCFG_MAX_BATCH_SHIFT.put(dw3, wq.max_batch_shift)
    wq.wqcfg = shadow
    reg = _reg(idxd)
    for i, v in enumerate(shadow):
        if i != regs.WQCFG_OCCUP_IDX:
            reg.writel(v, _wqcfg_addr(wq, i))


def idxd_group_flags(idxd: IdxdDevice, g: int) -> int:
    grp = idxd.groups[g]
    tc_a = grp.tc_a if grp.tc_a >= 0 else (1 if idxd.hw.version <= regs.DEVICE_VERSION_2 else 0)
    tc_b = grp.tc_b if grp.tc_b >= 0 else 1
    flags = regs.GRPFLAGS_TC_A.put(0, tc_a)
    flags = regs.GRPFLAGS_TC_B.put(flags, tc_b)
    flags = regs.GRPFLAGS_USE_RDBUF_LIMIT.put(flags, int(grp.use_rdbuf_limit))
    flags = regs.GRPFLAGS_RDBUFS_RESERVED.put(flags, grp.rdbufs_reserved)
    allowed = grp.rdbufs_allowed or idxd.max_rdbufs
    flags = regs.GRPFLAGS_RDBUFS_ALLOWED.put(flags, allowed)
    flags = regs.GRPFLAGS_DESC_PROGRESS_LIMIT.put(flags, grp.desc_progress_limit)
    return regs.GRPFLAGS_BATCH_PROGRESS_LIMIT.put(flags, grp.batch_progress_limit)


def idxd_groups_config_write(idxd: IdxdDevice) -> None:
    """``idxd_groups_config_write``: GENCFG read-buffer limit, then every GRPCFG."""
    reg = _reg(idxd)
    if idxd.rdbuf_limit:
        v = reg.readl(regs.IDXD_GENCFG_OFFSET)
        reg.writel(regs.GENCFG_RDBUF_LIMIT.put(v, idxd.rdbuf_limit), regs.IDXD_GENCFG_OFFSET)
    for grp in idxd.groups:
        grp.grpcfg_wqs = sum(1 << wq.id for wq in idxd.wqs if wq.group_id == grp.id and wq.size > 0)
        grp.grpcfg_engines = sum(1 << e.id for e in idxd.engines if e.group_id == grp.id)
        grp.grpcfg_flags = idxd_group_flags(idxd, grp.id)
        base = idxd.grpcfg_offset + grp.id * regs.GRPCFG_SIZE
        for i in range(4):
            reg.writeq((grp.grpcfg_wqs >> (64 * i)) & (2**64 - 1), base + 8 * i)
        reg.writeq(grp.grpcfg_engines, base + 32)
        reg.writeq(grp.grpcfg_flags, base + 40)


def idxd_device_config(idxd: IdxdDevice) -> None:
    """``idxd_device_config``: WQCFG of every configured WQ, GENCFG, GRPCFG."""
    if not idxd.configurable:
        return
    for wq in idxd.wqs:
        if wq.size:
            idxd_wq_config_write(wq)
    idxd_groups_config_write(idxd)


def idxd_device_drv_probe(idxd: IdxdDevice) -> None:
    """``idxd_device_drv_probe``: program the configuration and enable the device;
    GENCFG.user_int_en again when a system PASID is in use (a reset clears it)."""
    if idxd.state == IDXD_DEV_ENABLED:
        raise EBUSY(f"{idxd.name}: device already enabled")
    try:
        if idxd.pasid_enabled and not idxd.kernel_priv:
            idxd_set_user_intr(idxd, True)
        idxd_device_config(idxd)
        idxd_device_enable(idxd)
    except KernelError:
        if idxd.user_int_en:
            idxd_set_user_intr(idxd, False)
        raise
    dev_info(idxd.pdev, f"{idxd.name}: device enabled")


def idxd_device_drv_remove(idxd: IdxdDevice) -> None:
    """``idxd_device_drv_remove``: disable every enabled WQ, then the device."""
    for wq in idxd.wqs:
        if wq.state == IDXD_WQ_ENABLED:
            idxd_drv_disable_wq(wq)
    if idxd.state == IDXD_DEV_ENABLED:
        idxd_device_disable(idxd)
        if idxd.user_int_en:
            idxd_set_user_intr(idxd, False)
        dev_info(idxd.pdev, f"{idxd.name}: device disabled")


# -- MSI-X permissions, WQ interrupts --------------------------------------------------


def idxd_device_set_perm_entry(idxd: IdxdDevice, ie: IdxdIrqEntry) -> None:
    """``idxd_device_set_perm_entry``: bind the vector to the system PASID."""
    if ie.pasid == IOMMU_PASID_INVALID:
        return
    v = regs.MSIX_PERM_PASID_EN.put(0, 1)
    v = regs.MSIX_PERM_PASID.put(v, ie.pasid)
    _reg(idxd).writel(v, idxd.msix_perm_offset + ie.id * regs.MSIX_PERM_STRIDE)


def idxd_device_clear_perm_entry(idxd: IdxdDevice, ie: IdxdIrqEntry) -> None:
    _reg(idxd).writel(0, idxd.msix_perm_offset + ie.id * regs.MSIX_PERM_STRIDE)


def idxd_wq_request_irq(wq: IdxdWq) -> None:
    """``idxd_wq_request_irq``: vector ``wq.id + 1``, its MSIX_PERM entry, the
    threaded handler, and an interrupt handle if the device hands them out."""
    from drivers.idxd.irq import idxd_wq_thread

    idxd = wq.idxd
    ie = IdxdIrqEntry(wq.id + 1)
    ie.vector = pci_irq_vector(idxd.pdev, ie.id)
    ie.pasid = idxd.pasid if idxd.pasid_enabled else IOMMU_PASID_INVALID
    idxd_device_set_perm_entry(idxd, ie)
    try:
        request_threaded_irq(ie.vector, None, idxd_wq_thread, 0, f"idxd-{wq.name_dev}", ie)
    except KernelError:
        idxd_device_clear_perm_entry(idxd, ie)
        raise
    ie.requested = True
    wq.ie = ie
    if idxd.hw.cmd_cap >> regs.IDXD_CMD_REQUEST_INT_HANDLE & 1:
        status = idxd_cmd_exec(idxd, regs.IDXD_CMD_REQUEST_INT_HANDLE, ie.id)
        if regs.CMDSTS_ERR.get(status):
            idxd_wq_free_irq(wq)
            dev_err(idxd.pdev, f"request int handle failed: {status:#x}")
            raise ENXIO(f"{wq.name_dev}: no interrupt handle")
        ie.int_handle = regs.CMDSTS_RESULT.get(status)
    else:
        ie.int_handle = ie.id


def idxd_wq_free_irq(wq: IdxdWq) -> None:
    """``idxd_wq_free_irq``: free the handler, abort what is still pending,
    release the handle and clear the permission entry."""
    from drivers.idxd.irq import idxd_flush_pending_descs

    ie = wq.ie
    if ie is None:
        return
    idxd = wq.idxd
    free_irq(ie.vector, ie)
    ie.requested = False
    idxd_flush_pending_descs(ie)
    if ie.int_handle >= 0 and ie.int_handle != ie.id:
        idxd_cmd_exec(idxd, regs.IDXD_CMD_RELEASE_INT_HANDLE, ie.int_handle)
    idxd_device_clear_perm_entry(idxd, ie)
    wq.ie = None


# -- WQ resources -------------------------------------------------------------------


def idxd_wq_alloc_resources(wq: IdxdWq) -> None:
    """``idxd_wq_alloc_resources``: ``num_descs`` descriptor slots, completion
    records in one DMA-coherent array (32-byte stride for DSA).

    With a supervisor SVA bond (``iommu.pasid_api=kernel-sva``) the device reaches
    them through ``init_mm``, so descriptors carry their kernel virtual address.
    5.15 put the DMA address there, which is one reason its sysfs refused a
    dmaengine WQ while the system PASID was on."""
    idxd = wq.idxd
    wq.num_descs = wq.size if wq.dedicated else wq.threshold
    shadow = kzalloc(64 * wq.num_descs, GFP_KERNEL)
    if shadow is None:
        raise ENOMEM(f"{wq.name_dev}: descriptors")
    size = wq.num_descs * DSA_COMP_RECORD_SIZE
    vaddr, dma = dma_alloc_coherent(idxd.pdev, size, GFP_KERNEL)
    if vaddr is None:
        kfree(shadow)
        raise ENOMEM(f"{wq.name_dev}: completion records")
    idxd.allocs.append(shadow)
    wq.compls_vaddr, wq.compls_dma, wq.compls_size = vaddr, dma, size
    seen = vaddr if idxd.sva is not None else dma
    wq.descs = [
        IdxdDesc(
            i,
            wq,
            vaddr + i * DSA_COMP_RECORD_SIZE,
            seen + i * DSA_COMP_RECORD_SIZE,
        )
        for i in range(wq.num_descs)
    ]
    wq.descs_shadow = shadow
    wq.free_descs = list(range(wq.num_descs))


def idxd_wq_free_resources(wq: IdxdWq) -> None:
    idxd = wq.idxd
    if wq.compls_vaddr is not None:
        dma_free_coherent(idxd.pdev, wq.compls_size, wq.compls_vaddr, wq.compls_dma)
        wq.compls_vaddr = None
    if wq.descs_shadow is not None:
        idxd.allocs.remove(wq.descs_shadow)
        kfree(wq.descs_shadow)
        wq.descs_shadow = None
    wq.descs = []
    wq.free_descs = []


def idxd_wq_map_portal(wq: IdxdWq) -> None:
    """``idxd_wq_map_portal``: the WQ's limited MSI-X portal page in BAR2."""
    start = pci_resource_start(wq.idxd.pdev, regs.IDXD_WQ_BAR)
    off = regs.idxd_get_wq_portal_full_offset(wq.id, regs.IDXD_PORTAL_LIMITED)
    wq.portal = ioremap(start + off, regs.IDXD_PORTAL_SIZE)
    wq.portal_offset = 0


def idxd_wq_unmap_portal(wq: IdxdWq) -> None:
    if wq.portal is not None:
        iounmap(wq.portal)
        wq.portal = None


# -- WQ enable / disable ------------------------------------------------------------


def idxd_drv_enable_wq(wq: IdxdWq) -> None:
    """``idxd_drv_enable_wq``: the checks Linux makes (each failure names the knob),
    WQCFG, Enable WQ, portal, interrupt, descriptors; unwinds on failure."""
    idxd = wq.idxd
    if idxd.state != IDXD_DEV_ENABLED:
        raise EIO(f"{wq.name_dev}: device {idxd.name} not enabled")
    if wq.state != IDXD_WQ_DISABLED:
        raise EBUSY(f"{wq.name_dev}: already enabled")
    if wq.group_id < 0:
        raise EINVAL(f"{wq.name_dev}.group_id: WQ not attached to a group")
    if not wq.name:
        raise EINVAL(f"{wq.name_dev}.name: WQ has no name")
    if wq.shared and not idxd.wq_shared_supported(wq):
        raise EOPNOTSUPP(f"{wq.name_dev}.mode: shared WQ needs PASID (no system PASID)")
    if wq.shared and wq.threshold == 0:
        raise EINVAL(f"{wq.name_dev}.threshold: shared WQ needs a threshold")
    idxd_wq_config_write(wq)
    idxd_wq_enable(wq)
    try:
        idxd_wq_map_portal(wq)
        try:
            if wq.type == IDXD_WQT_KERNEL:
                idxd_wq_request_irq(wq)
                try:
                    idxd_wq_alloc_resources(wq)
                except KernelError:
                    idxd_wq_free_irq(wq)
                    raise
        except KernelError:
            idxd_wq_unmap_portal(wq)
            raise
    except KernelError:
        idxd_wq_reset(wq)
        raise
    wq.state = IDXD_WQ_ENABLED
    dev_info(idxd.pdev, f"{wq.name_dev}: enabled ({'dedicated' if wq.dedicated else 'shared'})")


def idxd_drv_disable_wq(wq: IdxdWq) -> None:
    """``idxd_drv_disable_wq``: unmap the portal, drain, complete what finished,
    free the interrupt (aborting the rest), reset the WQ, free the descriptors."""
    from drivers.idxd.irq import idxd_wq_process_completions

    if wq.state != IDXD_WQ_ENABLED:
        return
    idxd = wq.idxd
    idxd_wq_unmap_portal(wq)
    if idxd_is_enabled(idxd):
        idxd_wq_drain(wq)
    idxd_wq_process_completions(wq)
    idxd_wq_free_irq(wq)
    if idxd_is_enabled(idxd):
        idxd_wq_reset(wq)
    idxd_wq_free_resources(wq)
    wq.state = IDXD_WQ_DISABLED
    dev_info(idxd.pdev, f"{wq.name_dev}: disabled")


def idxd_abort_descs(wq: IdxdWq) -> None:
    """Complete every in-use slot of ``wq`` as aborted (the hardware dropped it)."""
    from drivers.idxd.irq import idxd_desc_complete

    for desc in wq.descs:
        if desc.in_use:
            idxd_desc_complete(desc, IDXD_COMPLETE_ABORT)
