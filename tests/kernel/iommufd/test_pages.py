"""User memory behind an IOAS (pages.c over mm/gup.c), on VT-d and SMMUv3: the VMM
process's anonymous memory is faulted in and pinned by IOMMU_IOAS_MAP once a
domain needs it, stays allocated while pinned even when the process unmaps it or
exits, and is charged to the user's (or, with IOMMU_OPTION_RLIMIT_MODE, the mm's)
locked memory against RLIMIT_MEMLOCK. Bad user pointers are EFAULT, as GUP answers.

The evidence is the process's page tables, each page's reference count (a pin is
GUP_PIN_COUNTING_BIAS), the page allocator and the DSA's DMA."""

from __future__ import annotations

import pytest

from iommulab.vfio_dsa import VfioDsa
from kernel.errno import EFAULT, ENOMEM
from kernel.iommu.iommu_map import iommu_iova_to_phys
from kernel.mm import PAGE_SHIFT, PAGE_SIZE, Page, current_mm
from kernel.mmap import PROT_READ
from kernel.page_ref import GUP_PIN_COUNTING_BIAS, page_maybe_dma_pinned, page_ref_count
from kernel.sched import RLIMIT_MEMLOCK, do_exit
from kernel.uapi import iommufd as uapi
from kernel.uapi.idxd import DSA_COMP_SUCCESS
from tests.kernel.iommufd.conftest import Vmm
from tests.kernel.iommufd.helpers import domain_of, iopt_of, maps_to, unmapped, user_phys

N = 4
SIZE = N * PAGE_SIZE
IOVA = 0x40_0000
RO = uapi.IOMMU_IOAS_MAP_READABLE


def attached(vmm: Vmm) -> tuple[int, int]:
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    return ioas, vmm.vfio.attach_pt(ioas)


def pages_of(vmm: Vmm, uptr: int, npages: int = N) -> list[Page]:
    out = []
    for i in range(npages):
        phys = user_phys(vmm.task, uptr + i * PAGE_SIZE)
        assert phys, f"page {i} is not mapped by the process"
        out.append(Page(phys >> PAGE_SHIFT))
    return out


def allocated(page: Page) -> bool:
    return page.pfn in current_mm().pages


def test_map_faults_untouched_memory_in_and_pins_it(vmm: Vmm) -> None:
    ioas, hwpt = attached(vmm)
    buf = vmm.buffer(SIZE)
    assert all(user_phys(vmm.task, buf + i * PAGE_SIZE) == 0 for i in range(N))  # demand-zero
    vmm.fd.ioas_map(ioas, buf, SIZE, iova=IOVA)
    pages = pages_of(vmm, buf)
    assert [page_ref_count(p) for p in pages] == [1 + GUP_PIN_COUNTING_BIAS] * N
    assert all(page_maybe_dma_pinned(p) for p in pages)
    assert maps_to(vmm, domain_of(vmm.fd.ctx, hwpt), IOVA, buf, SIZE)
    assert vmm.task.user.locked_vm == N
    assert vmm.task.mm is not None and vmm.task.mm.pinned_vm == N
    assert vmm.fd.ioas_unmap(ioas, IOVA, SIZE) == SIZE
    assert [page_ref_count(p) for p in pages] == [1] * N
    assert vmm.task.user.locked_vm == 0 and vmm.task.mm.pinned_vm == 0


def test_nothing_is_pinned_until_a_domain_needs_the_pages(vmm: Vmm) -> None:
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    buf = vmm.buffer(SIZE)
    vmm.fd.ioas_map(ioas, buf, SIZE, iova=IOVA)
    assert user_phys(vmm.task, buf) == 0 and vmm.task.user.locked_vm == 0
    vmm.vfio.attach_pt(ioas)  # the attach pins them, from the process's mm
    assert all(page_maybe_dma_pinned(p) for p in pages_of(vmm, buf))


