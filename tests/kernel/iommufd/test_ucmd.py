"""The iommufd file's ioctl contract (main.c): the ``size`` rules of every command,
unknown commands, the object table and IOMMU_DESTROY, IOMMU_OPTION. Errnos are
upstream's."""

from __future__ import annotations

import pytest

from kernel.errno import E2BIG, EBUSY, EFAULT, EINVAL, ENODEV, ENOENT, ENOTTY, EOPNOTSUPP, EPERM
from kernel.iommufd.main import iommufd_ioctl_ops
from kernel.mm import PAGE_SIZE
from kernel.mmap import PROT_READ, do_mprotect
from kernel.sched import use_task
from kernel.uapi import iommufd as uapi
from tests.kernel.iommufd.conftest import Vmm
from tests.kernel.iommufd.helpers import raw

OPS = sorted(iommufd_ioctl_ops().values(), key=lambda op: op.ioctl_num)
MIN_SIZES = {
    "iommu_destroy": 8,
    "iommu_fault_alloc": 16,
    "iommu_hw_info": 32,
    "iommu_hwpt_alloc": 24,
    "iommu_hwpt_get_dirty_bitmap": 48,
    "iommu_hwpt_set_dirty_tracking": 16,
    "iommu_ioas_alloc": 12,
    "iommu_ioas_allow_iovas": 24,
    "iommu_ioas_copy": 40,
    "iommu_ioas_iova_ranges": 32,
    "iommu_ioas_map": 40,
    "iommu_ioas_unmap": 24,
    "iommu_option": 24,
    "iommu_vfio_ioas": 12,
    "iommu_hwpt_invalidate": 32,
}
"""offsetofend of each command's last 6.12-original member, as main.c's IOCTL_OP
table lists them (written out, not derived)."""


def test_every_command_has_upstreams_minimum_size() -> None:
    assert {op.struct.C_NAME: op.min_size for op in OPS} == MIN_SIZES
    assert len(OPS) == 15


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.struct.C_NAME)
def test_a_struct_shorter_than_the_minimum_is_einval(vmm: Vmm, op: object) -> None:
    from kernel.iommufd.main import IommufdIoctlOp

    assert isinstance(op, IommufdIoctlOp)
    buf = (op.min_size - 1).to_bytes(4, "little") + bytes(op.struct.SIZE - 4)
    assert vmm.fd.ioctl(op.ioctl_num, buf)[0] == -EINVAL.errno
    assert not vmm.fd.ctx.objects


def test_a_longer_struct_is_accepted_only_with_a_zero_tail(vmm: Vmm) -> None:
    cmd = uapi.iommu_ioas_alloc(size=uapi.iommu_ioas_alloc.SIZE + 8)
    rc, buf = vmm.fd.ioctl(uapi.IOMMU_IOAS_ALLOC, cmd.to_bytes() + bytes(8))
    assert rc == 0
    assert uapi.iommu_ioas_alloc.from_bytes(buf).out_ioas_id == 1 and buf[12:] == bytes(8)
    rc, _ = vmm.fd.ioctl(uapi.IOMMU_IOAS_ALLOC, cmd.to_bytes() + b"\0\0\0\1" + bytes(4))
    assert rc == -E2BIG.errno
    assert list(vmm.fd.ctx.objects) == [1]


def test_an_older_shorter_struct_is_answered_within_its_size(vmm: Vmm) -> None:
    """GET_HW_INFO from a user built before ``out_capabilities`` existed (size 32):
    the command runs, and nothing is written past the user's 32 bytes."""
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    data = uapi.iommu_hw_info(size=32, dev_id=dev_id).to_bytes()[:32] + b"\xaa" * 8
    rc, buf = vmm.fd.ioctl(uapi.IOMMU_GET_HW_INFO, data)
    assert rc == 0
    assert buf[32:] == b"\xaa" * 8
    assert uapi.iommu_hw_info.from_bytes(buf[:32]).out_max_pasid_log2 == 20


