"""User SVA through the idxd character device on the ``default`` machine (VT-d):
open binds the process and gives it its PASID, ENQCMD carries the PASID from
IA32_PASID, completion records land in user memory, page faults without
block-on-fault complete partially and the rest can be resubmitted, munmap reaches
the PASID's IOTLB and device TLB, exit drains then unbinds, and bad input gets
the DSA's status codes."""

from __future__ import annotations

import pytest

from drivers.idxd.cdev import IdxdUserContext
from drivers.idxd.idxd import IDXD_WQT_USER
from hw.machine import Machine
from hw.vtd.unit import VtdUnit
from iommulab.userdsa import UserWq
from kernel.delay import udelay
from kernel.errno import EBUSY, EFAULT, EINVAL, EPERM
from kernel.fs import do_sys_open, ksys_mmap
from kernel.iommu.iommu import iommu_state
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.mmap import MAP_SHARED, PROT_WRITE, do_munmap, vma_lookup
from kernel.sched import do_exit, user_process_create
from kernel.traps import user_enqcmd
from kernel.uapi.idxd import (
    DSA_COMP_PAGE_FAULT_NOBOF,
    DSA_COMP_STATUS_MASK,
    DSA_COMP_STATUS_WRITE,
    DSA_COMP_SUCCESS,
    DsaHwDesc,
)
from tests.drivers.idxd.conftest import Boot, dsa0, dsa_hw
from tests.drivers.idxd.user_setup import DWQ, SWQ, boot_user, open_wq, process, wq_of

SZ = 4096


def vtd(k: object) -> VtdUnit:
    m = k.machine
    assert isinstance(m, Machine)
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    return unit


def _ctx(u: UserWq) -> IdxdUserContext:
    ctx = u.task.files[u.fd].private_data
    assert isinstance(ctx, IdxdUserContext)
    return ctx


def test_open_binds_the_process_and_enqcmd_moves_its_bytes(make_kernel: Boot) -> None:
    k = boot_user(make_kernel)
    assert wq_of(SWQ).type == IDXD_WQT_USER and dsa0().user_pasid_enabled
    task = process()
    u = open_wq(task)
    assert task.mm is not None and task.mm.pasid != IOMMU_PASID_INVALID
    assert _ctx(u).pasid == task.mm.pasid and not task.pasid_activated
    src, dst, desc = u.alloc(2 * SZ, touch=True), u.alloc(2 * SZ, touch=True), u.alloc(SZ)
    data = bytes(range(256)) * 32
    u.store(src, data)
    u.submit(u.memmove(src, dst, 2 * SZ, desc + 64), desc)
    assert task.pasid_activated  # the first ENQCMD took #GP and loaded IA32_PASID
    cr = u.wait(desc + 64)
    assert cr.status == DSA_COMP_SUCCESS and u.load(dst, 2 * SZ) == data
    assert vtd(k).stats.stale_uses == 0
    do_exit(task)
    assert set(iommu_state().global_pasid_ida.ids) == {dsa0().pasid}


def test_without_bof_a_fault_completes_partially_and_the_rest_is_resubmitted(
    make_kernel: Boot,
) -> None:
    """What accel-config's tests do: the record gives the page-fault status with
    the write bit, the fault address and the bytes done; the program touches the
    page and submits the remainder."""
    boot_user(make_kernel)
    task = process()
    u = open_wq(task)
    src, dst, desc = u.alloc(3 * SZ, touch=True), u.alloc(3 * SZ), u.alloc(SZ)
    data = bytes((i * 7) & 0xFF for i in range(3 * SZ))
    u.store(src, data)
    u.store(dst, bytes(2 * SZ))  # the first two destination pages are present
    comp = desc + 64
    u.submit(u.memmove(src, dst, 3 * SZ, comp), desc)
    cr = u.wait(comp)
    assert cr.status & DSA_COMP_STATUS_MASK == DSA_COMP_PAGE_FAULT_NOBOF
    assert cr.status & DSA_COMP_STATUS_WRITE
    assert cr.fault_addr == dst + 2 * SZ and cr.bytes_completed == 2 * SZ
    assert u.load(dst, 2 * SZ) == data[: 2 * SZ]
    done = cr.bytes_completed
    u.store(dst + done, b"\0")  # touch the faulting page
    u.store(comp, bytes(32))
    u.submit(u.memmove(src + done, dst + done, 3 * SZ - done, comp), desc)
    assert u.wait(comp).status == DSA_COMP_SUCCESS
    assert u.load(dst, 3 * SZ) == data
    do_exit(task)