def test_munmap_keeps_pinned_pages_until_ioas_unmap(vmm: Vmm) -> None:
    """The process unmaps memory the device still reaches: the pages lose the
    mapping's reference only, DMA keeps landing in them, and IOMMU_IOAS_UNMAP
    gives them back to the allocator."""
    ioas, hwpt = attached(vmm)
    src, dst, cr = vmm.buffer(SIZE, 3), vmm.buffer(SIZE), vmm.buffer(PAGE_SIZE, 0)
    vmm.fd.ioas_map(ioas, src, SIZE, iova=IOVA)
    vmm.fd.ioas_map(ioas, dst, SIZE, iova=2 * IOVA)
    vmm.fd.ioas_map(ioas, cr, PAGE_SIZE, iova=3 * IOVA)
    pages = pages_of(vmm, dst)
    vmm.munmap(dst, SIZE)
    assert user_phys(vmm.task, dst) == 0
    assert all(allocated(p) and page_ref_count(p) == GUP_PIN_COUNTING_BIAS for p in pages)
    dom = domain_of(vmm.fd.ctx, hwpt)
    assert [iommu_iova_to_phys(dom, 2 * IOVA + i * PAGE_SIZE) for i in range(N)] == [
        p.phys for p in pages
    ]
    dsa = VfioDsa.open(vmm.vfio, vmm.task)
    dsa.enable()
    assert dsa.memmove(IOVA, 2 * IOVA, SIZE, 3 * IOVA, cr).status == DSA_COMP_SUCCESS
    mem = current_mm()
    assert b"".join(mem.mem.read(p.phys, PAGE_SIZE) for p in pages) == vmm.read(src, SIZE)
    dsa.disable()
    assert vmm.fd.ioas_unmap(ioas, 2 * IOVA, SIZE) == SIZE
    assert not any(allocated(p) for p in pages)  # the unpin freed them
    assert vmm.task.user.locked_vm == N + 1


def test_a_process_exit_leaves_pinned_pages_to_the_iommufd(vmm: Vmm) -> None:
    """``do_exit`` tears the address space down before the files close: pinned pages
    survive ``exit_mmap`` and are freed when the iommufd's release unpins them."""
    ioas, _ = attached(vmm)
    buf = vmm.buffer(SIZE, 1)
    vmm.fd.ioas_map(ioas, buf, SIZE, iova=IOVA)
    pages = pages_of(vmm, buf)
    task = vmm.task
    do_exit(task)  # exit_mm: the mm is gone, the pins are not
    assert task.mm is None and all(allocated(p) for p in pages)
    vmm.vfio.close()
    vmm.fd.close()
    assert not any(allocated(p) for p in pages)
    assert task.user.locked_vm == 0


def test_a_domain_filled_after_the_process_exited_is_efault(vmm: Vmm) -> None:
    """Pages mapped into an IOAS with no domain yet are pinned at attach time, from
    the mm they came from (``pin_user_pages_remote``): once that address space is
    gone the attach fails with EFAULT and leaves nothing."""
    vmm.vfio.bind_iommufd(vmm.fd.ctx)
    ioas = vmm.fd.ioas_alloc()
    vmm.fd.ioas_map(ioas, vmm.buffer(SIZE, 1), SIZE, iova=IOVA)
    mm = vmm.task.mm
    vmm.task.mm = None  # exit_mm by hand: the iommufd stays usable from the test
    assert mm is not None
    from kernel.fork import mmput

    mmput(mm)
    with pytest.raises(EFAULT):
        vmm.vfio.attach_pt(ioas)
    assert not vmm.vfio.attached and not iopt_of(vmm.fd.ctx, ioas).area_list()[0].filled
    vmm.vfio.close()
    vmm.fd.close()  # the pages object lets go of the mm struct
    assert mm.mm_count == 0


