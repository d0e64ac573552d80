"""fail_nth over each iommufd operation, as upstream's ``iommufd_fail_nth``: for
n = 1, 2, ... the n-th allocation inside the operation fails (kmalloc, xa_alloc,
pin_user_pages, page-table pages, IDs ...), until a run passes none. Every
injected failure must come back as an errno and leave the file exactly as it was
(or, for a page fault under a partial pin, be retried past as upstream does):
the same objects with the same user counts, the same areas, reservations and
allowed ranges, the same pinned-page charge (``locked_vm``, ``pinned_vm``) and
page pins, the same translations in every
domain and the same group/PASID attachment. After each run the file is closed and
no allocation of the kernel may be left over (and no WARN raised).

One pytest item per operation and vendor walks all of its points (the setup of
each run is not armed). Departure from DESIGN's one-item-per-point sweeps: the
points are counted at run time, not at collection, to keep collection free of
booting kernels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from kernel.boot import Kernel
from kernel.errno import KernelError
from kernel.fault_inject import injector
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.iommu.pasid import iommu_get_domain_for_dev_pasid
from kernel.iommufd.hw_pagetable import IommufdHwptPaging
from kernel.iommufd.ioas import IommufdIoas
from kernel.iommufd.uapi_helpers import do_ioctl
from kernel.mm import PAGE_SHIFT, PAGE_SIZE, Page
from kernel.page_ref import page_ref_count
from kernel.uapi import iommufd as uapi
from tests.kernel.iommufd.conftest import Vmm, boot_vendor, pdev
from tests.kernel.iommufd.helpers import user_phys

SZ_2M = 1 << 21
SZ_16K = 4 * 4096
BASE = 0x40_0000
PASID = 3

State = dict[str, Any]
Op = Callable[[Vmm, State], object]


def _bound(vmm: Vmm, st: State) -> None:
    st["dev"] = vmm.vfio.bind_iommufd(vmm.fd.ctx)
    st["ioas"] = vmm.fd.ioas_alloc()
    st["user"] = vmm.buffer(PAGE_SIZE, 0)  # touched: user copies fault nothing in


def _mapped(vmm: Vmm, st: State) -> None:
    _bound(vmm, st)
    vmm.fd.ioas_map(st["ioas"], st["user"], PAGE_SIZE, iova=BASE)


def _attached(vmm: Vmm, st: State) -> None:
    _bound(vmm, st)
    st["buf"] = vmm.buffer(8 * PAGE_SIZE, 1)
    st["fresh"] = vmm.buffer(4 * PAGE_SIZE)  # never touched: pinning faults it in
    vmm.fd.ioas_map(st["ioas"], st["buf"], 4 * PAGE_SIZE, iova=BASE)
    st["hwpt"] = vmm.vfio.attach_pt(st["ioas"])


def _attached_small_pages(vmm: Vmm, st: State) -> None:
    _bound(vmm, st)
    st["buf"] = vmm.buffer(8 * PAGE_SIZE, 1)
    vmm.fd.option(uapi.IOMMU_OPTION_HUGE_PAGES, uapi.IOMMU_OPTION_OP_SET, 0, st["ioas"])
    st["hwpt"] = vmm.vfio.attach_pt(st["ioas"])


def _two_ioas(vmm: Vmm, st: State) -> None:
    _attached(vmm, st)
    st["ioas2"] = vmm.fd.ioas_alloc()
    st["hwpt2"] = vmm.fd.hwpt_alloc(st["dev"], st["ioas2"], flags=uapi.IOMMU_HWPT_ALLOC_PASID)


def _allow(vmm: Vmm, st: State) -> object:
    arr = st["user"]
    vmm.write(arr, uapi.iommu_iova_range(BASE, BASE + SZ_2M - 1).to_bytes())
    cmd = uapi.iommu_ioas_allow_iovas(
        size=uapi.iommu_ioas_allow_iovas.SIZE, ioas_id=st["ioas"], num_iovas=1, allowed_iovas=arr
    )
    return do_ioctl(vmm.fd, uapi.IOMMU_IOAS_ALLOW_IOVAS, cmd)


def _hw_info(vmm: Vmm, st: State) -> object:
    cmd = uapi.iommu_hw_info(dev_id=st["dev"], data_len=64, data_uptr=st["user"])
    return do_ioctl(vmm.fd, uapi.IOMMU_GET_HW_INFO, cmd)


SCENARIOS: dict[str, tuple[Callable[[Vmm, State], None], Op]] = {
    "bind": (lambda v, s: None, lambda v, s: v.vfio.bind_iommufd(v.fd.ctx)),
    "ioas_alloc": (_bound, lambda v, s: v.fd.ioas_alloc()),
    "ioas_map": (
        _attached,
        lambda v, s: v.fd.ioas_map(s["ioas"], s["buf"], 8 * PAGE_SIZE, iova=BASE + SZ_2M - SZ_16K),
    ),
    "ioas_map_small_pages": (
        _attached_small_pages,
        lambda v, s: v.fd.ioas_map(s["ioas"], s["buf"], 8 * PAGE_SIZE, iova=BASE + SZ_2M - SZ_16K),
    ),
    "ioas_map_faulting": (
        _attached,
        lambda v, s: v.fd.ioas_map(s["ioas"], s["fresh"], 4 * PAGE_SIZE, iova=BASE + SZ_2M),
    ),
    "ioas_map_auto": (_attached, lambda v, s: v.fd.ioas_map(s["ioas"], s["buf"], 8 * PAGE_SIZE)),
    "ioas_unmap": (_attached, lambda v, s: v.fd.ioas_unmap(s["ioas"], BASE, 4 * PAGE_SIZE)),
    "ioas_copy": (
        _two_ioas,
        lambda v, s: v.fd.ioas_copy(s["ioas2"], s["ioas"], BASE, 4 * PAGE_SIZE, dst_iova=BASE),
    ),
    "allow_iovas": (_bound, _allow),
    "hwpt_alloc": (_attached, lambda v, s: v.fd.hwpt_alloc(s["dev"], s["ioas"])),
    "attach_auto": (_mapped, lambda v, s: v.vfio.attach_pt(s["ioas"])),
    "replace": (_two_ioas, lambda v, s: v.vfio.attach_pt(s["hwpt2"])),
    "pasid_attach": (_two_ioas, lambda v, s: v.vfio.attach_pt(s["hwpt2"], pasid=PASID)),
    "get_hw_info": (_bound, _hw_info),
}


def snapshot(vmm: Vmm) -> State:
    """What an injected failure must leave unchanged."""
    ctx = vmm.fd.ctx
    out: State = {
        "objects": sorted((i, type(o).__name__, o.users) for i, o in ctx.objects.items() if o),
        "reserved_ids": sorted(i for i, o in ctx.objects.items() if o is None),
        "locked_vm": vmm.task.user.locked_vm,
        "pinned_vm": vmm.task.mm.pinned_vm if vmm.task.mm else None,
        "page_refs": user_page_refs(vmm),
        "rid": iommu_get_domain_for_dev(pdev()),
        "pasid": iommu_get_domain_for_dev_pasid(pdev(), PASID),
    }
    for i, o in ctx.objects.items():
        if isinstance(o, IommufdIoas):
            iopt = o.iopt
            out[f"ioas{i}"] = (
                [(a.iova, a.length, a.filled, a.pages.pin_users) for a in iopt.area_list()],
                [(r.start, r.last) for r in iopt.reserved],
                list(iopt.allowed),
                len(iopt.domains),
                iopt.iova_alignment,
            )
        if isinstance(o, IommufdHwptPaging) and o.domain is not None:
            dom = o.domain
            out[f"hwpt{i}"] = [
                iommu_iova_to_phys(dom, BASE + off) for off in range(0, 2 * SZ_2M, PAGE_SIZE)
            ]
    return out


def user_page_refs(vmm: Vmm) -> list[tuple[int, int]]:
    """The pages the process maps that hold more than their mapping's reference,
    with the count (a pin shows as GUP_PIN_COUNTING_BIAS more); pages the process
    merely touched do not count."""
    mm = vmm.task.mm
    assert mm is not None
    out = []
    for vma in mm.vmas():
        for va in range(vma.vm_start, vma.vm_end, PAGE_SIZE):
            phys = user_phys(vmm.task, va)
            refs = page_ref_count(Page(phys >> PAGE_SHIFT)) if phys else 1
            if refs != 1:
                out.append((va, refs))
    return out


def _live(k: Kernel) -> Counter[tuple[str, int, str]]:
    """Live allocations by kind, size and site (an attachment moving back and forth
    may free one record and allocate its twin elsewhere: not a leak)."""
    return Counter((a.kind, a.size, a.site) for a in k.mm.live())


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_injected_failure_returns_an_errno_and_leaves_nothing(
    scenario: str, vendor: str
) -> None:
    setup, op = SCENARIOS[scenario]
    points = sweep(boot_vendor(vendor), setup, op)
    # unmap allocates nothing; SMMUv3 in 6.12 has no hw_info op to allocate
    assert bool(points) != (
        scenario == "ioas_unmap" or f"{vendor}-{scenario}" == "smmuv3-get_hw_info"
    )


def _dirty_hwpt(vmm: Vmm, st: State) -> None:
    _bound(vmm, st)
    st["buf"] = vmm.buffer(8 * PAGE_SIZE, 1)
    vmm.fd.ioas_map(st["ioas"], st["buf"], 8 * PAGE_SIZE, iova=BASE)
    st["hwpt"] = vmm.fd.hwpt_alloc(st["dev"], st["ioas"], flags=DIRTY)
    vmm.vfio.attach_pt(st["hwpt"])


def _tracking(vmm: Vmm, st: State) -> None:
    _dirty_hwpt(vmm, st)
    _set_tracking(vmm, st, True)


def _set_tracking(vmm: Vmm, st: State, on: bool) -> object:
    cmd = uapi.iommu_hwpt_set_dirty_tracking(
        flags=uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE if on else 0, hwpt_id=st["hwpt"]
    )
    return do_ioctl(vmm.fd, uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, cmd)


def _get_bitmap(vmm: Vmm, st: State) -> object:
    cmd = uapi.iommu_hwpt_get_dirty_bitmap(
        hwpt_id=st["hwpt"], iova=BASE, length=8 * PAGE_SIZE, page_size=PAGE_SIZE, data=st["user"]
    )
    return do_ioctl(vmm.fd, uapi.IOMMU_HWPT_GET_DIRTY_BITMAP, cmd)


DIRTY = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
DIRTY_SCENARIOS: dict[str, tuple[Callable[[Vmm, State], None], Op]] = {
    "hwpt_alloc_dirty": (_attached, lambda v, s: v.fd.hwpt_alloc(s["dev"], s["ioas"], DIRTY)),
    "set_dirty_tracking": (_dirty_hwpt, lambda v, s: _set_tracking(v, s, True)),
    "get_dirty_bitmap": (_tracking, _get_bitmap),
}


DIRTY_UNITS: dict[str, dict[str, object]] = {"vtd": {"slads": True}, "smmuv3": {"httu": 2}}


@pytest.mark.parametrize("unit", sorted(DIRTY_UNITS))
@pytest.mark.parametrize("scenario", sorted(DIRTY_SCENARIOS))
def test_dirty_tracking_failures_unwind(scenario: str, unit: str) -> None:
    """The same over the dirty-tracking ioctls, on a VT-d unit with ECAP.SLADS and an
    SMMUv3 with HTTU dirty state."""
    setup, op = DIRTY_SCENARIOS[scenario]
    points = sweep(boot_vendor(unit, DIRTY_UNITS[unit]), setup, op)
    # switching tracking on allocates nothing (VT-d edits PASID entries and queues
    # invalidations; SMMUv3 clears DBM leaves), so only its clean run is checked
    assert bool(points) != (scenario == "set_dirty_tracking")


def sweep(k: Kernel, setup: Callable[[Vmm, State], None], op: Op) -> int:
    """Run ``op`` after ``setup`` failing its n-th allocation for n = 1, 2, ... until
    a run passes none; check each run; shut ``k`` down. Returns the points failed."""
    inj = injector()
    points = 0
    try:
        with k:
            for n in range(1, 400):
                live = _live(k)
                vmm = Vmm.start(k)
                st: State = {}
                setup(vmm, st)
                before = snapshot(vmm)
                error: KernelError | None = None
                inj.arm(n)
                try:
                    op(vmm, st)
                except KernelError as exc:
                    error = exc
                finally:
                    site = inj.injected_at
                    inj.disarm()
                if site is None:
                    assert error is None, f"the clean run failed: {error!r}"
                else:
                    points += 1
                    if error is None:
                        # retried past: a fault that failed after a partial pin is
                        # faulted again by the next pin call, as upstream's pfn_reader
                        # does; nothing but a page fault may be absorbed this way
                        assert site == "alloc_pages", f"point {n} ({site}) failed silently"
                    else:
                        assert snapshot(vmm) == before, f"point {n} ({site}) left state behind"
                vmm.close()
                left = _live(k) - live
                assert not left, f"point {n} ({site}): leaked {sorted(left.elements())}"
                assert not k.warnings(), f"point {n} ({site}): {k.warnings()}"
                if site is None:
                    return points
            raise AssertionError("the sweep did not end")
    finally:
        inj.disarm()
        k.activate()
        k.shutdown()
