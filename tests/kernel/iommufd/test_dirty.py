"""Dirty tracking through iommufd on VT-d with second-stage A/D bits (ECAP.SLADS):
the dirty bitmap of a HWPT equals exactly the pages the DSA wrote, a report clears
what it reported (and the IOTLB, so the next write is seen again), NO_CLEAR keeps
it, and nothing is reported while tracking is off. The evidence is the D bits the
VT-d model sets in the second-stage leaves as the DSA's writes are translated.

SMMUv3 with HTTU dirty state (IDR0.HTTU=2): 6.12's driver maps writable pages with
DBM and its CDs with HA/HD; the bitmap is exactly the pages written, read from the
leaves the SMMU made writable-dirty. The preset SMMUv3 (no HTTU) refuses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from drivers.arm_smmu_v3.io_pgtable_arm import ARM_LPAE_PTE_AP_RDONLY, ARM_LPAE_PTE_DBM
from iommulab.vfio_dsa import VfioDsa
from kernel.errno import EINVAL, ENOENT, EOPNOTSUPP, EOVERFLOW
from kernel.iommufd.uapi_helpers import do_ioctl
from kernel.mm import PAGE_SIZE
from kernel.uapi import iommufd as uapi
from kernel.uapi.idxd import DSA_COMP_SUCCESS
from tests.kernel.iommufd.conftest import Vmm, boot_vendor

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations, KernelChecks

GUEST = 16 * PAGE_SIZE
SRC, DST, CR = 0x0000, 0x8000, 0xF000
DIRTY = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
SLADS = {"slads": True}
HTTU_DIRTY = {"httu": 2}


@pytest.fixture
def slads_vmm(iommulab_checks: KernelChecks) -> Iterator[Vmm]:
    k = iommulab_checks.track(boot_vendor("vtd", SLADS))
    with k:
        v = Vmm.start(k)
        yield v
        v.close()


@pytest.fixture
def httu_vmm(iommulab_checks: KernelChecks) -> Iterator[Vmm]:
    k = iommulab_checks.track(boot_vendor("smmuv3", HTTU_DIRTY))
    with k:
        v = Vmm.start(k)
        yield v
        v.close()


def set_tracking(vmm: Vmm, hwpt: int, on: bool) -> None:
    flags = uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE if on else 0
    cmd = uapi.iommu_hwpt_set_dirty_tracking(flags=flags, hwpt_id=hwpt)
    do_ioctl(vmm.fd, uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, cmd)


def dirty_pages(vmm: Vmm, hwpt: int, flags: int = 0) -> set[int]:
    """The pages (IOVA / 4 KiB) IOMMU_HWPT_GET_DIRTY_BITMAP reports over the guest."""
    bitmap = vmm.buffer(PAGE_SIZE)
    cmd = uapi.iommu_hwpt_get_dirty_bitmap(
        hwpt_id=hwpt, flags=flags, iova=0, length=GUEST, page_size=PAGE_SIZE, data=bitmap
    )
    do_ioctl(vmm.fd, uapi.IOMMU_HWPT_GET_DIRTY_BITMAP, cmd)
    word = int.from_bytes(vmm.read(bitmap, 8), "little")
    return {n for n in range(64) if word >> n & 1}


def written_by(dst: int, size: int) -> set[int]:
    """Pages a memmove of ``size`` bytes to ``dst`` writes: its destination and the
    completion record's page."""
    return set(range(dst // PAGE_SIZE, (dst + size - 1) // PAGE_SIZE + 1)) | {CR // PAGE_SIZE}


def started(vmm: Vmm) -> tuple[int, int, VfioDsa]:
    """The guest mapped at IOVA 0, a dirty-tracking HWPT attached, the DSA enabled."""
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    guest = vmm.buffer(GUEST, 5)
    vmm.fd.ioas_map(ioas, guest, GUEST, iova=0)
    hwpt = vmm.fd.hwpt_alloc(dev_id, ioas, flags=DIRTY)
    vmm.vfio.attach_pt(hwpt)
    dsa = VfioDsa.open(vmm.vfio, vmm.task)
    dsa.enable()
    return guest, hwpt, dsa


def move(dsa: VfioDsa, guest: int, dst: int, size: int) -> None:
    assert dsa.memmove(SRC, dst, size, CR, guest + CR).status == DSA_COMP_SUCCESS


def test_the_bitmap_is_exactly_the_pages_the_device_wrote(slads_vmm: Vmm) -> None:
    vmm = slads_vmm
    guest, hwpt, dsa = started(vmm)
    with pytest.raises(EINVAL):  # no report while tracking is off
        dirty_pages(vmm, hwpt)
    move(dsa, guest, DST, 3 * PAGE_SIZE + 100)  # written before tracking: not reported
    set_tracking(vmm, hwpt, True)
    assert dirty_pages(vmm, hwpt) == set()
    move(dsa, guest, DST + 0x800, 2 * PAGE_SIZE)
    assert dirty_pages(vmm, hwpt) == written_by(DST + 0x800, 2 * PAGE_SIZE) == {8, 9, 10, 15}
    assert dirty_pages(vmm, hwpt) == set()  # the report cleared them
    # the same pages again: seen again, because the report flushed the cached translations
    move(dsa, guest, DST + 0x800, 2 * PAGE_SIZE)
    assert dirty_pages(vmm, hwpt) == {8, 9, 10, 15}
    dsa.disable()


def test_no_clear_keeps_the_bits_and_disabling_stops_tracking(slads_vmm: Vmm) -> None:
    vmm = slads_vmm
    guest, hwpt, dsa = started(vmm)
    set_tracking(vmm, hwpt, True)
    move(dsa, guest, 0x3000, PAGE_SIZE)
    keep = uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
    assert dirty_pages(vmm, hwpt, keep) == dirty_pages(vmm, hwpt, keep) == {3, 15}
    assert dirty_pages(vmm, hwpt) == {3, 15}
    assert dirty_pages(vmm, hwpt) == set()
    set_tracking(vmm, hwpt, False)
    move(dsa, guest, 0x5000, PAGE_SIZE)  # SSADE is off: the walk sets no D bit
    set_tracking(vmm, hwpt, True)
    assert dirty_pages(vmm, hwpt) == set()
    dsa.disable()


def test_bad_dirty_requests(slads_vmm: Vmm) -> None:
    vmm = slads_vmm
    guest, hwpt, dsa = started(vmm)
    dsa.disable()
    set_tracking(vmm, hwpt, True)

    def get(**kw: int) -> int:
        args = {"hwpt_id": hwpt, "iova": 0, "length": GUEST, "page_size": PAGE_SIZE}
        args["data"] = guest + CR
        args |= kw
        cmd = uapi.iommu_hwpt_get_dirty_bitmap(size=48, **args)
        return vmm.fd.ioctl(uapi.IOMMU_HWPT_GET_DIRTY_BITMAP, cmd.to_bytes())[0]

    assert get() == 0
    assert get(flags=2) == -EOPNOTSUPP.errno
    assert get(reserved=1) == -EOPNOTSUPP.errno
    assert get(hwpt_id=99) == -ENOENT.errno
    assert get(iova=0x800) == -EINVAL.errno
    assert get(page_size=0) == -EINVAL.errno
    assert get(iova=PAGE_SIZE, length=2 * PAGE_SIZE, page_size=2 * PAGE_SIZE) == -EINVAL.errno
    assert get(length=3 * PAGE_SIZE, page_size=2 * PAGE_SIZE) == -EINVAL.errno
    assert get(iova=(1 << 64) - PAGE_SIZE, length=2 * PAGE_SIZE) == -EOVERFLOW.errno

    def put(**kw: int) -> int:
        cmd = uapi.iommu_hwpt_set_dirty_tracking(size=16, **({"hwpt_id": hwpt} | kw))
        return vmm.fd.ioctl(uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, cmd.to_bytes())[0]

    assert put(flags=2) == -EOPNOTSUPP.errno
    assert put(reserved=1) == -EOPNOTSUPP.errno
    assert put(hwpt_id=99) == -ENOENT.errno
    plain = vmm.fd.hwpt_alloc(1, 2)  # no DIRTY_TRACKING: no dirty ops
    assert put(hwpt_id=plain, flags=1) == -EOPNOTSUPP.errno
    assert get(hwpt_id=plain) == -EOPNOTSUPP.errno


def test_units_without_dirty_state_refuse_dirty_tracking_hwpts(vmm: Vmm) -> None:
    """The default VT-d unit (ECAP.SLADS=0) and the preset SMMUv3 (no HTTU): EOPNOTSUPP, and
    GET_HW_INFO does not advertise IOMMU_HW_CAP_DIRTY_TRACKING."""
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    with pytest.raises(EOPNOTSUPP):
        vmm.fd.hwpt_alloc(dev_id, ioas, flags=DIRTY)
    out = do_ioctl(vmm.fd, uapi.IOMMU_GET_HW_INFO, uapi.iommu_hw_info(dev_id=dev_id))
    assert not uapi.iommu_hw_info.from_bytes(out).out_capabilities & (
        uapi.IOMMU_HW_CAP_DIRTY_TRACKING
    )


def test_a_slads_unit_advertises_dirty_tracking(slads_vmm: Vmm) -> None:
    dev_id = slads_vmm.vfio.bind_iommufd(slads_vmm.fd.ctx)
    out = do_ioctl(slads_vmm.fd, uapi.IOMMU_GET_HW_INFO, uapi.iommu_hw_info(dev_id=dev_id))
    caps = uapi.iommu_hw_info.from_bytes(out).out_capabilities
    assert caps & uapi.IOMMU_HW_CAP_DIRTY_TRACKING


def test_a_device_replaced_onto_a_tracking_hwpt_is_tracked(slads_vmm: Vmm) -> None:
    """Tracking switched on before any device is attached: the PASID entry written
    at replace time carries SSADE, so the device's writes are reported."""
    vmm = slads_vmm
    dev_id = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    guest = vmm.buffer(GUEST, 5)
    vmm.fd.ioas_map(ioas, guest, GUEST, iova=0)
    vmm.vfio.attach_pt(ioas)  # an auto domain without dirty tracking
    hwpt = vmm.fd.hwpt_alloc(dev_id, ioas, flags=DIRTY)
    set_tracking(vmm, hwpt, True)
    vmm.vfio.attach_pt(hwpt)  # replace
    dsa = VfioDsa.open(vmm.vfio, vmm.task)
    dsa.enable()
    move(dsa, guest, 0x6000, PAGE_SIZE)
    assert dirty_pages(vmm, hwpt) == {6, 15}
    dsa.disable()


def leaf_of(vmm: Vmm, hwpt: int, iova: int) -> int:
    domain = vmm.fd.ctx.objects[hwpt].domain  # type: ignore[union-attr]
    return int([e for _, _, e in domain.pgtbl_ops.walk(iova)][-1])


def test_smmuv3_bitmap_is_exactly_the_pages_the_device_wrote(httu_vmm: Vmm) -> None:
    """6.12's SMMUv3 leaves HD on whatever tracking says (``arm_smmu_set_dirty_tracking``
    does nothing): what enabling does is clear first. The SMMU turns the DBM leaves
    the DSA writes writable-dirty (AP[2] cleared); a report finds exactly those and
    makes them writable-clean again; NO_CLEAR keeps them."""
    vmm = httu_vmm
    guest, hwpt, dsa = started(vmm)
    clean = leaf_of(vmm, hwpt, DST)
    assert clean & ARM_LPAE_PTE_DBM and not clean & ARM_LPAE_PTE_AP_RDONLY  # writable-dirty
    set_tracking(vmm, hwpt, True)
    assert dirty_pages(vmm, hwpt) == set()
    assert leaf_of(vmm, hwpt, DST) & ARM_LPAE_PTE_AP_RDONLY  # cleared: writable-clean
    move(dsa, guest, DST + 0x800, 2 * PAGE_SIZE)
    keep = uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
    assert dirty_pages(vmm, hwpt, keep) == written_by(DST + 0x800, 2 * PAGE_SIZE)
    assert dirty_pages(vmm, hwpt) == {8, 9, 10, 15}
    assert dirty_pages(vmm, hwpt) == set()
    assert leaf_of(vmm, hwpt, DST) & ARM_LPAE_PTE_AP_RDONLY
    dsa.disable()


def test_smmuv3_6_12_misses_a_rewrite_after_a_report(
    httu_vmm: Vmm, iommulab_expect: Expectations
) -> None:
    """iommufd syncs the gather the report filled, but it carries no page size, and
    ``arm_smmu_iotlb_sync`` returns at once for a gather without one (6.12): the SMMU
    keeps the writable entries it cached, so a rewrite of a reported page marks
    nothing dirty. The model reports the write through the stale writable entry."""
    iommulab_expect.stale()
    vmm = httu_vmm
    guest, hwpt, dsa = started(vmm)
    set_tracking(vmm, hwpt, True)
    move(dsa, guest, 0x3000, PAGE_SIZE)
    assert dirty_pages(vmm, hwpt) == {3, 15}
    move(dsa, guest, 0x3000, PAGE_SIZE)
    assert dirty_pages(vmm, hwpt) == set()
    dsa.disable()