def test_munmap_after_dma_invalidates_and_a_later_dma_faults(make_kernel: Boot) -> None:
    k = boot_user(make_kernel)
    task = process()
    u = open_wq(task)
    src, dst, desc = u.alloc(SZ, touch=True), u.alloc(SZ, touch=True), u.alloc(SZ)
    u.store(src, b"first")
    u.submit(u.memmove(src, dst, SZ, desc + 64), desc)
    assert u.wait(desc + 64).status == DSA_COMP_SUCCESS
    unit = vtd(k)
    flushes, devtlb = unit.stats.invalidations, unit.stats.devtlb_invalidations
    assert task.mm is not None
    do_munmap(task.mm, dst, SZ)
    assert unit.stats.invalidations > flushes  # the notifier's PASID-selective flush
    assert unit.stats.devtlb_invalidations > devtlb  # and the device TLB's
    u.store(desc + 64, bytes(32))
    u.submit(u.memmove(src, dst, SZ, desc + 64), desc)
    cr = u.wait(desc + 64)
    assert cr.status & DSA_COMP_STATUS_MASK == DSA_COMP_PAGE_FAULT_NOBOF
    assert cr.fault_addr == dst and cr.bytes_completed == 0
    assert unit.stats.stale_uses == 0
    do_exit(task)


def test_munmap_during_dma_the_device_faults_instead_of_using_freed_pages(
    make_kernel: Boot,
) -> None:
    """The destination goes while the descriptor is queued: the notifier flushes the
    PASID's IOTLB and device-TLB entries before the pages are freed, so the copy
    faults at the destination (no stale use, nothing written to freed pages)."""
    k = boot_user(make_kernel)
    task = process()
    u = open_wq(task)
    size = 256 * SZ
    src, dst, desc = u.alloc(size, touch=True), u.alloc(size, touch=True), u.alloc(SZ)
    u.store(src, b"x" * size)
    # a first copy fills the IOTLB and the device TLB with the destination's pages
    u.submit(u.memmove(src, dst, size, desc + 64), desc)
    assert u.wait(desc + 64).status == DSA_COMP_SUCCESS
    u.store(desc + 64, bytes(32))
    u.submit(u.memmove(src, dst, size, desc + 64), desc)
    assert dsa_hw(k).all_jobs()  # queued, not yet run
    unit = vtd(k)
    devtlb = unit.stats.devtlb_invalidations
    assert task.mm is not None
    do_munmap(task.mm, dst, size)
    assert unit.stats.devtlb_invalidations > devtlb
    cr = u.wait(desc + 64)
    assert cr.status & DSA_COMP_STATUS_MASK == DSA_COMP_PAGE_FAULT_NOBOF
    assert cr.fault_addr == dst and cr.bytes_completed == 0
    assert unit.stats.stale_uses == 0
    do_exit(task)


