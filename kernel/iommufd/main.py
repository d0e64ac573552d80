"""drivers/iommu/iommufd/main.c (Linux 6.12): the iommufd file, its object table and
the ioctl dispatcher.

:func:`iommufd_fops_open` returns an :class:`IommufdCtx` (``struct iommufd_ctx``, the
open ``/dev/iommu``). Its :meth:`IommufdCtx.ioctl` is ``ioctl(fd, cmd, arg)``: ``arg``
is a pointer into the calling task's memory (:mod:`kernel.iommufd.user`), the
return what the syscall returns: 0, or a negative errno. It reads ``size`` (the
first ``u32``: EFAULT if unreadable), refuses a size below the command's minimum
(``offsetofend`` of its last original member: EINVAL), accepts a longer struct
only when the extra bytes are zero (``copy_struct_from_user``: E2BIG), runs the
command and copies the (possibly updated) struct back, never more than the user's
``size``. An unknown command is ENOTTY (ENOIOCTLCMD as user space sees it); 6.13's
IOMMU_VIOMMU_ALLOC and IOMMU_VDEVICE_ALLOC exist only under ``iommufd.viommu=on``
(:func:`kernel.iommufd.viommu.iommufd_viommu_ioctl_ops`).

Objects (``struct iommufd_object``) live in :attr:`IommufdCtx.objects` (the xarray,
ids from 1). Allocation reserves the id and finalizes it only when the command
succeeded (``iommufd_object_alloc`` / ``_finalize`` / ``_abort_and_destroy``); a
reference held by another object (an HWPT on its IOAS, a device on its HWPT) is a
user count, and IOMMU_DESTROY of an object with users is EBUSY.

Fault injection: object allocation is a ``kmalloc`` point and the id reservation an
``xa_alloc`` point, as in C.

Departures: one thread, so the object table needs no lock and ``users`` is a plain
count (no ``shortterm_users`` wait).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define, field

from kernel.errno import (
    E2BIG,
    EBUSY,
    EINVAL,
    ENOENT,
    ENOMEM,
    ENOSPC,
    ENOTTY,
    EOPNOTSUPP,
    EPERM,
    KernelError,
)
from kernel.fault_inject import should_fail
from kernel.sched import CAP_SYS_RESOURCE, capable
from kernel.uapi import iommufd as uapi
from kernel.uapi.iommufd import UapiStruct

if TYPE_CHECKING:
    from kernel.iommufd.ioas import IommufdIoas

XA_LIMIT_31B = (1 << 31) - 1


class IommufdObjectType(enum.IntEnum):
    """``enum iommufd_object_type``."""

    IOMMUFD_OBJ_NONE = 0
    IOMMUFD_OBJ_ANY = 0
    IOMMUFD_OBJ_DEVICE = 1
    IOMMUFD_OBJ_HWPT_PAGING = 2
    IOMMUFD_OBJ_HWPT_NESTED = 3
    IOMMUFD_OBJ_IOAS = 4
    IOMMUFD_OBJ_ACCESS = 5
    IOMMUFD_OBJ_FAULT = 6
    IOMMUFD_OBJ_VIOMMU = 7
    """6.13 (``iommufd.viommu=on``)."""
    IOMMUFD_OBJ_VDEVICE = 8
    """6.13 (``iommufd.viommu=on``)."""


IOMMUFD_OBJ_ANY = IommufdObjectType.IOMMUFD_OBJ_ANY
IOMMUFD_OBJ_DEVICE = IommufdObjectType.IOMMUFD_OBJ_DEVICE
IOMMUFD_OBJ_HWPT_PAGING = IommufdObjectType.IOMMUFD_OBJ_HWPT_PAGING
IOMMUFD_OBJ_HWPT_NESTED = IommufdObjectType.IOMMUFD_OBJ_HWPT_NESTED
IOMMUFD_OBJ_IOAS = IommufdObjectType.IOMMUFD_OBJ_IOAS


@define(eq=False)
class IommufdObject(ABC):
    """``struct iommufd_object``: its table id and user count. Every object type
    implements :meth:`destroy` (the ``iommufd_object_ops`` destroy callback); the base
    cannot be instantiated."""

    ictx: IommufdCtx = field(repr=False)
    type: IommufdObjectType
    id: int = 0
    users: int = 1

    @abstractmethod
    def destroy(self) -> None:
        """Release what the object holds once its last user is gone."""


IOPT_PAGES_ACCOUNT_NONE = 0
IOPT_PAGES_ACCOUNT_USER = 1
IOPT_PAGES_ACCOUNT_MM = 2


@define(eq=False)
class IommufdCtx:
    """``struct iommufd_ctx``: one open iommufd."""

    objects: dict[int, IommufdObject | None] = field(factory=dict, repr=False)
    """id -> object; None is a reserved id (``XA_ZERO_ENTRY``) of an object under
    construction."""
    next_id: int = 1
    account_mode: int = IOPT_PAGES_ACCOUNT_USER
    vfio_ioas: IommufdObject | None = field(default=None, repr=False)
    """The VFIO compatibility IOAS (IOMMU_VFIO_IOAS), forgotten when destroyed."""
    closed: bool = False

    def ioctl(self, cmd: int, arg: int) -> int:
        """``iommufd_fops_ioctl``; see the module docstring."""
        return iommufd_fops_ioctl(self, cmd, arg)

    def close(self) -> None:
        """``iommufd_fops_release``: destroy every object, users first."""
        iommufd_fops_release(self)


def iommufd_fops_open() -> IommufdCtx:
    """``iommufd_fops_open``: a new iommufd (``open("/dev/iommu")``)."""
    return IommufdCtx()


# --------------------------------------------------------------------------- objects

ObjT = TypeVar("ObjT", bound=IommufdObject)


def iommufd_object_alloc(ictx: IommufdCtx, make: Callable[[], ObjT]) -> ObjT:
    """``iommufd_object_alloc``: the object and a reserved id (not yet findable)."""
    if should_fail("kmalloc"):
        raise ENOMEM("iommufd object (injected)")
    obj = make()
    if should_fail("xa_alloc"):
        raise ENOMEM("iommufd object id (injected)")
    start = ictx.next_id
    oid = start
    while oid in ictx.objects:
        oid = oid + 1 if oid < XA_LIMIT_31B else 1
        if oid == start:
            raise ENOSPC("no iommufd object id left")
    ictx.objects[oid] = None
    ictx.next_id = oid + 1 if oid < XA_LIMIT_31B else 1
    obj.id = oid
    return obj


def iommufd_object_finalize(ictx: IommufdCtx, obj: IommufdObject) -> None:
    """``iommufd_object_finalize``: the id now finds the object."""
    ictx.objects[obj.id] = obj


def iommufd_object_abort(ictx: IommufdCtx, obj: IommufdObject) -> None:
    """``iommufd_object_abort``: release the reserved id."""
    if ictx.objects.get(obj.id, obj) is None:
        del ictx.objects[obj.id]


def iommufd_object_abort_and_destroy(ictx: IommufdCtx, obj: IommufdObject) -> None:
    """``iommufd_object_abort_and_destroy``: the destroy callback, then release the id."""
    obj.destroy()
    iommufd_object_abort(ictx, obj)


def iommufd_get_object(ictx: IommufdCtx, oid: int, type: IommufdObjectType) -> IommufdObject:
    """``iommufd_get_object``: a reference, or ENOENT (unknown id, an object under
    construction, or one of another type)."""
    obj = ictx.objects.get(oid)
    if obj is None or (type != IOMMUFD_OBJ_ANY and obj.type != type):
        raise ENOENT(f"no iommufd object {oid} of type {type.name}")
    obj.users += 1
    return obj


def iommufd_put_object(ictx: IommufdCtx, obj: IommufdObject) -> None:
    """``iommufd_put_object``."""
    del ictx
    obj.users -= 1


def iommufd_object_remove(ictx: IommufdCtx, oid: int, *, owner_ref: bool = False) -> None:
    """``iommufd_object_remove``: destroy the object unless someone else holds it
    (EBUSY). ``owner_ref`` drops one extra reference first (the device's binding, for
    ``iommufd_object_destroy_user``)."""
    obj = ictx.objects.get(oid)
    if obj is None:
        raise ENOENT(f"no iommufd object {oid}")
    expected = 2 if owner_ref else 1
    if obj.users != expected:
        raise EBUSY(f"iommufd object {oid} is in use ({obj.users - 1} users)")
    obj.users = 0
    del ictx.objects[oid]
    if ictx.vfio_ioas is obj:
        ictx.vfio_ioas = None
    obj.destroy()


def iommufd_objects_of(ictx: IommufdCtx, type: IommufdObjectType) -> list[IommufdObject]:
    """Every finalized object of ``type`` (for tests and the release path)."""
    return [o for o in ictx.objects.values() if o is not None and o.type == type]


def iommufd_fops_release(ictx: IommufdCtx) -> None:
    """``iommufd_fops_release``: destroy objects that nothing else uses, repeatedly,
    until the table is empty (devices were unbound by their drivers first)."""
    if ictx.closed:
        return
    while ictx.objects:
        victims = [o for o in ictx.objects.values() if o is not None and o.users == 1]
        if not victims:
            raise EBUSY("iommufd released with objects still in use")
        for o in victims:
            o.users = 0
            del ictx.objects[o.id]
            o.destroy()
    ictx.vfio_ioas = None
    ictx.closed = True


# --------------------------------------------------------------------------- ucmd


@define(eq=False)
class IommufdUcmd:
    """``struct iommufd_ucmd``: the command being run and the user's buffer."""

    ictx: IommufdCtx
    ubuffer: int
    user_size: int
    cmd: Any


