"""fail_nth over a user process's life on a user WQ: create → open (SVA bind, PASID)
→ mmap the portal → touch buffers → ENQCMD a memmove → wait → exit. Every
allocation point is failed in turn in one booted kernel: the failure must unwind
with nothing leaked (memory, PASIDs, open contexts) and no WARN, so the next round
starts from the same state."""

from __future__ import annotations

from drivers.idxd.init import idxd_find
from iommulab.userdsa import UserWq
from kernel.errno import KernelError
from kernel.fault_inject import count_points, injector
from kernel.iommu.iommu import iommu_state
from kernel.sched import TaskStruct, do_exit, sched_state
from kernel.uapi.idxd import DSA_COMP_SUCCESS
from tests.drivers.idxd.conftest import Boot
from tests.drivers.idxd.user_setup import SWQ, boot_user, open_wq, process, wq_of

SZ = 4096


def scenario(tasks: list[TaskStruct]) -> None:
    task = process()
    tasks.append(task)
    u: UserWq = open_wq(task, SWQ)
    src, dst, desc = u.alloc(2 * SZ, touch=True), u.alloc(2 * SZ, touch=True), u.alloc(SZ)
    u.store(src, b"fail_nth" * 8)
    u.submit(u.memmove(src, dst, 2 * SZ, desc + 64), desc)
    assert u.wait(desc + 64).status == DSA_COMP_SUCCESS
    assert u.load(dst, 64) == b"fail_nth" * 8
    do_exit(task)


def test_every_failure_from_open_to_exit_unwinds_cleanly(make_kernel: Boot) -> None:
    k = boot_user(make_kernel)
    system = set(iommu_state().global_pasid_ida.ids)
    baseline = {(a.kind, a.addr) for a in k.mm.live()}
    points = count_points(lambda: scenario([]))
    assert len(points) >= 10 and {"kmalloc", "alloc_pages", "ida_alloc"} <= set(points)
    for nth in range(1, len(points) + 1):
        tasks: list[TaskStruct] = []
        injector().arm(nth)
        try:
            try:
                scenario(tasks)
            except (KernelError, MemoryError):
                pass
            finally:
                site = injector().injected_at
                injector().disarm()
            for t in tasks:
                do_exit(t)  # a process dies whatever failed
        finally:
            injector().disarm()
        assert site is not None, f"point {nth} not reached"
        leaked = [a for a in k.mm.live() if (a.kind, a.addr) not in baseline]
        assert leaked == [], f"failing {site} (#{nth}) leaked {leaked}"
        assert set(iommu_state().global_pasid_ida.ids) == system, f"{site} (#{nth})"
        assert wq_of(SWQ).client_count == 0 and not wq_of(SWQ).upasid_xa
        assert not sched_state().tasks and not k.warnings(), site
    assert idxd_find("dsa0").wqs[0].state == "enabled"
