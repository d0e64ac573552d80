"""drivers/iommu/iommufd/hw_pagetable.c (Linux 6.12): HWPT objects (an IOMMU domain
user space holds by id) and IOMMU_HWPT_ALLOC; IOMMU_GET_HW_INFO, which lives in
device.c upstream, is here beside the vendor data it returns.

A paging HWPT (``struct iommufd_hwpt_paging``) wraps a paging domain allocated for
a bound device and filled with every mapping of its IOAS (it holds the IOAS: the
IOAS cannot be destroyed under it). HWPTs that attach made on their own for an
IOAS are *auto domains*, destroyed with their last device.

Vendor ops, as 6.12 calls them (optional ``iommu_ops`` members): ``hw_info(dev)
-> (bytes, type)`` and ``domain_alloc_user(dev, flags, parent, user_data)``. A
driver without ``domain_alloc_user`` gets a plain paging domain, and any
allocation flag is then EOPNOTSUPP, as upstream. (6.13 renamed the paging half
``domain_alloc_paging_flags``.)

Dirty tracking: a HWPT allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING gets the
vendor's dirty ops; IOMMU_HWPT_SET_DIRTY_TRACKING turns tracking on (after clearing
stale dirty bits) or off, IOMMU_HWPT_GET_DIRTY_BITMAP reports (and clears, unless
NO_CLEAR) the dirty pages of a range into the user's bitmap. A HWPT without dirty
ops is EOPNOTSUPP.

Nested HWPTs (``struct iommufd_hwpt_nested``): IOMMU_HWPT_ALLOC with a paging
HWPT allocated as NEST_PARENT for ``pt_id`` and the vendor's stage-1 data makes a
domain of type IOMMU_DOMAIN_NESTED through the vendor's ``domain_alloc_user`` with
the parent domain (6.13 renamed it ``domain_alloc_nested``). The nested HWPT holds
its parent (which cannot be destroyed under it); attaching it enforces the device's
reserved regions in the parent's IOAS (``find_hwpt_paging``). IOMMU_HWPT_INVALIDATE
hands the user's array of vendor invalidation entries to the domain's
``cache_invalidate_user`` and reports back how many were handled in ``entry_num``,
on failure too.

Under ``iommufd.viommu=on`` (Linux 6.13, newer than the 6.12 baseline): ``pt_id`` may
name a vIOMMU (:mod:`kernel.iommufd.viommu`; a device behind another IOMMU is EINVAL),
whose ``alloc_domain_nested`` makes the nested domain, and IOMMU_HWPT_INVALIDATE takes
a nested HWPT or a vIOMMU for ``hwpt_id`` (another object is EINVAL, 6.12: ENOENT; a
target without an invalidation op EOPNOTSUPP).

Fault queue: with IOMMU_HWPT_FAULT_ID_VALID the HWPT holds the fault object
``fault_id`` (ENOENT if that is not one) and its domain's page requests go there
(``kernel.iommufd.fault``), paging and nested alike (the C struct's common ``fault``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

from attrs import define, field

from kernel.device import Device
from kernel.errno import EINVAL, EOPNOTSUPP, KernelError
from kernel.iommu.iommu import dev_iommu_ops, iommu_domain_free, iommu_paging_domain_alloc
from kernel.iommu.iommu_h import (
    IOMMU_CAP_DIRTY_TRACKING,
    IOMMU_DOMAIN_NESTED,
    IommuDomain,
    has_optional_op,
)
from kernel.iommufd import user
from kernel.iommufd.io_pagetable import (
    iopt_read_and_clear_dirty_data,
    iopt_set_dirty_tracking,
    iopt_table_add_domain,
    iopt_table_remove_domain,
)
from kernel.iommufd.iova_bitmap import IOMMU_DIRTY_NO_CLEAR, IovaBitmap
from kernel.iommufd.main import (
    IOMMUFD_OBJ_ANY,
    IOMMUFD_OBJ_HWPT_NESTED,
    IOMMUFD_OBJ_HWPT_PAGING,
    IommufdCtx,
    IommufdObject,
    IommufdUcmd,
    iommufd_get_object,
    iommufd_object_abort_and_destroy,
    iommufd_object_alloc,
    iommufd_object_finalize,
    iommufd_put_object,
    iommufd_ucmd_respond,
)
from kernel.iommufd.user import IommuUserData, IommuUserDataArray
from kernel.pci import (
    PCI_PASID_CTRL,
    PCI_PASID_CTRL_ENABLE,
    PciDev,
    dev_is_pci,
    pci_read_config_word,
    to_pci_dev,
)
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from kernel.iommufd.device import IommufdDevice
    from kernel.iommufd.fault import IommufdFault
    from kernel.iommufd.ioas import IommufdIoas
    from kernel.iommufd.viommu import IommufdViommu

HWPT_PAGING_FLAGS = (
    uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
    | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
    | uapi.IOMMU_HWPT_FAULT_ID_VALID
    | uapi.IOMMU_HWPT_ALLOC_PASID
)
"""Flags a paging HWPT accepts: 6.12's three and 6.15's PASID (see
``kernel.uapi.iommufd.IOMMU_HWPT_ALLOC_PASID``)."""


class SupportsHwInfo(Protocol):
    def hw_info(self, dev: Device) -> tuple[bytes, int]: ...


class SupportsDomainAllocUser(Protocol):
    def domain_alloc_user(
        self, dev: Device, flags: int, parent: IommuDomain | None, user_data: Any
    ) -> IommuDomain: ...


class SupportsCacheInvalidateUser(Protocol):
    def cache_invalidate_user(self, domain: IommuDomain, array: IommuUserDataArray) -> None: ...


@define(eq=False)
class IommufdHwptPaging(IommufdObject):
    """``struct iommufd_hwpt_paging``."""

    domain: IommuDomain | None = field(default=None, repr=False)
    ioas: IommufdIoas | None = field(default=None, repr=False)
    auto_domain: bool = False
    nest_parent: bool = False
    pasid_compat: bool = False
    """Allocated with IOMMU_HWPT_ALLOC_PASID (6.15): may be attached to a PASID."""
    in_iopt: bool = False
    fault: IommufdFault | None = field(default=None, repr=False)
    """The fault queue of an IOPF-capable HWPT (IOMMU_HWPT_FAULT_ID_VALID), held."""

    def destroy(self) -> None:
        """``iommufd_hwpt_paging_destroy``: out of the IOAS (unmapping it), free the
        domain, drop the IOAS."""
        ioas = self.ioas
        if ioas is not None:
            if self.in_iopt and self.domain is not None:
                ioas.hwpt_list.remove(self)
                iopt_table_remove_domain(ioas.iopt, self.domain)
                self.in_iopt = False
            ioas.users -= 1
            self.ioas = None
        if self.domain is not None:
            iommu_domain_free(self.domain)
            self.domain = None
        if self.fault is not None:
            self.fault.users -= 1
            self.fault = None


@define(eq=False)
class IommufdHwptNested(IommufdObject):
    """``struct iommufd_hwpt_nested``: a vendor stage-1 domain over its parent's."""

    domain: IommuDomain | None = field(default=None, repr=False)
    parent: IommufdHwptPaging | None = field(default=None, repr=False)
    auto_domain: bool = False
    fault: IommufdFault | None = field(default=None, repr=False)
    """The fault queue of an IOPF-capable HWPT (IOMMU_HWPT_FAULT_ID_VALID), held."""
    viommu: IommufdViommu | None = field(default=None, repr=False)
    """The vIOMMU it was allocated on (6.13): held instead of the parent, which the
    vIOMMU holds."""

    @property
    def ioas(self) -> IommufdIoas | None:
        """The parent's IOAS (``find_hwpt_paging(hwpt)->ioas``): where a device's
        reserved regions go when it attaches to this HWPT."""
        return self.parent.ioas if self.parent is not None else None

    def destroy(self) -> None:
        """``iommufd_hwpt_nested_destroy``: free the domain, drop the parent."""
        if self.domain is not None:
            iommu_domain_free(self.domain)
            self.domain = None
        if self.viommu is not None:
            self.viommu.users -= 1
            self.viommu = None
        elif self.parent is not None:
            self.parent.users -= 1
        self.parent = None
        if self.fault is not None:
            self.fault.users -= 1
            self.fault = None