def iommufd_ucmd_respond(ucmd: IommufdUcmd, cmd_len: int) -> None:
    """``iommufd_ucmd_respond``: copy the struct back, at most the user's size
    (EFAULT if the user's buffer is not writable)."""
    from kernel.iommufd.user import copy_to_user

    n = min(ucmd.user_size, cmd_len)
    copy_to_user(ucmd.ubuffer, ucmd.cmd.to_bytes()[:n])


@define(frozen=True)
class IommufdIoctlOp:
    """``struct iommufd_ioctl_op``."""

    struct: type[UapiStruct]
    min_size: int
    ioctl_num: int
    execute: Callable[[IommufdUcmd], None]


def iommufd_destroy(ucmd: IommufdUcmd) -> None:
    """``iommufd_destroy`` (IOMMU_DESTROY)."""
    iommufd_object_remove(ucmd.ictx, ucmd.cmd.id)


def iommufd_option_rlimit_mode(cmd: uapi.iommu_option, ictx: IommufdCtx) -> None:
    """``iommufd_option_rlimit_mode``: GET says whether pins are charged to the mm
    (1) or the user (0); SET needs CAP_SYS_RESOURCE and an empty file."""
    if cmd.object_id:
        raise EOPNOTSUPP("RLIMIT_MODE takes no object")
    if cmd.op == uapi.IOMMU_OPTION_OP_GET:
        cmd.val64 = int(ictx.account_mode == IOPT_PAGES_ACCOUNT_MM)
        return
    if cmd.op == uapi.IOMMU_OPTION_OP_SET:
        if not capable(CAP_SYS_RESOURCE):
            raise EPERM("RLIMIT_MODE needs CAP_SYS_RESOURCE")
        if ictx.objects:
            raise EBUSY("RLIMIT_MODE can only change on an empty iommufd")
        if cmd.val64 > 1:
            raise EINVAL(f"RLIMIT_MODE value {cmd.val64}")
        ictx.account_mode = IOPT_PAGES_ACCOUNT_MM if cmd.val64 else IOPT_PAGES_ACCOUNT_USER
        return
    raise EOPNOTSUPP(f"option op {cmd.op}")


