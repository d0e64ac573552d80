"""User processes: mmap/munmap/mprotect and VMA lookup, demand-zero faults and their
VM_FAULT codes, user copies, exit freeing everything, files and the ENQCMD #GP
fixup of the task's IA32_PASID."""

from __future__ import annotations

import pytest

from kernel.errno import EACCES, EBADF, EFAULT, EINVAL, ENOENT, ENOMEM, EOPNOTSUPP
from kernel.fault_inject import injector
from kernel.fork import mm_alloc, mmdrop, mmget_not_zero, mmput
from kernel.fs import cdev_device_add, close_fd, do_sys_open, ksys_mmap, ksys_write, vfs_poll
from kernel.memory import (
    FAULT_FLAG_INSTRUCTION,
    FAULT_FLAG_WRITE,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    access_remote_vm,
    handle_mm_fault,
    remap_pfn_range,
)
from kernel.mm_types import MmStruct
from kernel.mmap import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    do_mprotect,
    do_munmap,
    find_vma,
    vm_mmap,
    vma_lookup,
)
from kernel.mmu_notifier import MmuNotifier, mmu_notifier_put, mmu_notifier_register
from kernel.pgtable import _PAGE_NX, _PAGE_RW, _PAGE_USER
from kernel.sched import (
    CAP_SYS_RAWIO,
    MSR_IA32_PASID_VALID,
    capable,
    do_exit,
    get_current,
    use_task,
    user_process_create,
)
from kernel.traps import try_fixup_enqcmd_gp, user_enqcmd
from kernel.uaccess import copy_from_user, copy_to_user, get_user, put_user
from tests.kernel.conftest import KernelFactory, take_warnings

SZ = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _mm() -> MmStruct:
    mm = mm_alloc()
    assert mm is not None
    return mm


def test_mmap_is_top_down_and_vma_lookup_finds_the_right_area(make_kernel: KernelFactory) -> None:
    make_kernel()
    mm = _mm()
    a = vm_mmap(mm, 0, 3 * SZ, RW, ANON)
    b = vm_mmap(mm, 0, SZ, PROT_READ, MAP_SHARED | MAP_ANONYMOUS)
    assert a == mm.mmap_base - 3 * SZ and b == a - SZ
    va = vma_lookup(mm, a + SZ)
    vb = vma_lookup(mm, b)
    assert va is not None and va.vm_flags & (VM_READ | VM_WRITE) == VM_READ | VM_WRITE
    assert vb is not None and vb.vm_flags & VM_SHARED and not vb.vm_flags & VM_WRITE
    assert vma_lookup(mm, b - 1) is None and find_vma(mm, b - 1) is vb
    assert find_vma(mm, a + 3 * SZ) is None
    # munmap of the middle page splits the VMA in two
    do_munmap(mm, a + SZ, SZ)
    assert vma_lookup(mm, a + SZ) is None
    lo, hi = vma_lookup(mm, a), vma_lookup(mm, a + 2 * SZ)
    assert lo is not None and hi is not None and lo.vm_end == a + SZ and hi.vm_start == a + 2 * SZ
    # a new mapping fills the hole below the top one
    assert vm_mmap(mm, 0, SZ, RW, ANON) == a + SZ
    mmput(mm)


def test_mmap_and_munmap_refuse_bad_arguments(make_kernel: KernelFactory) -> None:
    make_kernel()
    mm = _mm()
    for args in (
        (0, 0, RW, ANON),
        (0, SZ, RW, MAP_ANONYMOUS),
        (0, SZ, RW, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS),
        (0, SZ, RW, MAP_PRIVATE),
        (0x1001, SZ, RW, ANON | MAP_FIXED),
    ):
        with pytest.raises(EINVAL):
            vm_mmap(mm, *args)
    with pytest.raises(EINVAL):
        do_munmap(mm, 0x1001, SZ)
    with pytest.raises(EINVAL):
        do_mprotect(mm, 0x1001, SZ, PROT_READ)
    with pytest.raises(ENOMEM):
        vm_mmap(mm, 0, mm.mmap_base, RW, ANON)
    with pytest.raises(EOPNOTSUPP):
        do_mprotect(mm, vm_mmap(mm, 0, SZ, RW, ANON), SZ, PROT_NONE)
    mmput(mm)


