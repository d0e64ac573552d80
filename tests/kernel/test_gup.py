"""mm/gup.c's pinning on the process model: pins fault pages in as the access
needs, count in each page's reference, survive munmap, and refuse what GUP
refuses (no VMA, wrong permission, device memory, a caller's FOLL_PIN)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iommulab.pytest_plugin import KernelChecks
from kernel.boot import Kernel
from kernel.errno import EFAULT, EINVAL, ENOMEM
from kernel.fault_inject import injector
from kernel.fs import ksys_mmap
from kernel.gup import (
    FOLL_LONGTERM,
    FOLL_NOFAULT,
    FOLL_PIN,
    FOLL_WRITE,
    pin_user_pages_fast,
    pin_user_pages_remote,
    unpin_user_pages,
)
from kernel.memory import remap_pfn_range
from kernel.mm import PAGE_SIZE, Page, current_mm
from kernel.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, do_munmap, vma_lookup
from kernel.page_ref import GUP_PIN_COUNTING_BIAS, page_maybe_dma_pinned, page_ref_count
from kernel.pgtable import _PAGE_RW, pte_pfn_phys
from kernel.sched import TaskStruct, do_exit, use_task, user_process_create
from kernel.uaccess import copy_to_user
from tests.kernel.iommufd.conftest import boot_vendor

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


@pytest.fixture
def proc(iommulab_checks: KernelChecks) -> Iterator[tuple[Kernel, TaskStruct]]:
    k = iommulab_checks.track(boot_vendor("vtd"))
    with k:
        task = user_process_create("gup")
        yield k, task
        do_exit(task)


def phys_of(task: TaskStruct, va: int) -> int:
    assert task.mm is not None
    hit = task.mm.pgd.walk(va)
    return 0 if hit is None else pte_pfn_phys(hit[0], hit[1], va)


def test_pins_fault_in_and_outlive_munmap(proc: tuple[Kernel, TaskStruct]) -> None:
    _, task = proc
    buf = ksys_mmap(task, 0, 4 * PAGE_SIZE, RW, ANON, -1)
    pages: list[Page] = []
    with use_task(task):
        assert pin_user_pages_fast(buf, 4, FOLL_WRITE | FOLL_LONGTERM, pages) == 4
    assert [p.phys for p in pages] == [phys_of(task, buf + i * PAGE_SIZE) for i in range(4)]
    assert all(page_ref_count(p) == 1 + GUP_PIN_COUNTING_BIAS for p in pages)
    assert task.mm is not None
    do_munmap(task.mm, buf, 4 * PAGE_SIZE)
    assert all(page_maybe_dma_pinned(p) and p.pfn in current_mm().pages for p in pages)
    unpin_user_pages(pages)
    assert not any(p.pfn in current_mm().pages for p in pages)


def test_a_pin_stops_at_a_hole_after_its_first_page(proc: tuple[Kernel, TaskStruct]) -> None:
    _, task = proc
    buf = ksys_mmap(task, 0, 4 * PAGE_SIZE, RW, ANON, -1)
    assert task.mm is not None
    do_munmap(task.mm, buf + 2 * PAGE_SIZE, 2 * PAGE_SIZE)
    pages: list[Page] = []
    with use_task(task):
        assert pin_user_pages_fast(buf, 4, FOLL_WRITE, pages) == 2
        assert pin_user_pages_fast(buf + 2 * PAGE_SIZE, 2, 0, []) == -EFAULT.errno
    unpin_user_pages(pages)


def test_what_gup_refuses(proc: tuple[Kernel, TaskStruct]) -> None:
    _, task = proc
    ro = ksys_mmap(task, 0, PAGE_SIZE, PROT_READ, ANON, -1)
    dev = ksys_mmap(task, 0, PAGE_SIZE, RW, ANON, -1)
    assert task.mm is not None
    vma = vma_lookup(task.mm, dev)
    assert vma is not None
    spare = current_mm().alloc_pages_n(1, 1, 0, "test")
    assert spare is not None
    remap_pfn_range(vma, dev, spare.pfn, PAGE_SIZE, vma.vm_page_prot)
    with use_task(task):
        assert pin_user_pages_fast(ro, 1, FOLL_WRITE, []) == -EFAULT.errno
        assert pin_user_pages_fast(dev, 1, 0, []) == -EFAULT.errno  # VM_PFNMAP
        assert pin_user_pages_fast(ro, 1, FOLL_PIN, []) == -EINVAL.errno
        assert pin_user_pages_fast(ro + 1, 1, 0, []) == -EINVAL.errno
        assert pin_user_pages_fast(ro, 1, FOLL_NOFAULT, []) == -EFAULT.errno  # not present
        got: list[Page] = []
        assert pin_user_pages_fast(ro, 1, 0, got) == 1  # read-only pins fault it in
    unpin_user_pages(got)
    assert pin_user_pages_fast(ro, 1, 0, []) == -EFAULT.errno  # no process current
    assert pin_user_pages_remote(task.mm, ro, 1, FOLL_PIN, []) == -EINVAL.errno
    do_munmap(task.mm, dev, PAGE_SIZE)
    current_mm().free_pages_n(spare, 1)


def test_a_write_pin_faults_a_write_protected_pte_writable(
    proc: tuple[Kernel, TaskStruct],
) -> None:
    """A present but write-protected PTE of a writable VMA (as fork's COW leaves
    it) is not taken by a write pin as is: the fault handler makes it writable
    first; a read pin takes it read-only."""
    _, task = proc
    buf = ksys_mmap(task, 0, PAGE_SIZE, RW, ANON, -1)
    with use_task(task):
        assert copy_to_user(buf, b"x") == 0
    assert task.mm is not None
    task.mm.pgd.protect(buf, PAGE_SIZE, 0, _PAGE_RW)
    with use_task(task):
        pages: list[Page] = []
        assert pin_user_pages_fast(buf, 1, 0, pages) == 1
        hit = task.mm.pgd.walk(buf)
        assert hit is not None and not hit[0] & _PAGE_RW
        assert pin_user_pages_fast(buf, 1, FOLL_WRITE, pages) == 1
    hit = task.mm.pgd.walk(buf)
    assert hit is not None and hit[0] & _PAGE_RW
    assert pages[0] == pages[1] and page_ref_count(pages[0]) == 1 + 2 * GUP_PIN_COUNTING_BIAS
    unpin_user_pages(pages)


def test_out_of_memory_while_faulting_is_enomem(proc: tuple[Kernel, TaskStruct]) -> None:
    _, task = proc
    buf = ksys_mmap(task, 0, PAGE_SIZE, RW, ANON, -1)
    inj = injector()
    inj.arm(1, frozenset({"alloc_pages"}))
    try:
        with use_task(task):
            rc = pin_user_pages_fast(buf, 1, FOLL_WRITE, [])
    finally:
        inj.disarm()
    assert rc == -ENOMEM.errno and phys_of(task, buf) == 0