def iommufd_option(ucmd: IommufdUcmd) -> None:
    """``iommufd_option`` (IOMMU_OPTION)."""
    from kernel.iommufd.ioas import iommufd_ioas_option

    cmd: uapi.iommu_option = ucmd.cmd
    if cmd.reserved:
        raise EOPNOTSUPP("iommu_option.__reserved is not zero")
    if cmd.option_id == uapi.IOMMU_OPTION_RLIMIT_MODE:
        iommufd_option_rlimit_mode(cmd, ucmd.ictx)
    elif cmd.option_id == uapi.IOMMU_OPTION_HUGE_PAGES:
        iommufd_ioas_option(ucmd)
    else:
        raise EOPNOTSUPP(f"unknown option {cmd.option_id}")
    iommufd_ucmd_respond(ucmd, uapi.iommu_option.SIZE)


def _not_modelled(ucmd: IommufdUcmd) -> None:
    raise EOPNOTSUPP(f"{type(ucmd.cmd).__name__}: not modelled yet")


def _ops() -> dict[int, IommufdIoctlOp]:
    from kernel.iommufd import fault, ioas, vfio_compat
    from kernel.iommufd import hw_pagetable as hwpt

    def op(num: int, st: type[UapiStruct], last: str, fn: Callable[[IommufdUcmd], None]) -> None:
        table[uapi._IOC_NR(num) - uapi.IOMMUFD_CMD_BASE] = IommufdIoctlOp(
            st, st.offsetofend(last), num, fn
        )

    table: dict[int, IommufdIoctlOp] = {}
    op(uapi.IOMMU_DESTROY, uapi.iommu_destroy, "id", iommufd_destroy)
    op(
        uapi.IOMMU_FAULT_QUEUE_ALLOC,
        uapi.iommu_fault_alloc,
        "out_fault_fd",
        fault.iommufd_fault_alloc,
    )
    op(uapi.IOMMU_GET_HW_INFO, uapi.iommu_hw_info, "__reserved", hwpt.iommufd_get_hw_info)
    op(uapi.IOMMU_HWPT_ALLOC, uapi.iommu_hwpt_alloc, "__reserved", hwpt.iommufd_hwpt_alloc)
    op(
        uapi.IOMMU_HWPT_GET_DIRTY_BITMAP,
        uapi.iommu_hwpt_get_dirty_bitmap,
        "data",
        hwpt.iommufd_hwpt_get_dirty_bitmap,
    )
    op(
        uapi.IOMMU_HWPT_SET_DIRTY_TRACKING,
        uapi.iommu_hwpt_set_dirty_tracking,
        "__reserved",
        hwpt.iommufd_hwpt_set_dirty_tracking,
    )
    op(uapi.IOMMU_IOAS_ALLOC, uapi.iommu_ioas_alloc, "out_ioas_id", ioas.iommufd_ioas_alloc_ioctl)
    op(
        uapi.IOMMU_IOAS_ALLOW_IOVAS,
        uapi.iommu_ioas_allow_iovas,
        "allowed_iovas",
        ioas.iommufd_ioas_allow_iovas,
    )
    op(uapi.IOMMU_IOAS_COPY, uapi.iommu_ioas_copy, "src_iova", ioas.iommufd_ioas_copy)
    op(
        uapi.IOMMU_IOAS_IOVA_RANGES,
        uapi.iommu_ioas_iova_ranges,
        "out_iova_alignment",
        ioas.iommufd_ioas_iova_ranges,
    )
    op(uapi.IOMMU_IOAS_MAP, uapi.iommu_ioas_map, "iova", ioas.iommufd_ioas_map)
    op(uapi.IOMMU_IOAS_UNMAP, uapi.iommu_ioas_unmap, "length", ioas.iommufd_ioas_unmap)
    op(uapi.IOMMU_OPTION, uapi.iommu_option, "val64", iommufd_option)
    op(uapi.IOMMU_VFIO_IOAS, uapi.iommu_vfio_ioas, "__reserved", vfio_compat.iommufd_vfio_ioas)
    op(
        uapi.IOMMU_HWPT_INVALIDATE,
        uapi.iommu_hwpt_invalidate,
        "__reserved",
        hwpt.iommufd_hwpt_invalidate,
    )
    return table


