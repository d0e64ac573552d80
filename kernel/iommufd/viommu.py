"""drivers/iommu/iommufd/viommu.c (Linux 6.13, newer than the 6.12 baseline): the
vIOMMU and vDEVICE objects, selected at boot with ``iommufd.viommu=on``.

A vIOMMU (``struct iommufd_viommu``) is the VMM's handle on one physical IOMMU
instance for one VM: it holds a NEST_PARENT paging HWPT (the VM's stage 2, which
cannot be destroyed under it: EBUSY) and the driver's per-VM state (on SMMUv3 the
VMID). Nested HWPTs are allocated on it (``IOMMU_HWPT_ALLOC`` with the vIOMMU as
``pt_id``) and the guest's invalidation commands go to it (``IOMMU_HWPT_INVALIDATE``
with the vIOMMU as ``hwpt_id``). A vDEVICE (``struct iommufd_vdevice``) ties a bound
device to its virtual ID in that VM (on SMMUv3 the guest's StreamID), so commands
naming the virtual ID reach the physical one; it holds the vIOMMU (EBUSY).

``IOMMU_VIOMMU_ALLOC``: flags or the DEFAULT type are EOPNOTSUPP; a driver without
``viommu_alloc`` (VT-d in 6.13) EOPNOTSUPP; ``hwpt_id`` must name a paging HWPT
(ENOENT) allocated as NEST_PARENT (EINVAL). ``IOMMU_VDEVICE_ALLOC``: the device must
sit behind the vIOMMU's IOMMU instance (EINVAL); a virtual ID already taken on
that vIOMMU is EEXIST; an ID above ``ULONG_MAX`` cannot happen with a ``u64``.

With ``iommufd.viommu=off`` (the default) neither command exists (ENOTTY, as 6.12)
and IOMMU_HWPT_INVALIDATE keeps 6.12's rules (:mod:`kernel.iommufd.hw_pagetable`).

Departures: one thread, so no xarray lock; the vDEVICE keeps the device (as 6.13's
``get_device``) but, as in 6.13, not its binding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from attrs import define, field

from kernel.context import current
from kernel.device import Device
from kernel.errno import EEXIST, EINVAL, EOPNOTSUPP, KernelError
from kernel.init import initcall
from kernel.iommu.iommu import dev_iommu_ops
from kernel.iommu.iommu_h import IommuDevice, IommuDomain, has_optional_op
from kernel.iommufd.main import (
    IommufdCtx,
    IommufdIoctlOp,
    IommufdObject,
    IommufdObjectType,
    IommufdUcmd,
    iommufd_get_object,
    iommufd_object_abort_and_destroy,
    iommufd_object_alloc,
    iommufd_object_finalize,
    iommufd_put_object,
    iommufd_ucmd_respond,
)
from kernel.iommufd.user import IommuUserData, IommuUserDataArray
from kernel.module import InitLevel
from kernel.params import Param, parse_bool
from kernel.printk import pr_info
from kernel.uapi import iommufd as uapi

if TYPE_CHECKING:
    from kernel.boot import Kernel
    from kernel.iommufd.hw_pagetable import IommufdHwptPaging

IOMMUFD_OBJ_VIOMMU = IommufdObjectType.IOMMUFD_OBJ_VIOMMU
IOMMUFD_OBJ_VDEVICE = IommufdObjectType.IOMMUFD_OBJ_VDEVICE

_SUBSYS_KEY = "iommufd_viommu"


def _teardown(k: Kernel) -> None:
    k.subsys.pop(_SUBSYS_KEY, None)


@initcall(InitLevel.SUBSYS, "iommufd_viommu_init", _teardown)
def iommufd_viommu_init(k: Kernel) -> None:
    """Registers ``iommufd.viommu=on|off`` (default off: 6.12) and records it."""
    param = k.cmdline.register(
        Param("iommufd.viommu", False, parse_bool, "6.13 vIOMMU objects and SMMUv3 nesting")
    )
    k.subsys[_SUBSYS_KEY] = bool(param.value)
    if param.value:
        pr_info("iommufd: vIOMMU objects (6.13) enabled")


def iommufd_viommu_enabled() -> bool:
    """Whether the running kernel booted with ``iommufd.viommu=on``."""
    return bool(current.kernel.subsys.get(_SUBSYS_KEY, False))


def iommufd_viommu_ioctl_ops() -> dict[int, IommufdIoctlOp]:
    """The ``iommufd_ioctl_ops[]`` entries 6.13 added, by ``_IOC_NR(cmd) -
    IOMMUFD_CMD_BASE``; empty unless this boot has ``iommufd.viommu=on``."""
    if not iommufd_viommu_enabled():
        return {}
    out: dict[int, IommufdIoctlOp] = {}
    for num, st, last, fn in (
        (uapi.IOMMU_VIOMMU_ALLOC, uapi.iommu_viommu_alloc, "out_viommu_id", alloc_ioctl),
        (uapi.IOMMU_VDEVICE_ALLOC, uapi.iommu_vdevice_alloc, "virt_id", vdevice_ioctl),
    ):
        out[uapi._IOC_NR(num) - uapi.IOMMUFD_CMD_BASE] = IommufdIoctlOp(
            st, st.offsetofend(last), num, fn
        )
    return out


# --------------------------------------------------------------------------- objects


class IommufdViommuOps(Protocol):
    """``struct iommufd_viommu_ops`` (the two members 6.13's SMMUv3 fills)."""

    def alloc_domain_nested(
        self, viommu: IommufdViommu, flags: int, user_data: IommuUserData
    ) -> IommuDomain: ...

    def cache_invalidate(self, viommu: IommufdViommu, array: IommuUserDataArray) -> None: ...


@define(eq=False)
class IommufdViommu(IommufdObject):
    """``struct iommufd_viommu``; a driver's vIOMMU subclasses it (``arm_vsmmu``
    embeds it as ``core``)."""

    hwpt: IommufdHwptPaging | None = field(default=None, repr=False)
    ops: IommufdViommuOps | None = field(default=None, repr=False)
    viommu_type: int = 0
    iommu_dev: IommuDevice | None = field(default=None, repr=False)
    vdevs: dict[int, IommufdVdevice] = field(factory=dict, repr=False)

    def destroy(self) -> None:
        """``iommufd_viommu_destroy``: drop the parent HWPT."""
        if self.hwpt is not None:
            self.hwpt.users -= 1
            self.hwpt = None
        self.vdevs.clear()


@define(eq=False)
class IommufdVdevice(IommufdObject):
    """``struct iommufd_vdevice``: ``virt_id`` of ``dev`` on ``viommu``."""

    viommu: IommufdViommu | None = field(default=None, repr=False)
    dev: Device | None = field(default=None, repr=False)
    virt_id: int = 0

    def destroy(self) -> None:
        """``iommufd_vdevice_destroy``: out of the vIOMMU's table, drop the vIOMMU."""
        viommu = self.viommu
        if viommu is None:
            return
        if viommu.vdevs.get(self.virt_id) is self:
            del viommu.vdevs[self.virt_id]
        viommu.users -= 1
        self.viommu = None
        self.dev = None


V = TypeVar("V", bound=IommufdViommu)


def iommufd_viommu_alloc(ictx: IommufdCtx, make: Callable[[], V], ops: IommufdViommuOps) -> V:
    """``iommufd_viommu_alloc``: the driver's vIOMMU object (id reserved, not yet
    findable) with its ops."""
    viommu = iommufd_object_alloc(ictx, make)
    viommu.ops = ops
    return viommu


def iommufd_viommu_find_dev(viommu: IommufdViommu, vdev_id: int) -> Device | None:
    """``iommufd_viommu_find_dev``: the device a vDEVICE of ``viommu`` gives
    virtual ID ``vdev_id``, or None."""
    vdev = viommu.vdevs.get(vdev_id)
    return vdev.dev if vdev is not None else None


class SupportsViommuAlloc(Protocol):
    def viommu_alloc(
        self, dev: Device, parent: IommuDomain, ictx: IommufdCtx, viommu_type: int
    ) -> IommufdViommu: ...


def iommufd_get_viommu(ictx: IommufdCtx, oid: int) -> IommufdViommu:
    """``iommufd_get_viommu``: a reference to vIOMMU ``oid`` or ENOENT."""
    obj = iommufd_get_object(ictx, oid, IOMMUFD_OBJ_VIOMMU)
    assert isinstance(obj, IommufdViommu)
    return obj


def _iommu_dev(dev: Device) -> IommuDevice | None:
    """``__iommu_get_iommu_dev``."""
    return dev.iommu.iommu_dev if dev.iommu is not None else None


# --------------------------------------------------------------------------- ioctls


def alloc_ioctl(ucmd: IommufdUcmd) -> None:
    """``iommufd_viommu_alloc_ioctl`` (IOMMU_VIOMMU_ALLOC)."""
    from kernel.iommufd.device import iommufd_get_device
    from kernel.iommufd.hw_pagetable import iommufd_get_hwpt_paging

    cmd: uapi.iommu_viommu_alloc = ucmd.cmd
    ictx = ucmd.ictx
    if cmd.flags or cmd.type == uapi.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise EOPNOTSUPP(f"viommu flags {cmd.flags:#x} or type {cmd.type}")
    idev = iommufd_get_device(ictx, cmd.dev_id)
    try:
        ops = dev_iommu_ops(idev.device)
        if not has_optional_op(ops, "viommu_alloc"):
            raise EOPNOTSUPP(f"{type(ops).__name__} has no viommu_alloc")
        hwpt = iommufd_get_hwpt_paging(ictx, cmd.hwpt_id)
        try:
            if not hwpt.nest_parent:
                raise EINVAL(f"HWPT {cmd.hwpt_id} was not allocated as a nest parent")
            assert hwpt.domain is not None
            viommu = cast(SupportsViommuAlloc, ops).viommu_alloc(
                idev.device, hwpt.domain, ictx, cmd.type
            )
            viommu.viommu_type = cmd.type
            viommu.hwpt = hwpt
            hwpt.users += 1
            viommu.iommu_dev = _iommu_dev(idev.device)
            cmd.out_viommu_id = viommu.id
            try:
                iommufd_ucmd_respond(ucmd, uapi.iommu_viommu_alloc.SIZE)
            except KernelError:  # the user's struct is not writable (EFAULT)
                iommufd_object_abort_and_destroy(ictx, viommu)
                raise
            iommufd_object_finalize(ictx, viommu)
        finally:
            iommufd_put_object(ictx, hwpt)
    finally:
        iommufd_put_object(ictx, idev)


def vdevice_ioctl(ucmd: IommufdUcmd) -> None:
    """``iommufd_vdevice_alloc_ioctl`` (IOMMU_VDEVICE_ALLOC)."""
    from kernel.iommufd.device import iommufd_get_device

    cmd: uapi.iommu_vdevice_alloc = ucmd.cmd
    ictx = ucmd.ictx
    viommu = iommufd_get_viommu(ictx, cmd.viommu_id)
    try:
        idev = iommufd_get_device(ictx, cmd.dev_id)
        try:
            if viommu.iommu_dev is not _iommu_dev(idev.device):
                raise EINVAL(f"device {cmd.dev_id} is behind another IOMMU than the vIOMMU")
            vdev = iommufd_object_alloc(ictx, lambda: IommufdVdevice(ictx, IOMMUFD_OBJ_VDEVICE))
            vdev.virt_id = cmd.virt_id
            vdev.dev = idev.device
            vdev.viommu = viommu
            viommu.users += 1
            try:
                if cmd.virt_id in viommu.vdevs:
                    raise EEXIST(f"virtual ID {cmd.virt_id:#x} is taken on the vIOMMU")
                viommu.vdevs[cmd.virt_id] = vdev
                cmd.out_vdevice_id = vdev.id
                iommufd_ucmd_respond(ucmd, uapi.iommu_vdevice_alloc.SIZE)
            except KernelError:
                iommufd_object_abort_and_destroy(ictx, vdev)
                raise
            iommufd_object_finalize(ictx, vdev)
        finally:
            iommufd_put_object(ictx, idev)
    finally:
        iommufd_put_object(ictx, viommu)


def iommufd_viommu_alloc_hwpt_nested(
    viommu: IommufdViommu, flags: int, user_data: IommuUserData
) -> Any:
    """``iommufd_viommu_alloc_hwpt_nested``: only FAULT_ID_VALID (EOPNOTSUPP), vendor
    data required (EOPNOTSUPP), the vIOMMU's ``alloc_domain_nested`` (EOPNOTSUPP
    without); the HWPT holds the vIOMMU, its parent is the vIOMMU's HWPT (held by
    the vIOMMU). Not finalized: the caller does that."""
    from kernel.iommufd.hw_pagetable import IommufdHwptNested
    from kernel.iommufd.main import IOMMUFD_OBJ_HWPT_NESTED

    if flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID:
        raise EOPNOTSUPP(f"nested HWPT flags {flags:#x}")
    if not user_data.len:
        raise EOPNOTSUPP("a nested HWPT needs vendor data")
    if viommu.ops is None or not has_optional_op(viommu.ops, "alloc_domain_nested"):
        raise EOPNOTSUPP("the vIOMMU cannot allocate nested domains")
    ictx = viommu.ictx
    hwpt = iommufd_object_alloc(ictx, lambda: IommufdHwptNested(ictx, IOMMUFD_OBJ_HWPT_NESTED))
    hwpt.viommu = viommu
    viommu.users += 1
    hwpt.parent = viommu.hwpt
    try:
        hwpt.domain = viommu.ops.alloc_domain_nested(
            viommu, flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID, user_data
        )
        assert viommu.iommu_dev is not None
        hwpt.domain.owner = viommu.iommu_dev.ops
    except KernelError:
        iommufd_object_abort_and_destroy(ictx, hwpt)
        raise
    return hwpt


def iommufd_viommu_invalidate(viommu: IommufdViommu, array: IommuUserDataArray) -> None:
    """The vIOMMU half of 6.13's ``iommufd_hwpt_invalidate``: its ``cache_invalidate``
    (EOPNOTSUPP without); ``array.entry_num`` ends as the entries handled."""
    if viommu.ops is None or not has_optional_op(viommu.ops, "cache_invalidate"):
        array.entry_num = 0
        raise EOPNOTSUPP("the vIOMMU takes no invalidations")
    viommu.ops.cache_invalidate(viommu, array)