@pytest.mark.parametrize("hole", ["all", "tail"])
def test_an_unmapped_user_va_is_efault_and_pins_nothing(vmm: Vmm, hole: str) -> None:
    ioas, hwpt = attached(vmm)
    buf = vmm.buffer(2 * SIZE, 7)
    if hole == "all":
        vmm.munmap(buf, 2 * SIZE)
    else:  # the first pages are there, the range runs into a hole
        vmm.munmap(buf + SIZE, SIZE)
    with pytest.raises(EFAULT):
        vmm.fd.ioas_map(ioas, buf, 2 * SIZE, iova=IOVA)
    assert unmapped(domain_of(vmm.fd.ctx, hwpt), IOVA, 2 * SIZE)
    assert not iopt_of(vmm.fd.ctx, ioas).area_list() and vmm.task.user.locked_vm == 0
    if hole == "tail":
        assert [page_ref_count(p) for p in pages_of(vmm, buf)] == [1] * N


def test_read_only_memory_can_be_mapped_only_read_only(vmm: Vmm) -> None:
    """GUP refuses FOLL_WRITE on a VMA without VM_WRITE: a writable map of read-only
    memory is EFAULT; a read-only map of it pins it (faulting it in if untouched)."""
    ioas, hwpt = attached(vmm)
    ro = vmm.buffer(SIZE, prot=PROT_READ)
    with pytest.raises(EFAULT):
        vmm.fd.ioas_map(ioas, ro, SIZE, iova=IOVA)
    assert not iopt_of(vmm.fd.ctx, ioas).area_list()
    vmm.fd.ioas_map(ioas, ro, SIZE, iova=IOVA, flags=RO)
    assert all(page_maybe_dma_pinned(p) for p in pages_of(vmm, ro))
    assert maps_to(vmm, domain_of(vmm.fd.ctx, hwpt), IOVA, ro, SIZE)


def test_rlimit_mode_charges_the_mm_instead_of_the_user(vmm: Vmm) -> None:
    """IOMMU_OPTION_RLIMIT_MODE 1 (VFIO's accounting): pins are charged to
    ``mm->locked_vm`` against the same RLIMIT_MEMLOCK; the user's count is left
    alone; ``mm->pinned_vm`` counts them in both modes."""
    opt = uapi.IOMMU_OPTION_RLIMIT_MODE
    vmm.fd.option(opt, uapi.IOMMU_OPTION_OP_SET, 1)
    ioas, _ = attached(vmm)
    mm = vmm.task.mm
    assert mm is not None
    vmm.task.rlim[RLIMIT_MEMLOCK] = (N + 1) * PAGE_SIZE
    vmm.fd.ioas_map(ioas, vmm.buffer(SIZE), SIZE, iova=IOVA)
    assert (mm.locked_vm, mm.pinned_vm, vmm.task.user.locked_vm) == (N, N, 0)
    with pytest.raises(ENOMEM):
        vmm.fd.ioas_map(ioas, vmm.buffer(2 * PAGE_SIZE), 2 * PAGE_SIZE, iova=2 * IOVA)
    assert (mm.locked_vm, mm.pinned_vm) == (N, N)
    vmm.fd.ioas_unmap(ioas, IOVA, SIZE)
    assert (mm.locked_vm, mm.pinned_vm) == (0, 0)


def test_a_copy_shares_the_pin_and_the_charge(vmm: Vmm) -> None:
    ioas, _ = attached(vmm)
    other = vmm.fd.ioas_alloc()
    vmm.fd.hwpt_alloc(1, other)
    buf = vmm.buffer(SIZE, 2)
    vmm.fd.ioas_map(ioas, buf, SIZE, iova=IOVA)
    vmm.fd.ioas_copy(other, ioas, IOVA, SIZE, dst_iova=IOVA)
    assert [page_ref_count(p) for p in pages_of(vmm, buf)] == [1 + GUP_PIN_COUNTING_BIAS] * N
    assert vmm.task.user.locked_vm == N