IommufdHwPagetable = IommufdHwptPaging | IommufdHwptNested
"""``struct iommufd_hw_pagetable``: what a device attaches to."""


PCI_PASID_CTRL_EXEC = 0x02
PCI_PASID_CTRL_PRIV = 0x04


def pci_pasid_status(pdev: PciDev) -> int:
    """``pci_pasid_status``: the enabled PASID features (EXEC/PRIV bits of the PASID
    control register), 0 when PASID is off or absent."""
    if not pdev.pasid_cap:
        return 0
    ctrl = pci_read_config_word(pdev, pdev.pasid_cap + PCI_PASID_CTRL)
    return ctrl & (PCI_PASID_CTRL_EXEC | PCI_PASID_CTRL_PRIV) if ctrl & PCI_PASID_CTRL_ENABLE else 0


def device_iommu_capable(dev: Device, cap: int) -> bool:
    """``device_iommu_capable``."""
    return dev.iommu is not None and dev_iommu_ops(dev).capable(dev, cap)


def iommufd_hwpt_paging_alloc(
    ictx: IommufdCtx,
    ioas: IommufdIoas,
    idev: IommufdDevice,
    flags: int,
    immediate_attach: bool,
    user_data: bytes | None,
) -> IommufdHwptPaging:
    """``iommufd_hwpt_paging_alloc``: a paging domain for ``idev`` holding every
    mapping of ``ioas``; attached to ``idev`` first when ``immediate_attach`` (the
    auto-domain path, so the device's reserved regions are enforced before the
    mappings are copied in). Not finalized: the caller does that."""
    from kernel.iommufd.device import iommufd_hw_pagetable_attach, iommufd_hw_pagetable_detach

    if flags & ~HWPT_PAGING_FLAGS:
        raise EOPNOTSUPP(f"HWPT flags {flags:#x}")
    dev = idev.device
    if flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not device_iommu_capable(
        dev, IOMMU_CAP_DIRTY_TRACKING
    ):
        raise EOPNOTSUPP("the IOMMU cannot track dirty pages")
    if flags & uapi.IOMMU_HWPT_FAULT_ID_VALID and flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT:
        raise EOPNOTSUPP("a nest parent cannot take faults")
    ops = dev_iommu_ops(dev)
    vendor_flags = flags & ~(uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID)
    if (vendor_flags or user_data) and not has_optional_op(ops, "domain_alloc_user"):
        raise EOPNOTSUPP(f"{type(ops).__name__} has no domain_alloc_user")
    hwpt = iommufd_object_alloc(ictx, lambda: IommufdHwptPaging(ictx, IOMMUFD_OBJ_HWPT_PAGING))
    ioas.users += 1
    hwpt.ioas = ioas
    hwpt.nest_parent = bool(flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    hwpt.pasid_compat = bool(flags & uapi.IOMMU_HWPT_ALLOC_PASID)
    attached = False
    try:
        if has_optional_op(ops, "domain_alloc_user"):
            hwpt.domain = cast(SupportsDomainAllocUser, ops).domain_alloc_user(
                dev, vendor_flags, None, user_data
            )
        else:
            hwpt.domain = iommu_paging_domain_alloc(dev)
        hwpt.domain.owner = ops
        if immediate_attach:
            iommufd_hw_pagetable_attach(hwpt, idev)
            attached = True
        iopt_table_add_domain(ioas.iopt, hwpt.domain)
    except KernelError:
        if attached:
            iommufd_hw_pagetable_detach(idev)
        iommufd_object_abort_and_destroy(ictx, hwpt)
        raise
    hwpt.in_iopt = True
    ioas.hwpt_list.append(hwpt)
    return hwpt


def iommufd_hwpt_nested_alloc(
    ictx: IommufdCtx,
    parent: IommufdHwptPaging,
    idev: IommufdDevice,
    flags: int,
    user_data: IommuUserData,
) -> IommufdHwptNested:
    """``iommufd_hwpt_nested_alloc``: only FAULT_ID_VALID, stage-1 data required, a
    vendor that nests (EOPNOTSUPP); a parent allocated as NEST_PARENT by the same
    driver (EINVAL). The vendor must return an IOMMU_DOMAIN_NESTED domain. Not
    finalized: the caller does that."""
    if flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID:
        raise EOPNOTSUPP(f"nested HWPT flags {flags:#x}")
    if not user_data.len:
        raise EOPNOTSUPP("a nested HWPT needs stage-1 data")
    ops = dev_iommu_ops(idev.device)
    if not has_optional_op(ops, "domain_alloc_user"):
        raise EOPNOTSUPP(f"{type(ops).__name__} cannot nest")
    assert parent.domain is not None
    if parent.auto_domain or not parent.nest_parent or parent.domain.owner is not ops:
        raise EINVAL("the parent HWPT was not allocated as a nest parent")
    hwpt = iommufd_object_alloc(ictx, lambda: IommufdHwptNested(ictx, IOMMUFD_OBJ_HWPT_NESTED))
    parent.users += 1
    hwpt.parent = parent
    try:
        hwpt.domain = cast(SupportsDomainAllocUser, ops).domain_alloc_user(
            idev.device, flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID, parent.domain, user_data
        )
        hwpt.domain.owner = ops
        if hwpt.domain.type != IOMMU_DOMAIN_NESTED or not has_optional_op(
            hwpt.domain.ops, "cache_invalidate_user"
        ):
            raise EINVAL(f"{type(ops).__name__} returned a domain that is not nested")
    except KernelError:
        iommufd_object_abort_and_destroy(ictx, hwpt)
        raise
    return hwpt


def iommufd_hwpt_alloc(ucmd: IommufdUcmd) -> None:
    """``iommufd_hwpt_alloc`` (IOMMU_HWPT_ALLOC)."""
    from kernel.iommufd import viommu
    from kernel.iommufd.device import iommufd_get_device
    from kernel.iommufd.fault import iommufd_hwpt_set_fault
    from kernel.iommufd.ioas import IommufdIoas

    cmd: uapi.iommu_hwpt_alloc = ucmd.cmd
    ictx = ucmd.ictx
    if cmd.reserved:
        raise EOPNOTSUPP("hwpt_alloc.__reserved is not zero")
    if (cmd.data_type == uapi.IOMMU_HWPT_DATA_NONE and cmd.data_len) or (
        cmd.data_type != uapi.IOMMU_HWPT_DATA_NONE and not cmd.data_len
    ):
        raise EINVAL("data_type and data_len disagree")
    idev = iommufd_get_device(ictx, cmd.dev_id)
    try:
        pt_obj = iommufd_get_object(ictx, cmd.pt_id, IOMMUFD_OBJ_ANY)
        try:
            user_data = user.copy_from_user(cmd.data_uptr, cmd.data_len) if cmd.data_len else None
            hwpt: IommufdHwPagetable
            if isinstance(pt_obj, IommufdIoas):
                hwpt = iommufd_hwpt_paging_alloc(ictx, pt_obj, idev, cmd.flags, False, user_data)
            elif isinstance(pt_obj, IommufdHwptPaging):
                data = IommuUserData(cmd.data_type, cmd.data_uptr, cmd.data_len)
                hwpt = iommufd_hwpt_nested_alloc(ictx, pt_obj, idev, cmd.flags, data)
            elif isinstance(pt_obj, viommu.IommufdViommu):
                if pt_obj.iommu_dev is not (idev.device.iommu and idev.device.iommu.iommu_dev):
                    raise EINVAL(f"device {cmd.dev_id} is behind another IOMMU than the vIOMMU")
                data = IommuUserData(cmd.data_type, cmd.data_uptr, cmd.data_len)
                hwpt = viommu.iommufd_viommu_alloc_hwpt_nested(pt_obj, cmd.flags, data)
            else:
                raise EINVAL(f"object {cmd.pt_id} is neither an IOAS nor a paging HWPT")
            if cmd.flags & uapi.IOMMU_HWPT_FAULT_ID_VALID:
                try:
                    iommufd_hwpt_set_fault(hwpt, ictx, cmd.fault_id)
                except KernelError:
                    iommufd_object_abort_and_destroy(ictx, hwpt)
                    raise
            cmd.out_hwpt_id = hwpt.id
            try:
                iommufd_ucmd_respond(ucmd, uapi.iommu_hwpt_alloc.SIZE)
            except KernelError:
                iommufd_object_abort_and_destroy(ictx, hwpt)
                raise
            iommufd_object_finalize(ictx, hwpt)
        finally:
            iommufd_put_object(ictx, pt_obj)
    finally:
        iommufd_put_object(ictx, idev)


def iommufd_get_hw_info(ucmd: IommufdUcmd) -> None:
    """``iommufd_get_hw_info`` (IOMMU_GET_HW_INFO): the vendor's data copied to the
    user's buffer (cut to ``data_len``, the rest of the buffer zeroed; ``data_len``
    returns the full length), its type, the capabilities and the PASID width."""
    from kernel.iommufd.device import iommufd_get_device

    cmd: uapi.iommu_hw_info = ucmd.cmd
    if cmd.flags or any(cmd.reserved):
        raise EOPNOTSUPP("hw_info flags or __reserved not zero")
    idev = iommufd_get_device(ucmd.ictx, cmd.dev_id)
    try:
        dev = idev.device
        ops = dev_iommu_ops(dev)
        if has_optional_op(ops, "hw_info"):
            data, cmd.out_data_type = cast(SupportsHwInfo, ops).hw_info(dev)
        else:
            data, cmd.out_data_type = b"", uapi.IOMMU_HW_INFO_TYPE_NONE
        copy_len = min(cmd.data_len, len(data))
        user.copy_to_user(cmd.data_uptr, data[:copy_len])
        if copy_len < cmd.data_len:
            user.clear_user(cmd.data_uptr + copy_len, cmd.data_len - copy_len)
        cmd.data_len = len(data)
        cmd.out_capabilities = 0
        if device_iommu_capable(dev, IOMMU_CAP_DIRTY_TRACKING):
            cmd.out_capabilities |= uapi.IOMMU_HW_CAP_DIRTY_TRACKING
        cmd.out_max_pasid_log2 = 0
        assert dev.iommu is not None
        if dev.iommu.max_pasids:
            cmd.out_max_pasid_log2 = dev.iommu.max_pasids.bit_length() - 1
            if dev_is_pci(dev):
                ctrl = pci_pasid_status(to_pci_dev(dev))
                if ctrl & PCI_PASID_CTRL_EXEC:
                    cmd.out_capabilities |= uapi.IOMMU_HW_CAP_PCI_PASID_EXEC
                if ctrl & PCI_PASID_CTRL_PRIV:
                    cmd.out_capabilities |= uapi.IOMMU_HW_CAP_PCI_PASID_PRIV
        iommufd_ucmd_respond(ucmd, uapi.iommu_hw_info.SIZE)
    finally:
        iommufd_put_object(ucmd.ictx, idev)


def iommufd_get_hwpt_paging(ictx: IommufdCtx, oid: int) -> IommufdHwptPaging:
    """``iommufd_get_hwpt_paging``: a reference to paging HWPT ``oid`` or ENOENT."""
    obj = iommufd_get_object(ictx, oid, IOMMUFD_OBJ_HWPT_PAGING)
    assert isinstance(obj, IommufdHwptPaging)
    return obj


def iommufd_hwpt_set_dirty_tracking(ucmd: IommufdUcmd) -> None:
    """``iommufd_hwpt_set_dirty_tracking`` (IOMMU_HWPT_SET_DIRTY_TRACKING)."""
    cmd: uapi.iommu_hwpt_set_dirty_tracking = ucmd.cmd
    if cmd.flags & ~uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE or cmd.reserved:
        raise EOPNOTSUPP(f"set_dirty_tracking flags {cmd.flags:#x}")
    hwpt = iommufd_get_hwpt_paging(ucmd.ictx, cmd.hwpt_id)
    try:
        assert hwpt.ioas is not None and hwpt.domain is not None
        enable = bool(cmd.flags & uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
        iopt_set_dirty_tracking(hwpt.ioas.iopt, hwpt.domain, enable)
    finally:
        iommufd_put_object(ucmd.ictx, hwpt)


def iommufd_hwpt_get_dirty_bitmap(ucmd: IommufdUcmd) -> None:
    """``iommufd_hwpt_get_dirty_bitmap`` (IOMMU_HWPT_GET_DIRTY_BITMAP)."""
    cmd: uapi.iommu_hwpt_get_dirty_bitmap = ucmd.cmd
    if cmd.flags & ~uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR or cmd.reserved:
        raise EOPNOTSUPP(f"get_dirty_bitmap flags {cmd.flags:#x}")
    hwpt = iommufd_get_hwpt_paging(ucmd.ictx, cmd.hwpt_id)
    try:
        assert hwpt.ioas is not None and hwpt.domain is not None
        bitmap = IovaBitmap(cmd.iova, cmd.length, cmd.page_size, cmd.data)
        flags = IOMMU_DIRTY_NO_CLEAR if cmd.flags & uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR else 0
        iopt_read_and_clear_dirty_data(hwpt.ioas.iopt, hwpt.domain, flags, bitmap)
    finally:
        iommufd_put_object(ucmd.ictx, hwpt)


def iommufd_hwpt_invalidate(ucmd: IommufdUcmd) -> None:
    """``iommufd_hwpt_invalidate`` (IOMMU_HWPT_INVALIDATE): the user's array of
    ``entry_num`` vendor entries of ``entry_len`` bytes at ``data_uptr`` to the
    nested HWPT's ``cache_invalidate_user``; ``entry_num`` comes back as the number
    of entries handled, also when one failed (its errno is the ioctl's)."""
    from kernel.iommufd import viommu

    cmd: uapi.iommu_hwpt_invalidate = ucmd.cmd
    done = 0
    try:
        if cmd.reserved:
            raise EOPNOTSUPP("hwpt_invalidate.__reserved is not zero")
        if cmd.entry_num and (not cmd.data_uptr or not cmd.entry_len):
            raise EINVAL("entries without a pointer or a length")
        array = IommuUserDataArray(cmd.data_type, cmd.data_uptr, cmd.entry_len, cmd.entry_num)
        if viommu.iommufd_viommu_enabled():
            # 6.13: the id names a nested HWPT or a vIOMMU; another object is EINVAL.
            obj = iommufd_get_object(ucmd.ictx, cmd.hwpt_id, IOMMUFD_OBJ_ANY)
        else:
            obj = iommufd_get_object(ucmd.ictx, cmd.hwpt_id, IOMMUFD_OBJ_HWPT_NESTED)
        try:
            try:
                if isinstance(obj, viommu.IommufdViommu):
                    viommu.iommufd_viommu_invalidate(obj, array)
                elif isinstance(obj, IommufdHwptNested):
                    assert obj.domain is not None
                    if not has_optional_op(obj.domain.ops, "cache_invalidate_user"):
                        array.entry_num = 0
                        raise EOPNOTSUPP("the nested domain takes no invalidations")
                    ops = cast(SupportsCacheInvalidateUser, obj.domain.ops)
                    ops.cache_invalidate_user(obj.domain, array)
                else:
                    array.entry_num = 0
                    raise EINVAL(f"object {cmd.hwpt_id} is neither a nested HWPT nor a vIOMMU")
            finally:
                done = array.entry_num
        finally:
            iommufd_put_object(ucmd.ictx, obj)
    finally:
        cmd.entry_num = done
        iommufd_ucmd_respond(ucmd, uapi.iommu_hwpt_invalidate.SIZE)
