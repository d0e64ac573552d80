"""Behaviours tools/testing/selftests/iommu/iommufd.c (6.12) checks that the other
files here did not, written as our own tests on VT-d and SMMUv3 (the selftest runs
them on its mock domain): the command framing of every ioctl (``cmd_fail``,
``cmd_length``, ``cmd_ex_fail``), IOMMU_OPTION on no object (``global_options``),
IOAS lifetime (``ioas_destroy``, ``ioas_area_destroy``), area rules (``area``,
``unmap_fully_contained_areas``, ``ioas_iova_alloc``), the huge-pages option and
the IOVA alignment it implies (``ioas_option_huge_pages``, ``ioas_align_change``),
memory mapped by another process (``fork_gone``, ``fork_present``), a zero-size
GET_HW_INFO buffer (``get_hw_info``) and unknown HWPT flags next to a fault id
(``iopf``)."""

from __future__ import annotations

import pytest

from kernel.errno import (
    E2BIG,
    EADDRINUSE,
    EBUSY,
    EEXIST,
    EFAULT,
    EINVAL,
    ENOENT,
    ENOTTY,
    EOPNOTSUPP,
)
from kernel.fs import ksys_mmap
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.iommufd.fault import FAULT_FDS
from kernel.iommufd.main import IommufdIoctlOp, iommufd_ioctl_ops
from kernel.iommufd.uapi_helpers import Iommufd
from kernel.mm import PAGE_SIZE
from kernel.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from kernel.sched import do_exit, use_task, user_process_create
from kernel.uapi import iommufd as uapi
from tests.kernel.iommufd.conftest import Vmm
from tests.kernel.iommufd.helpers import domain_of, iopt_of, maps_to, raw, user_phys

U64_MAX = (1 << 64) - 1
BASE = 0x100_0000
HUGE = uapi.IOMMU_OPTION_HUGE_PAGES
GET, SET = uapi.IOMMU_OPTION_OP_GET, uapi.IOMMU_OPTION_OP_SET
OPS = sorted(iommufd_ioctl_ops().values(), key=lambda op: op.ioctl_num)


def attached(vmm: Vmm) -> tuple[int, int, int]:
    dev = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    return dev, ioas, vmm.vfio.attach_pt(ioas)


def test_cmd_fail(vmm: Vmm) -> None:
    """Object id 0 is ENOENT, a NULL argument EFAULT, the number below the first
    command ENOTTY."""
    assert raw(vmm.fd, uapi.IOMMU_DESTROY, uapi.iommu_destroy(id=0))[0] == -ENOENT.errno
    with use_task(vmm.task):
        assert vmm.fd.ctx.ioctl(uapi.IOMMU_DESTROY, 0) == -EFAULT.errno
    below = uapi._IO(uapi.IOMMUFD_TYPE, uapi.IOMMUFD_CMD_BASE - 1)
    assert vmm.fd.ioctl(below, uapi.iommu_destroy(size=8).to_bytes())[0] == -ENOTTY.errno


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.struct.C_NAME)
def test_cmd_length(vmm: Vmm, op: IommufdIoctlOp) -> None:
    """One byte more than the struct: E2BIG when it is not zero, else the same
    answer as the exact size (``copy_struct_from_user``); one byte less than the
    minimum: EINVAL."""
    size = op.struct.SIZE

    def call(user_size: int, extra: int) -> int:
        data = user_size.to_bytes(4, "little") + bytes(size - 4) + bytes([extra])
        return vmm.fd.ioctl(op.ioctl_num, data)[0]

    assert call(op.min_size - 1, 0xFF) == -EINVAL.errno
    assert call(size + 1, 0xFF) == -E2BIG.errno
    exact = call(size, 0xFF)
    assert call(size + 1, 0) == exact
    for filep in list(FAULT_FDS.get().values()):  # fault queues the calls made
        if filep.fault.ictx is vmm.fd.ctx:
            filep.close()


def test_huge_pages_option_needs_an_ioas_object(vmm: Vmm) -> None:
    with pytest.raises(ENOENT):
        vmm.fd.option(HUGE, GET)
    with pytest.raises(ENOENT):
        vmm.fd.option(HUGE, SET, 1)


def test_ioas_destroy_is_ebusy_while_a_device_uses_it(vmm: Vmm) -> None:
    _, ioas, hwpt = attached(vmm)
    vmm.fd.ioas_map(ioas, vmm.buffer(PAGE_SIZE, 1), PAGE_SIZE, iova=BASE)
    with pytest.raises(EBUSY):
        vmm.fd.destroy(ioas)
    with pytest.raises(EBUSY):  # the auto HWPT is attached
        vmm.fd.destroy(hwpt)
    lone = vmm.fd.ioas_alloc()  # an IOAS with areas and no device destroys fine
    vmm.fd.ioas_map(lone, vmm.buffer(PAGE_SIZE, 2), PAGE_SIZE, iova=BASE)
    vmm.fd.destroy(lone)
    assert vmm.task.user.locked_vm == 1