def test_demand_zero_faults_and_their_vm_fault_codes(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    mm = _mm()
    a = vm_mmap(mm, 0, 2 * SZ, PROT_READ, ANON)
    vma = vma_lookup(mm, a)
    assert vma is not None
    assert mm.pgd.walk(a) is None  # nothing until touched
    assert handle_mm_fault(vma, a + 5, 0) == 0
    hit = mm.pgd.walk(a)
    assert hit is not None and hit[0] & _PAGE_USER and not hit[0] & _PAGE_RW
    assert hit[0] & _PAGE_NX
    assert handle_mm_fault(vma, a, 0) == 0  # spurious: already present
    assert handle_mm_fault(vma, a, FAULT_FLAG_WRITE) == VM_FAULT_SIGSEGV
    assert handle_mm_fault(vma, a, FAULT_FLAG_INSTRUCTION) == VM_FAULT_SIGSEGV
    assert handle_mm_fault(vma, a + 2 * SZ, 0) == VM_FAULT_SIGSEGV
    injector().arm(1, frozenset({"alloc_pages"}))
    try:
        assert handle_mm_fault(vma, a + SZ, 0) == VM_FAULT_OOM
    finally:
        injector().disarm()
    # a PFN mapping has no pages to fault in
    p = vm_mmap(mm, 0, 2 * SZ, RW, MAP_SHARED | MAP_ANONYMOUS)
    pv = vma_lookup(mm, p)
    assert pv is not None
    remap_pfn_range(pv, p, 0xFED00, SZ, pv.vm_page_prot)
    assert pv.vm_flags & VM_PFNMAP
    assert handle_mm_fault(pv, p + SZ, 0) == VM_FAULT_SIGBUS
    with pytest.raises(EINVAL):
        remap_pfn_range(pv, p + SZ, 0xFED00, 2 * SZ, pv.vm_page_prot)
    before = {(x.kind, x.addr) for x in k.mm.live()}
    do_munmap(mm, p, 2 * SZ)  # PFN pages are not the allocator's: nothing freed
    assert {(x.kind, x.addr) for x in k.mm.live()} == before
    mmput(mm)


def test_write_fault_on_read_only_pte_of_writable_vma_upgrades_it(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    mm = _mm()
    a = vm_mmap(mm, 0, SZ, RW, ANON | MAP_POPULATE)
    vma = vma_lookup(mm, a)
    assert vma is not None
    assert mm.pgd.walk(a) is not None  # MAP_POPULATE faulted it in
    mm.pgd.protect(a, SZ, 0, _PAGE_RW)
    assert handle_mm_fault(vma, a, FAULT_FLAG_WRITE) == 0
    hit = mm.pgd.walk(a)
    assert hit is not None and hit[0] & _PAGE_RW
    mmput(mm)


def test_mprotect_splits_vmas_and_changes_present_ptes(make_kernel: KernelFactory) -> None:
    make_kernel()
    mm = _mm()
    a = vm_mmap(mm, 0, 3 * SZ, RW, ANON | MAP_POPULATE)
    do_mprotect(mm, a + SZ, SZ, PROT_READ | PROT_EXEC)
    mid = vma_lookup(mm, a + SZ)
    assert mid is not None and (mid.vm_start, mid.vm_end) == (a + SZ, a + 2 * SZ)
    hit = mm.pgd.walk(a + SZ)
    assert hit is not None and not hit[0] & (_PAGE_RW | _PAGE_NX)
    hit0 = mm.pgd.walk(a)
    assert hit0 is not None and hit0[0] & _PAGE_RW
    with pytest.raises(ENOMEM):
        do_mprotect(mm, a, 4 * SZ, PROT_READ)  # the fourth page is not mapped
    mid.vm_flags &= ~0x20  # VM_MAYWRITE gone (as for a read-only file mapping)
    with pytest.raises(EACCES):
        do_mprotect(mm, a + SZ, SZ, RW)
    mmput(mm)


def test_user_copies_fault_pages_in_and_stop_at_a_hole(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    task = user_process_create("copier")
    assert task.mm is not None
    a = ksys_mmap(task, 0, 2 * SZ, RW, ANON, -1)
    r = ksys_mmap(task, 0, SZ, PROT_READ, ANON, -1)
    with use_task(task):
        assert get_current() is task
        assert copy_to_user(a + SZ - 2, b"spans") == 0
        assert copy_from_user(a + SZ - 2, 5) == (b"spans", 0)
        assert copy_from_user(a + 2 * SZ - 1, 4) == (b"\0\0\0\0", 3)
        assert copy_to_user(r, b"x") == 1  # read-only mapping: nothing written
        assert put_user(0x1122, a) == 0 and get_user(a, 2) == (0x1122, 0)
        assert put_user(1, r) == -14 and get_user(r - SZ * 100) == (0, -14)
    assert get_current() is None
    assert copy_to_user(a, b"x") == 1  # kernel context has no user memory
    assert copy_from_user(a, 1) == (b"\0", 1)
    assert access_remote_vm(task.mm, a, bytearray(2), False) == 2
    before = {(x.kind, x.addr) for x in k.mm.live()}
    do_exit(task)
    after = {(x.kind, x.addr) for x in k.mm.live()}
    assert after < before and task.mm is None and task.exited
    do_exit(task)  # a second exit is a no-op


def test_the_enqcmd_gp_fixup_loads_ia32_pasid_once(make_kernel: KernelFactory) -> None:
    make_kernel()
    task = user_process_create("enq", caps=frozenset({CAP_SYS_RAWIO}))
    assert task.mm is not None
    assert not try_fixup_enqcmd_gp()  # kernel context
    with use_task(task):
        assert capable(CAP_SYS_RAWIO) and not capable(21)
        assert not try_fixup_enqcmd_gp()  # no PASID yet: SIGSEGV for the task
        task.mm.pasid = 7
        assert try_fixup_enqcmd_gp()
        assert task.ia32_pasid == MSR_IA32_PASID_VALID | 7 and task.pasid_activated
        assert not try_fixup_enqcmd_gp()  # already active: a real #GP
    src = ksys_mmap(task, 0, SZ, RW, ANON, -1)
    with pytest.raises(EFAULT):
        user_enqcmd(task, src, src)  # the destination is not a portal
    with pytest.raises(EFAULT):
        user_enqcmd(task, src, 0x1000)  # the descriptor is unreadable
    task.mm.pasid = -1 & 0xFFFF_FFFF
    do_exit(task)
    with pytest.raises(EFAULT):
        user_enqcmd(task, src, src)


def test_files_open_write_poll_mmap_and_release_through_the_driver(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    calls: list[str] = []

    class Fops:
        def open(self, inode: object, filp: object) -> None:
            calls.append("open")

        def release(self, inode: object, filp: object) -> None:
            calls.append("release")

        def write(self, filp: object, buf: int, count: int) -> int:
            calls.append(f"write {count}")
            return count

        def poll(self, filp: object) -> int:
            return 1

        def mmap(self, filp: object, vma: object) -> None:
            calls.append("mmap")

    cdev_device_add("/dev/test", object(), Fops())
    with pytest.raises(EINVAL):
        cdev_device_add("/dev/test", object(), Fops())
    task = user_process_create("files")
    with pytest.raises(ENOENT):
        do_sys_open(task, "/dev/none")
    fd = do_sys_open(task, "/dev/test")
    assert ksys_write(task, fd, 0x1000, 64) == 64 and vfs_poll(task, fd) == 1
    m = ksys_mmap(task, 0, SZ, RW, MAP_SHARED, fd)
    close_fd(task, fd)
    assert calls == ["open", "write 64", "mmap"]  # the mapping still holds the file
    with pytest.raises(EBADF):
        close_fd(task, fd)
    with pytest.raises(EBADF):
        ksys_write(task, fd, 0, 1)
    assert task.mm is not None
    do_munmap(task.mm, m, SZ)
    assert calls[-1] == "release"
    do_exit(task)


def test_an_mm_whose_users_are_gone_cannot_be_revived(make_kernel: KernelFactory) -> None:
    make_kernel()
    mm = _mm()
    assert mmget_not_zero(mm)
    mmput(mm)
    mmput(mm)
    assert mm.exited and not mmget_not_zero(mm)


def test_mmu_notifier_put_frees_on_the_last_reference_without_release(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel()
    mm = _mm()
    calls: list[str] = []

    class Ops:
        def release(self, mn: MmuNotifier, m: MmStruct) -> None:
            calls.append("release")

        def free_notifier(self, mn: MmuNotifier) -> None:
            calls.append("free")

    mn = MmuNotifier(Ops())
    mmu_notifier_register(mn, mm)
    mn.users += 1
    mmu_notifier_put(mn)
    assert calls == [] and mn in mm.notifier_subscriptions
    mmu_notifier_put(mn)
    assert calls == ["free"] and not mm.notifier_subscriptions and mn.mm is None
    mmu_notifier_put(mn)  # one put too many
    assert take_warnings(k) == ["mmu_notifier_put of a free notifier"]
    mmput(mm)
    mmdrop(mm)  # the struct is already gone
    assert take_warnings(k) == ["mmdrop of a freed mm"]
    mmput(mm)
    assert take_warnings(k) == ["mmput of a dead mm"]