def test_unknown_commands_are_enotty(vmm: Vmm) -> None:
    buf = uapi.iommu_destroy(size=8).to_bytes()
    assert vmm.fd.ioctl(uapi._IO(uapi.IOMMUFD_TYPE, 0x7F), buf)[0] == -ENOTTY.errno
    assert vmm.fd.ioctl(uapi._IO(uapi.IOMMUFD_TYPE, 0xA0), buf)[0] == -ENOTTY.errno
    assert vmm.fd.ioctl(uapi._IO(ord("V"), 0x80), buf)[0] == -ENOTTY.errno


def test_an_argument_running_into_unmapped_memory_is_efault(vmm: Vmm) -> None:
    """The struct sits at the end of a mapping followed by a hole: a ``size`` that
    runs past the mapping, or a pointer whose ``size`` field is cut, is EFAULT; so
    is an argument in no mapping at all, or in memory the process may not write
    (the response cannot be copied back)."""
    buf = vmm.buffer(2 * PAGE_SIZE)
    vmm.munmap(buf + PAGE_SIZE, PAGE_SIZE)
    end = buf + PAGE_SIZE

    def at(uptr: int, data: bytes) -> int:
        vmm.write(uptr, data)
        with use_task(vmm.task):
            return vmm.fd.ctx.ioctl(uapi.IOMMU_IOAS_ALLOC, uptr)

    assert at(end - 12, uapi.iommu_ioas_alloc(size=12).to_bytes()) == 0
    assert at(end - 12, uapi.iommu_ioas_alloc(size=64).to_bytes()) == -EFAULT.errno
    assert at(end - 2, bytes(2)) == -EFAULT.errno
    with use_task(vmm.task):
        assert vmm.fd.ctx.ioctl(uapi.IOMMU_IOAS_ALLOC, end) == -EFAULT.errno
    ro = vmm.buffer(PAGE_SIZE, 0, prot=PROT_READ)
    assert ro and list(vmm.fd.ctx.objects) == [1]
    vmm.write(buf, uapi.iommu_ioas_alloc(size=12).to_bytes())
    assert vmm.task.mm is not None
    do_mprotect(vmm.task.mm, buf, PAGE_SIZE, PROT_READ)
    with use_task(vmm.task):  # readable, but out_ioas_id cannot be written back
        assert vmm.fd.ctx.ioctl(uapi.IOMMU_IOAS_ALLOC, buf) == -EFAULT.errno


def test_destroy_wrong_ids_and_objects_in_use(vmm: Vmm) -> None:
    fd = vmm.fd
    with pytest.raises(ENOENT):
        fd.destroy(1)
    dev_id = vmm.vfio.bind_iommufd(fd.ctx)
    ioas = fd.ioas_alloc()
    hwpt = fd.hwpt_alloc(dev_id, ioas)
    with pytest.raises(EBUSY):  # the HWPT holds the IOAS
        fd.destroy(ioas)
    with pytest.raises(EBUSY):  # bound: only unbinding ends a device
        fd.destroy(dev_id)
    vmm.vfio.attach_pt(hwpt)
    with pytest.raises(EBUSY):  # attached
        fd.destroy(hwpt)
    vmm.vfio.detach_pt()
    fd.destroy(hwpt)
    with pytest.raises(ENOENT):  # destroyed ids stay unknown
        fd.destroy(hwpt)
    with pytest.raises(ENOENT):  # a destroyed IOAS cannot be used
        fd.ioas_map(hwpt, vmm.buffer(PAGE_SIZE), PAGE_SIZE)
    fd.destroy(ioas)
    with pytest.raises(ENOENT):
        fd.ioas_map(ioas, vmm.buffer(PAGE_SIZE), PAGE_SIZE)
    assert list(fd.ctx.objects) == [dev_id]


def test_objects_of_the_wrong_type_are_enoent(vmm: Vmm) -> None:
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    with pytest.raises(ENOENT):  # a device id where an IOAS belongs
        vmm.fd.ioas_map(dev_id, vmm.buffer(PAGE_SIZE), PAGE_SIZE)
    ioas = vmm.fd.ioas_alloc()
    with pytest.raises(ENOENT):  # an IOAS id where a device belongs
        vmm.fd.hwpt_alloc(ioas, ioas)