def test_area_rules(vmm: Vmm) -> None:
    """Unmapping nothing, or part of an area, is ENOENT; mapping over any part of
    an area EEXIST; unmap-all works, on an empty IOAS too."""
    _, ioas, _ = attached(vmm)
    buf = vmm.buffer(4 * PAGE_SIZE, 3)
    for i in range(10):
        with pytest.raises(ENOENT):
            vmm.fd.ioas_unmap(ioas, BASE + i * PAGE_SIZE, PAGE_SIZE)
    for i in range(10):
        vmm.fd.ioas_map(ioas, buf, PAGE_SIZE, iova=BASE + i * PAGE_SIZE)
    for i in range(10):
        assert vmm.fd.ioas_unmap(ioas, BASE + i * PAGE_SIZE, PAGE_SIZE) == PAGE_SIZE
    vmm.fd.ioas_map(ioas, buf, 2 * PAGE_SIZE, iova=BASE + 16 * PAGE_SIZE)
    for page in (16, 17):
        with pytest.raises(ENOENT):
            vmm.fd.ioas_unmap(ioas, BASE + page * PAGE_SIZE, PAGE_SIZE)
    for npages, page in ((2, 16), (1, 16), (1, 17), (2, 15), (3, 15)):
        with pytest.raises(EEXIST):
            vmm.fd.ioas_map(ioas, buf, npages * PAGE_SIZE, iova=BASE + page * PAGE_SIZE)
    assert vmm.fd.ioas_unmap(ioas, 0, U64_MAX) == 2 * PAGE_SIZE
    assert vmm.fd.ioas_unmap(ioas, 0, U64_MAX) == 0


def test_unmap_of_fully_contained_areas(vmm: Vmm) -> None:
    _, ioas, _ = attached(vmm)
    buf = vmm.buffer(8 * PAGE_SIZE, 4)
    base = BASE + 4 * PAGE_SIZE
    for i in range(4):
        vmm.fd.ioas_map(ioas, buf, 8 * PAGE_SIZE, iova=base + i * 16 * PAGE_SIZE)
    with pytest.raises(ENOENT):  # cuts into the first area
        vmm.fd.ioas_unmap(ioas, base - 4 * PAGE_SIZE, 8 * PAGE_SIZE)
    with pytest.raises(ENOENT):  # cuts into the last
        vmm.fd.ioas_unmap(ioas, base + 3 * 16 * PAGE_SIZE + 4 * PAGE_SIZE, 8 * PAGE_SIZE)
    span = 3 * 16 * PAGE_SIZE + 8 * PAGE_SIZE + 4 * PAGE_SIZE
    assert vmm.fd.ioas_unmap(ioas, base - 4 * PAGE_SIZE, span) == 32 * PAGE_SIZE


@pytest.mark.parametrize("domain", [True, False], ids=["domain", "no_domain"])
def test_automatic_iovas_of_any_length(vmm: Vmm, domain: bool) -> None:
    """Without a domain any length gets an IOVA; with one (4 KiB pages) a length
    that is not a multiple of the page size is EINVAL."""
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    if domain:
        vmm.vfio.attach_pt(ioas)
    buf = vmm.buffer(2 * PAGE_SIZE, 5)
    for length in (1, 100, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1, 2 * PAGE_SIZE):
        if domain and length % PAGE_SIZE:
            with pytest.raises(EINVAL):
                vmm.fd.ioas_map(ioas, buf, length)
            continue
        iova = vmm.fd.ioas_map(ioas, buf, length)
        assert vmm.fd.ioas_unmap(ioas, iova, length) == length


def test_huge_pages_option_values(vmm: Vmm) -> None:
    ioas = vmm.fd.ioas_alloc()
    assert vmm.fd.option(HUGE, GET, object_id=ioas) == 1
    vmm.fd.option(HUGE, SET, 0, ioas)
    assert vmm.fd.option(HUGE, GET, object_id=ioas) == 0
    with pytest.raises(EINVAL):
        vmm.fd.option(HUGE, SET, 2, ioas)
    vmm.fd.option(HUGE, SET, 1, ioas)
    assert vmm.fd.option(HUGE, GET, object_id=ioas) == 1


