"""IOAS behaviour through the ioctls, with the DSA attached so that every mapping
lands in the vendor's page table (VT-d second stage, SMMUv3 stage 1): map and unmap
fill and clear the domain, automatic IOVAs, area rules, splits with large pages
disabled, copy between IOASes, IOVA ranges, allowed ranges, reserved regions, and
pin accounting. Errnos are upstream's (tools/testing/selftests/iommu/iommufd.c)."""

from __future__ import annotations

import pytest

from kernel.errno import (
    EADDRINUSE,
    EEXIST,
    EFAULT,
    EINVAL,
    EMSGSIZE,
    ENOENT,
    ENOMEM,
    ENOSPC,
    EOPNOTSUPP,
    EOVERFLOW,
    EPERM,
)
from kernel.iommu.iommu_resv import IOMMU_RESV_DIRECT_RELAXABLE
from kernel.iommufd.io_pagetable import iopt_cut_iova
from kernel.iommufd.uapi_helpers import RW
from kernel.mm import PAGE_SHIFT, PAGE_SIZE, Page
from kernel.page_ref import page_ref_count
from kernel.sched import CAP_IPC_LOCK, RLIMIT_MEMLOCK
from kernel.uapi import iommufd as uapi
from tests.kernel.iommufd.conftest import Vmm
from tests.kernel.iommufd.helpers import (
    domain_of,
    dsa_resv_regions,
    iopt_of,
    maps_to,
    raw,
    unmapped,
    user_phys,
)

U64_MAX = (1 << 64) - 1
SZ_2M = 1 << 21


def attached(vmm: Vmm) -> tuple[int, int]:
    """A bound, attached DSA: (ioas id, hwpt id)."""
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    return ioas, vmm.vfio.attach_pt(ioas)


def test_map_fills_the_attached_domain_and_unmap_clears_it(vmm: Vmm) -> None:
    ioas, hwpt = attached(vmm)
    dom = domain_of(vmm.fd.ctx, hwpt)
    buf = vmm.buffer(SZ_2M)
    iova = vmm.fd.ioas_map(ioas, buf, SZ_2M)
    assert maps_to(vmm, dom, iova, buf, SZ_2M)
    assert vmm.task.user.locked_vm == SZ_2M // PAGE_SIZE
    assert vmm.fd.ioas_unmap(ioas, iova, SZ_2M) == SZ_2M
    assert unmapped(dom, iova, SZ_2M) and vmm.task.user.locked_vm == 0


def test_mappings_made_before_attach_are_copied_into_the_new_domain(vmm: Vmm) -> None:
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    buf = vmm.buffer(4 * PAGE_SIZE)
    iova = vmm.fd.ioas_map(ioas, buf, 4 * PAGE_SIZE, iova=0x40_0000)
    assert vmm.task.user.locked_vm == 0  # nothing pinned without a domain
    hwpt = vmm.vfio.attach_pt(ioas)
    assert maps_to(vmm, domain_of(vmm.fd.ctx, hwpt), iova, buf, 4 * PAGE_SIZE)
    assert vmm.task.user.locked_vm == 4


def test_automatic_iovas_are_aligned_distinct_and_outside_reserved_regions(vmm: Vmm) -> None:
    ioas, _ = attached(vmm)
    sizes = (PAGE_SIZE, SZ_2M, 3 * PAGE_SIZE)
    bufs = [vmm.buffer(n) for n in sizes]
    iovas = [vmm.fd.ioas_map(ioas, b, n) for b, n in zip(bufs, sizes, strict=True)]
    spans = list(zip(iovas, sizes, strict=True))
    for iova, buf, n in zip(iovas, bufs, sizes, strict=True):
        # upstream keeps the alignment the user address has, up to the length's
        align = min(1 << (n - 1).bit_length(), buf & -buf)
        assert iova % align == 0 and iova % PAGE_SIZE == 0
    for i, (a, n) in enumerate(spans):
        for b, m in spans[i + 1 :]:
            assert a + n <= b or b + m <= a
        for r in dsa_resv_regions():
            assert a + n <= r.start or r.start + r.length <= a