_OPS: dict[int, IommufdIoctlOp] = {}


def iommufd_ioctl_ops() -> dict[int, IommufdIoctlOp]:
    """``iommufd_ioctl_ops[]`` indexed by ``_IOC_NR(cmd) - IOMMUFD_CMD_BASE``."""
    if not _OPS:
        _OPS.update(_ops())
    return _OPS


def iommufd_fops_ioctl(ictx: IommufdCtx, cmd: int, arg: int) -> int:
    """``iommufd_fops_ioctl``: 0 or a negative errno (see the module docstring)."""
    from kernel.iommufd.user import copy_from_user

    nr = uapi._IOC_NR(cmd) - uapi.IOMMUFD_CMD_BASE
    op = iommufd_ioctl_ops().get(nr)
    if op is None:
        from kernel.iommufd.viommu import iommufd_viommu_ioctl_ops

        op = iommufd_viommu_ioctl_ops().get(nr)
    if op is None:  # iommufd_vfio_ioctl: no type1 command is modelled
        return -ENOTTY.errno
    try:
        user_size = int.from_bytes(copy_from_user(arg, 4), "little")  # get_user
        if op.ioctl_num != cmd:
            return -ENOTTY.errno
        if user_size < op.min_size:
            raise EINVAL(f"size {user_size} < {op.min_size}")
        ksize = op.struct.SIZE
        if user_size > ksize and any(copy_from_user(arg + ksize, user_size - ksize)):
            raise E2BIG(f"non-zero bytes past the {ksize}-byte struct")
        data = copy_from_user(arg, min(user_size, ksize))
        cmd_st = op.struct.from_bytes(data + bytes(ksize - len(data)))
        op.execute(IommufdUcmd(ictx, arg, user_size, cmd_st))
    except KernelError as exc:
        return -exc.errno
    return 0


def get_ioas(ictx: IommufdCtx, oid: int) -> IommufdIoas:
    """``iommufd_get_ioas``: a reference to IOAS ``oid`` or ENOENT."""
    from kernel.iommufd.ioas import IommufdIoas

    obj = iommufd_get_object(ictx, oid, IOMMUFD_OBJ_IOAS)
    assert isinstance(obj, IommufdIoas)
    return obj