def test_disabling_huge_pages_aligns_iovas_to_pages(vmm: Vmm) -> None:
    """``ioas_align_change``: with large pages disabled every area must be page
    aligned (a map from the middle of a page is EINVAL); enabling them lowers the
    alignment again, and disabling them over a misaligned area is EADDRINUSE."""
    ioas = vmm.fd.ioas_alloc()
    buf = vmm.buffer(2 * PAGE_SIZE, 6)
    half = PAGE_SIZE // 2
    vmm.fd.ioas_map(ioas, buf, PAGE_SIZE, iova=BASE)
    vmm.fd.option(HUGE, SET, 0, ioas)
    assert iopt_of(vmm.fd.ctx, ioas).iova_alignment == PAGE_SIZE
    with pytest.raises(EINVAL):
        vmm.fd.ioas_map(ioas, buf + half, PAGE_SIZE, iova=BASE + PAGE_SIZE)
    vmm.fd.option(HUGE, SET, 0, ioas)  # again: nothing changes
    vmm.fd.option(HUGE, SET, 1, ioas)
    assert iopt_of(vmm.fd.ctx, ioas).iova_alignment == 1
    vmm.fd.ioas_map(ioas, buf + half, PAGE_SIZE, iova=BASE + PAGE_SIZE)
    with pytest.raises(EADDRINUSE):
        vmm.fd.option(HUGE, SET, 0, ioas)
    assert vmm.fd.option(HUGE, GET, object_id=ioas) == 1
    vmm.fd.ioas_unmap(ioas, BASE + PAGE_SIZE, PAGE_SIZE)
    vmm.fd.ioas_unmap(ioas, BASE, PAGE_SIZE)


def _child_maps(vmm: Vmm, ioas: int, iova: int) -> tuple[Iommufd, int]:
    """A forked child (sharing the iommufd) maps memory of its own into ``ioas``."""
    child = user_process_create("child")
    child_fd = Iommufd.open(child)
    child_fd.ctx = vmm.fd.ctx  # the descriptor inherited over fork
    rw, anon = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
    buf = ksys_mmap(child, 0, 4 * PAGE_SIZE, rw, anon, -1)
    child_fd.write(buf, bytes(range(256)) * (4 * PAGE_SIZE // 256))
    child_fd.ioas_map(ioas, buf, 4 * PAGE_SIZE, iova=iova)
    return child_fd, buf


def test_fork_gone_with_a_domain_keeps_the_childs_pages(vmm: Vmm) -> None:
    """``fork_gone`` with a domain: the child's pages were pinned while it lived, so
    after it exits a second domain is filled from them (no GUP needed)."""
    dev, ioas, hwpt = attached(vmm)
    child_fd, buf = _child_maps(vmm, ioas, BASE)
    child = child_fd.task
    phys = [user_phys(child, buf + i * PAGE_SIZE) for i in range(4)]
    do_exit(child)
    second = vmm.fd.hwpt_alloc(dev, ioas)
    for dom in (domain_of(vmm.fd.ctx, hwpt), domain_of(vmm.fd.ctx, second)):
        assert [iommu_iova_to_phys(dom, BASE + i * PAGE_SIZE) for i in range(4)] == phys
    assert child.user.locked_vm == 4  # still charged to the child's user until unmapped
    vmm.fd.ioas_unmap(ioas, BASE, 4 * PAGE_SIZE)
    assert child.user.locked_vm == 0


def test_fork_present_pins_from_the_live_childs_mm(vmm: Vmm) -> None:
    """``fork_present``: memory mapped by a live child with no domain yet is pinned
    from the child's address space when the parent attaches."""
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    child_fd, buf = _child_maps(vmm, ioas, BASE)
    hwpt = vmm.vfio.attach_pt(ioas)
    child_vmm = Vmm(vmm.kernel, child_fd.task, child_fd, vmm.vfio)
    assert maps_to(child_vmm, domain_of(vmm.fd.ctx, hwpt), BASE, buf, 4 * PAGE_SIZE)
    assert child_fd.task.user.locked_vm == 4 and vmm.task.user.locked_vm == 0
    vmm.vfio.detach_pt()
    vmm.fd.ioas_unmap(ioas, BASE, 4 * PAGE_SIZE)
    do_exit(child_fd.task)


def test_hw_info_with_a_zero_size_buffer(vmm: Vmm) -> None:
    dev = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    rc, out = raw(vmm.fd, uapi.IOMMU_GET_HW_INFO, uapi.iommu_hw_info(dev_id=dev))
    assert rc == 0
    info = uapi.iommu_hw_info.from_bytes(out)
    assert info.data_len == (24 if info.out_data_type == uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD else 0)


def test_unknown_hwpt_flags_next_to_a_fault_id_are_eopnotsupp(vmm: Vmm) -> None:
    dev = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    fault_id, _ = vmm.fd.fault_queue_alloc()
    with pytest.raises(EOPNOTSUPP):
        vmm.fd.hwpt_alloc(dev, ioas, uapi.IOMMU_HWPT_FAULT_ID_VALID | 1 << 31, fault_id)
    assert sorted(vmm.fd.ctx.objects) == [dev, ioas, fault_id]