@pytest.mark.parametrize(
    ("what", "errno"),
    [
        ("overlap", EEXIST),
        ("unaligned", EINVAL),
        ("reserved", EINVAL),
        ("wraps", EOVERFLOW),
        ("ulong_max", EOVERFLOW),
        ("length0", EINVAL),
        ("no_access", EINVAL),
        ("unknown_flag", EOPNOTSUPP),
        ("reserved_field", EOPNOTSUPP),
        ("bad_ioas", ENOENT),
        ("bad_pointer", EFAULT),
    ],
)
def test_bad_map_gets_upstreams_errno_and_leaves_nothing(
    vmm: Vmm, what: str, errno: type[Exception]
) -> None:
    ioas, hwpt = attached(vmm)
    buf = vmm.buffer(2 * PAGE_SIZE)
    vmm.fd.ioas_map(ioas, buf, PAGE_SIZE, iova=0x10_0000)
    resv = next(r for r in dsa_resv_regions() if r.type != IOMMU_RESV_DIRECT_RELAXABLE)
    cmd = uapi.iommu_ioas_map(
        flags=RW | uapi.IOMMU_IOAS_MAP_FIXED_IOVA,
        ioas_id=ioas,
        user_va=buf,
        length=2 * PAGE_SIZE,
        iova=0x20_0000,
    )
    match what:
        case "overlap":
            cmd.iova = 0x10_0000 - PAGE_SIZE
        case "unaligned":
            cmd.iova = 0x20_0800
        case "reserved":
            cmd.iova = resv.start
        case "wraps":
            cmd.iova = U64_MAX - PAGE_SIZE + 1
        case "ulong_max":
            cmd.length = U64_MAX
        case "length0":
            cmd.length = 0
        case "no_access":
            cmd.flags = uapi.IOMMU_IOAS_MAP_FIXED_IOVA
        case "unknown_flag":
            cmd.flags |= 1 << 3
        case "reserved_field":
            cmd.reserved = 1
        case "bad_ioas":
            cmd.ioas_id = 99
        case "bad_pointer":
            cmd.user_va = 0x1000
    rc, _ = raw(vmm.fd, uapi.IOMMU_IOAS_MAP, cmd)
    assert rc == -errno.errno  # type: ignore[attr-defined]
    iopt = iopt_of(vmm.fd.ctx, ioas)
    assert [(a.iova, a.length) for a in iopt.area_list()] == [(0x10_0000, PAGE_SIZE)]
    assert vmm.task.user.locked_vm == 1
    assert unmapped(domain_of(vmm.fd.ctx, hwpt), 0x20_0000, 2 * PAGE_SIZE)


def test_unmap_takes_whole_areas_only(vmm: Vmm) -> None:
    ioas, hwpt = attached(vmm)
    a, b = vmm.buffer(4 * PAGE_SIZE), vmm.buffer(4 * PAGE_SIZE)
    vmm.fd.ioas_map(ioas, a, 4 * PAGE_SIZE, iova=0x100_0000)
    vmm.fd.ioas_map(ioas, b, 4 * PAGE_SIZE, iova=0x100_4000)
    with pytest.raises(ENOENT):  # cuts into the first area
        vmm.fd.ioas_unmap(ioas, 0x100_1000, 0x1000)
    with pytest.raises(ENOENT):  # nothing there
        vmm.fd.ioas_unmap(ioas, 0x200_0000, 0x1000)
    with pytest.raises(EINVAL):
        vmm.fd.ioas_unmap(ioas, 0x100_0000, 0)
    assert maps_to(vmm, domain_of(vmm.fd.ctx, hwpt), 0x100_0000, a, 4 * PAGE_SIZE)
    # a range that covers both areas (and more) takes both
    assert vmm.fd.ioas_unmap(ioas, 0xF0_0000, 0x20_0000) == 8 * PAGE_SIZE
    vmm.fd.ioas_map(ioas, a, 4 * PAGE_SIZE)
    vmm.fd.ioas_map(ioas, b, 4 * PAGE_SIZE)
    assert vmm.fd.ioas_unmap(ioas, 0, U64_MAX) == 8 * PAGE_SIZE  # unmap all
    assert vmm.fd.ioas_unmap(ioas, 0, U64_MAX) == 0
    assert vmm.task.user.locked_vm == 0


def test_areas_split_where_large_pages_are_disabled(vmm: Vmm) -> None:
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    assert vmm.fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_GET, 0, ioas) == 1
    vmm.fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET, 0, ioas)
    hwpt = vmm.vfio.attach_pt(ioas)
    dom = domain_of(vmm.fd.ctx, hwpt)
    buf = vmm.buffer(4 * PAGE_SIZE)
    vmm.fd.ioas_map(ioas, buf, 4 * PAGE_SIZE, iova=0x40_0000)
    iopt = iopt_of(vmm.fd.ctx, ioas)
    iopt_cut_iova(iopt, [0x40_0FFF, 0x40_1FFF])  # VFIO type1's partial unmap does this
    assert [(a.iova, a.length) for a in iopt.area_list()] == [
        (0x40_0000, PAGE_SIZE),
        (0x40_1000, PAGE_SIZE),
        (0x40_2000, 2 * PAGE_SIZE),
    ]
    assert vmm.fd.ioas_unmap(ioas, 0x40_1000, PAGE_SIZE) == PAGE_SIZE
    assert unmapped(dom, 0x40_1000, PAGE_SIZE)
    assert maps_to(vmm, dom, 0x40_0000, buf, PAGE_SIZE)
    assert maps_to(vmm, dom, 0x40_2000, buf + 0x2000, 2 * PAGE_SIZE)
    assert vmm.task.user.locked_vm == 4  # the pages object is still in use