def test_exit_with_work_in_flight_drains_then_unbinds(
    make_kernel: Boot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit runs exit_mm (the PASID entry is torn down with FPD by the notifier's
    release) then exit_files: the release drains the PASID in the DSA, then unbinds,
    whose teardown drains the page requests (invalidation wait with PD)."""
    import drivers.idxd.cdev as cdev
    import drivers.intel_iommu.pasid as intel_pasid

    order: list[str] = []
    for mod, name in (
        (cdev, "idxd_device_drain_pasid"),
        (cdev, "iommu_sva_unbind_device"),
        (intel_pasid, "intel_iommu_drain_pasid_prq"),
    ):
        real = getattr(mod, name)

        def spy(*a: object, _real: object = real, _name: str = name) -> object:
            order.append(_name)
            return _real(*a)  # type: ignore[operator]

        monkeypatch.setattr(mod, name, spy)
    k = boot_user(make_kernel)
    before = {(x.kind, x.addr) for x in k.mm.live()}
    task = process()
    u = open_wq(task)
    src, dst, desc = u.alloc(1 << 20, touch=True), u.alloc(1 << 20, touch=True), u.alloc(SZ)
    u.submit(u.memmove(src, dst, 1 << 20, desc + 64), desc)
    hw = dsa_hw(k)
    assert hw.all_jobs()  # still in flight
    pasid = _ctx(u).pasid
    do_exit(task)
    assert order == [
        "idxd_device_drain_pasid",
        "iommu_sva_unbind_device",
        "intel_iommu_drain_pasid_prq",
    ]
    assert not hw.all_jobs()
    assert pasid not in iommu_state().global_pasid_ida.ids
    assert {(x.kind, x.addr) for x in k.mm.live()} == before
    assert vtd(k).stats.stale_uses == 0


def test_dedicated_user_wq_takes_the_pasid_and_refuses_a_second_opener(make_kernel: Boot) -> None:
    boot_user(make_kernel)
    a, b = process("a"), process("b")
    u = open_wq(a, DWQ)
    wq = wq_of(DWQ)
    _ctx_pasid = _ctx(u).pasid
    assert wq.pasid == _ctx_pasid
    with pytest.raises(EBUSY):
        do_sys_open(b, DWQ)
    src, dst, desc = u.alloc(SZ, touch=True), u.alloc(SZ, touch=True), u.alloc(SZ)
    u.store(src, b"dedicated")
    u.submit(u.memmove(src, dst, SZ, desc + 64), desc)
    assert u.wait(desc + 64).status == DSA_COMP_SUCCESS
    assert u.load(dst, 9) == b"dedicated"
    u.close()
    assert wq.pasid == _ctx_pasid  # the portal mapping still holds the file
    do_exit(a)
    assert wq.pasid == IOMMU_PASID_INVALID and wq.client_count == 0
    v = open_wq(b, DWQ)  # free again
    assert wq.pasid == _ctx(v).pasid
    do_exit(b)


def test_write_submits_for_the_process_and_refuses_bad_descriptors(make_kernel: Boot) -> None:
    boot_user(make_kernel)
    task = user_process_create("nocap")  # no CAP_SYS_RAWIO: no portal on this DSA
    with pytest.raises(EPERM):
        UserWq.open(task, SWQ)
    u = UserWq.open(task, SWQ, map_portal=False)
    src, dst, desc = u.alloc(SZ, touch=True), u.alloc(SZ, touch=True), u.alloc(SZ)
    u.store(src, b"via write")
    d = u.memmove(src, dst, SZ, desc + 64)
    d.priv = 1  # the driver submits with user privilege whatever the program says
    u.submit(d, desc, via="write")
    assert u.wait(desc + 64).status == DSA_COMP_SUCCESS
    assert u.load(dst, 9) == b"via write"
    with pytest.raises(EINVAL):
        u.submit(u.memmove(src, dst, SZ, desc + 65), desc, via="write")
    with pytest.raises(EINVAL):
        u.submit(DsaHwDesc(opcode=1, desc_list_addr=src, desc_count=2), desc, via="write")
    with pytest.raises(EINVAL):
        ksys_mmap(task, 0, 2 * SZ, PROT_WRITE, MAP_SHARED, u.fd)
    do_exit(task)


def test_a_priv_descriptor_or_another_process_completion_address(make_kernel: Boot) -> None:
    """ENQCMD clears the privilege bit, so a user descriptor runs unprivileged; a
    completion address the PASID cannot reach (another process's buffer) is a
    completion-record translation error in SWERR, never a write elsewhere."""
    k = boot_user(make_kernel)
    a, b = process("a"), process("b")
    ua, ub = open_wq(a), open_wq(b)
    src, dst, desc = ua.alloc(SZ, touch=True), ua.alloc(SZ, touch=True), ua.alloc(SZ)
    ub.alloc(1 << 20)  # b's layout moves on: its next buffer is a hole in a's
    theirs = ub.alloc(SZ, touch=True)
    ua.store(src, b"mine")
    d = ua.memmove(src, dst, SZ, desc + 64)
    d.priv = 1
    ua.submit(d, desc)
    assert ua.wait(desc + 64).status == DSA_COMP_SUCCESS
    hw = dsa_hw(k)
    swerrs = hw.swerr_count
    ub.store(theirs, bytes(32))
    assert ua.task.mm is not None and vma_lookup(ua.task.mm, theirs) is None
    ua.submit(ua.memmove(src, dst, SZ, theirs), desc)
    udelay(100)
    assert ub.load(theirs, 32) == bytes(32)  # nothing written into b
    assert hw.swerr_count == swerrs + 1  # the completion-record translation error
    do_exit(a)
    do_exit(b)


def test_open_without_a_task_and_enqcmd_without_a_bond(make_kernel: Boot) -> None:
    boot_user(make_kernel)
    task = process()
    u = open_wq(task)
    other = process("other")
    desc = ksys_mmap(other, 0, SZ, 3, 0x22, -1)
    with pytest.raises(EFAULT):
        user_enqcmd(other, desc, desc)  # no portal mapped in this process
    do_exit(other)
    u.close()
    do_exit(task)


def test_enqcmd_retry_when_the_shared_wq_is_full(make_kernel: Boot) -> None:
    """A shared WQ at its threshold answers ENQCMD with retry (ZF=1); the program
    retries and the descriptor goes in once the device has drained some."""
    boot_user(make_kernel)
    task = process()
    u = open_wq(task)
    src = u.alloc(1 << 20, touch=True)
    dst = u.alloc(1 << 20, touch=True)
    descs = u.alloc(16 * SZ)
    for i in range(10):  # threshold 7: the last ones have to wait for room
        d = descs + i * SZ
        u.submit(u.memmove(src, dst, 1 << 20, d + 64), d)
    assert u.enqcmd_retries > 0
    for i in range(10):
        assert u.wait(descs + i * SZ + 64).status == DSA_COMP_SUCCESS
    do_exit(task)