def test_rlimit_mode_option(vmm: Vmm) -> None:
    fd = vmm.fd
    get, put = uapi.IOMMU_OPTION_OP_GET, uapi.IOMMU_OPTION_OP_SET
    assert fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, get) == 0
    fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, put, 1)
    assert fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, get) == 1
    with pytest.raises(EINVAL):
        fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, put, 2)
    with pytest.raises(EOPNOTSUPP):
        fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, get, object_id=1)
    with pytest.raises(EOPNOTSUPP):
        fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, 7)
    with pytest.raises(EOPNOTSUPP):
        fd.option(9, get)
    fd.ioas_alloc()
    with pytest.raises(EBUSY):  # only on an empty file
        fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, put, 0)
    vmm.task.caps = frozenset()  # no CAP_SYS_RESOURCE
    with pytest.raises(EPERM):
        fd.option(uapi.IOMMU_OPTION_RLIMIT_MODE, put, 0)
    rc, _ = raw(fd, uapi.IOMMU_OPTION, uapi.iommu_option(option_id=0, op=get, reserved=1))
    assert rc == -EOPNOTSUPP.errno
    with pytest.raises(ENOENT):
        fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, get, object_id=42)


@pytest.mark.parametrize(
    "cmd",
    [
        uapi.iommu_ioas_alloc(flags=1),
        uapi.iommu_ioas_iova_ranges(ioas_id=1, reserved=1),
        uapi.iommu_ioas_allow_iovas(ioas_id=1, reserved=1),
        uapi.iommu_hwpt_alloc(dev_id=1, pt_id=1, reserved=1),
        uapi.iommu_hw_info(dev_id=1, flags=1),
        uapi.iommu_hw_info(dev_id=1, reserved=b"\0\1\0"),
    ],
    ids=lambda c: type(c).__name__,
)
def test_non_zero_flags_or_reserved_fields_are_eopnotsupp(vmm: Vmm, cmd: object) -> None:
    assert isinstance(cmd, uapi.UapiStruct)
    num = next(op.ioctl_num for op in OPS if op.struct is type(cmd))
    vmm.fd.ioas_alloc()
    assert raw(vmm.fd, num, cmd)[0] == -EOPNOTSUPP.errno
    assert list(vmm.fd.ctx.objects) == [1]


def test_vfio_compat_ioas(vmm: Vmm) -> None:

    def vfio_ioas(op: int, ioas_id: int = 0, reserved: int = 0) -> tuple[int, int]:
        cmd = uapi.iommu_vfio_ioas(op=op, ioas_id=ioas_id, reserved=reserved)
        rc, out = raw(vmm.fd, uapi.IOMMU_VFIO_IOAS, cmd)
        return rc, uapi.iommu_vfio_ioas.from_bytes(out).ioas_id

    get, put, clear = (
        uapi.IOMMU_VFIO_IOAS_GET,
        uapi.IOMMU_VFIO_IOAS_SET,
        uapi.IOMMU_VFIO_IOAS_CLEAR,
    )
    assert vfio_ioas(get)[0] == -ENODEV.errno
    assert vfio_ioas(put, 5)[0] == -ENOENT.errno
    ioas = vmm.fd.ioas_alloc()
    assert vfio_ioas(put, ioas) == (0, ioas)
    assert vfio_ioas(get) == (0, ioas)
    assert vfio_ioas(clear)[0] == 0 and vfio_ioas(get)[0] == -ENODEV.errno
    vfio_ioas(put, ioas)
    vmm.fd.destroy(ioas)  # a destroyed IOAS is forgotten
    assert vfio_ioas(get)[0] == -ENODEV.errno
    assert vfio_ioas(3)[0] == -EOPNOTSUPP.errno
    assert vfio_ioas(get, reserved=1)[0] == -EOPNOTSUPP.errno