def test_large_page_areas_do_not_split_and_the_option_is_fixed_once_mapped(vmm: Vmm) -> None:
    ioas, _ = attached(vmm)
    vmm.fd.ioas_map(ioas, vmm.buffer(SZ_2M), SZ_2M, iova=0x40_0000)
    with pytest.raises(EINVAL):
        iopt_cut_iova(iopt_of(vmm.fd.ctx, ioas), [0x40_0FFF])
    with pytest.raises(EINVAL):
        vmm.fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET, 0, ioas)
    with pytest.raises(EINVAL):
        vmm.fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET, 2, ioas)


def test_copy_maps_the_same_pages_into_another_ioas(vmm: Vmm) -> None:
    ioas, hwpt = attached(vmm)
    other = vmm.fd.ioas_alloc()
    buf = vmm.buffer(4 * PAGE_SIZE)
    vmm.fd.ioas_map(ioas, buf, 4 * PAGE_SIZE, iova=0x50_0000)
    dst = vmm.fd.ioas_copy(other, ioas, 0x50_1000, 2 * PAGE_SIZE, dst_iova=0x60_0000)
    assert dst == 0x60_0000
    (area,) = iopt_of(vmm.fd.ctx, other).area_list()
    (src_area,) = iopt_of(vmm.fd.ctx, ioas).area_list()
    assert area.pages is src_area.pages and area.start_byte == 0x1000
    assert vmm.task.user.locked_vm == 4  # one pin for both
    # the copy stays valid after the source is gone; a replace onto it shows it
    vmm.fd.ioas_unmap(ioas, 0x50_0000, 4 * PAGE_SIZE)
    new = vmm.vfio.attach_pt(other)
    assert new != hwpt
    assert maps_to(vmm, domain_of(vmm.fd.ctx, new), 0x60_0000, buf + 0x1000, 2 * PAGE_SIZE)


def test_bad_copies(vmm: Vmm) -> None:
    ioas, _ = attached(vmm)
    other = vmm.fd.ioas_alloc()
    buf = vmm.buffer(2 * PAGE_SIZE)
    vmm.fd.ioas_map(ioas, buf, 2 * PAGE_SIZE, iova=0x50_0000, flags=uapi.IOMMU_IOAS_MAP_READABLE)
    with pytest.raises(ENOENT):  # runs past the mapping
        vmm.fd.ioas_copy(other, ioas, 0x50_0000, 3 * PAGE_SIZE)
    with pytest.raises(EPERM):  # writable copy of a read-only mapping
        vmm.fd.ioas_copy(other, ioas, 0x50_0000, PAGE_SIZE)
    with pytest.raises(ENOENT):
        vmm.fd.ioas_copy(77, ioas, 0x50_0000, PAGE_SIZE, flags=uapi.IOMMU_IOAS_MAP_READABLE)
    with pytest.raises(EOPNOTSUPP):
        vmm.fd.ioas_copy(other, ioas, 0x50_0000, PAGE_SIZE, flags=1 << 5)
    with pytest.raises(EOVERFLOW):
        vmm.fd.ioas_copy(other, ioas, 0x50_0000, U64_MAX)
    assert iopt_of(vmm.fd.ctx, other).area_list() == []


def _ranges(
    vmm: Vmm, ioas: int, room: int
) -> tuple[int, uapi.iommu_ioas_iova_ranges, list[uapi.iommu_iova_range]]:
    arr = vmm.buffer(PAGE_SIZE)
    cmd = uapi.iommu_ioas_iova_ranges(ioas_id=ioas, num_iovas=room, allowed_iovas=arr)
    rc, out = raw(vmm.fd, uapi.IOMMU_IOAS_IOVA_RANGES, cmd)
    got = uapi.iommu_ioas_iova_ranges.from_bytes(out)
    size = uapi.iommu_iova_range.SIZE
    ranges = [
        uapi.iommu_iova_range.from_bytes(vmm.read(arr + i * size, size))
        for i in range(min(room, got.num_iovas))
    ]
    return rc, got, [(r.start, r.last) for r in ranges]


def test_iova_ranges_are_the_holes_around_reserved_regions_and_the_aperture(vmm: Vmm) -> None:
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    rc, got, ranges = _ranges(vmm, ioas, 8)
    assert rc == 0 and ranges == [(0, U64_MAX)] and got.out_iova_alignment == 1
    hwpt = vmm.vfio.attach_pt(ioas)
    rc, got, ranges = _ranges(vmm, ioas, 8)
    assert rc == 0 and got.out_iova_alignment == PAGE_SIZE
    aperture_end = domain_of(vmm.fd.ctx, hwpt).geometry.aperture_end
    holes, at = [], 0
    for r in sorted(dsa_resv_regions(), key=lambda r: r.start):
        if r.type == IOMMU_RESV_DIRECT_RELAXABLE:
            continue
        holes.append((at, r.start - 1))
        at = r.start + r.length
    holes.append((at, aperture_end))
    assert ranges == holes
    rc, got, ranges = _ranges(vmm, ioas, 1)
    assert rc == -EMSGSIZE.errno and got.num_iovas == len(holes) and ranges == holes[:1]


def test_allowed_ranges_bound_automatic_iovas(vmm: Vmm) -> None:
    ioas, _ = attached(vmm)
    arr = vmm.buffer(PAGE_SIZE)

    def allow(*ranges: tuple[int, int]) -> int:
        for i, (s, last) in enumerate(ranges):
            vmm.write(arr + 16 * i, uapi.iommu_iova_range(s, last).to_bytes())
        cmd = uapi.iommu_ioas_allow_iovas(ioas_id=ioas, num_iovas=len(ranges), allowed_iovas=arr)
        return raw(vmm.fd, uapi.IOMMU_IOAS_ALLOW_IOVAS, cmd)[0]

    base = 0x80_0000_0000
    assert allow((base, base + 2 * PAGE_SIZE - 1)) == 0
    assert vmm.fd.ioas_map(ioas, vmm.buffer(PAGE_SIZE), PAGE_SIZE) == base
    assert vmm.fd.ioas_map(ioas, vmm.buffer(PAGE_SIZE), PAGE_SIZE) == base + PAGE_SIZE
    with pytest.raises(ENOSPC):
        vmm.fd.ioas_map(ioas, vmm.buffer(PAGE_SIZE), PAGE_SIZE)
    # a fixed IOVA outside the allowed ranges is still the user's choice (upstream)
    assert vmm.fd.ioas_map(ioas, vmm.buffer(PAGE_SIZE), PAGE_SIZE, iova=0x10_0000) == 0x10_0000
    resv = next(r for r in dsa_resv_regions() if r.type != IOMMU_RESV_DIRECT_RELAXABLE)
    assert allow((resv.start, resv.start + PAGE_SIZE - 1)) == -EADDRINUSE.errno
    assert allow((0x2000, 0x1000)) == -EINVAL.errno


def test_attach_refused_when_a_reserved_region_is_already_mapped(vmm: Vmm) -> None:
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    resv = next(r for r in dsa_resv_regions() if r.type != IOMMU_RESV_DIRECT_RELAXABLE)
    vmm.fd.ioas_map(ioas, vmm.buffer(PAGE_SIZE), PAGE_SIZE, iova=resv.start)
    with pytest.raises(EADDRINUSE):
        vmm.vfio.attach_pt(ioas)
    hwpt = vmm.fd.hwpt_alloc(dev_id, ioas)  # allocating is fine: attach enforces regions
    with pytest.raises(EADDRINUSE):
        vmm.vfio.attach_pt(hwpt)
    vmm.fd.destroy(hwpt)
    assert iopt_of(vmm.fd.ctx, ioas).reserved == [] and not vmm.vfio.attached


def test_pins_are_charged_against_rlimit_memlock(vmm: Vmm) -> None:
    ioas, hwpt = attached(vmm)
    vmm.task.rlim[RLIMIT_MEMLOCK] = 4 * PAGE_SIZE
    vmm.fd.ioas_map(ioas, vmm.buffer(4 * PAGE_SIZE), 4 * PAGE_SIZE)
    late = vmm.buffer(PAGE_SIZE, 3)
    with pytest.raises(ENOMEM):
        vmm.fd.ioas_map(ioas, late, PAGE_SIZE, iova=0x70_0000)
    assert unmapped(domain_of(vmm.fd.ctx, hwpt), 0x70_0000, PAGE_SIZE)
    assert vmm.task.user.locked_vm == 4 and len(iopt_of(vmm.fd.ctx, ioas).area_list()) == 1
    page = Page(user_phys(vmm.task, late) >> PAGE_SHIFT)
    assert page_ref_count(page) == 1  # the pin was dropped with the charge
    vmm.task.caps = frozenset({CAP_IPC_LOCK})  # exempt: its pins are not charged
    vmm.fd.ioas_map(ioas, late, PAGE_SIZE, iova=0x70_0000)
    assert vmm.task.user.locked_vm == 4
    assert vmm.task.mm is not None and vmm.task.mm.pinned_vm == 5
