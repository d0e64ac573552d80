"""The issue's block-on-fault scenarios with a real process: a task opens the shared
user WQ configured with block_on_fault (``/dev/dsa/wq0.2``), which binds its mm, and
submits with ENQCMD from its own memory.

- An untouched 2 MiB destination: the DSA sends a page request per page, VT-d queues
  them, the kernel faults the pages in and answers, the DSA completes successfully
  and the bytes are right; the trace shows each request, report and response in
  order before the completion.
- A destination outside any VMA, or a read-only mapping: the page request is answered
  Invalid Request, the completion record says so (0x04 with the write bit, the fault
  address, no bytes done) and nothing is written.
"""

from __future__ import annotations

import pytest

from hw.machine import Machine
from hw.vtd.unit import VtdUnit
from kernel.mmap import PROT_READ, do_mprotect, do_munmap
from kernel.sched import do_exit
from kernel.trace import capture
from kernel.uapi.idxd import (
    DSA_COMP_PAGE_FAULT_IR,
    DSA_COMP_STATUS_WRITE,
    DSA_COMP_SUCCESS,
)
from tests.drivers.idxd.conftest import Boot, dsa_hw
from tests.drivers.idxd.user_setup import SWQ_BOF, boot_user, open_wq, process

MIB2 = 2 << 20
PAGE = 4096
_CYCLE = ["hw_vtd:page_request", "intel_iommu:prq_report", "hw_vtd:prg_response"]


def _unit(m: object) -> VtdUnit:
    assert isinstance(m, Machine)
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    return unit


def test_untouched_2mib_buffer_is_faulted_in_by_page_requests(make_kernel: Boot) -> None:
    k = boot_user(make_kernel)
    task = process()
    u = open_wq(task, SWQ_BOF)
    src, dst, desc = u.alloc(MIB2), u.alloc(MIB2), u.alloc(PAGE, touch=True)
    data = bytes((i * 13 + 7) & 0xFF for i in range(MIB2))
    u.store(src, data)  # the program wrote its source; dst was never touched
    assert task.mm is not None and task.mm.pgd.walk(dst) is None
    with capture("*") as events:
        u.submit(u.memmove(src, dst, MIB2, desc + 64, bof=True), desc)
        cr = u.wait(desc + 64)
    assert cr.status == DSA_COMP_SUCCESS
    assert u.load(dst, MIB2) == data
    watched = [e for e in events if e.name in {*_CYCLE, "hw_dsa:descriptor_complete"}]
    assert [e.name for e in watched] == _CYCLE * (MIB2 // PAGE) + ["hw_dsa:descriptor_complete"]
    requests = [e.fields for e in watched if e.name == "hw_vtd:page_request"]
    assert [f["addr"] for f in requests] == list(range(dst, dst + MIB2, PAGE))
    assert all(f["write"] and f["pasid"] == task.mm.pasid for f in requests)
    assert all(e.fields["code"] == 0 for e in watched if e.name == "hw_vtd:prg_response")
    unit = _unit(k.machine)
    assert unit.stats.stale_uses == 0 and unit.prq.overflows == 0
    hw = dsa_hw(k)
    assert hw.bof.stats.page_requests == MIB2 // PAGE and hw.bof.stats.failed == 0
    do_exit(task)


@pytest.mark.parametrize("where", ["outside-vma", "read-only"])
def test_refused_page_request_completes_with_the_fault_and_writes_nothing(
    make_kernel: Boot, where: str
) -> None:
    k = boot_user(make_kernel)
    task = process()
    assert task.mm is not None
    u = open_wq(task, SWQ_BOF)
    src, dst, desc = u.alloc(2 * PAGE, touch=True), u.alloc(2 * PAGE), u.alloc(PAGE, touch=True)
    u.store(src, b"\xaa" * 2 * PAGE)
    before = b""
    if where == "outside-vma":
        do_munmap(task.mm, dst, 2 * PAGE)
    else:
        u.store(dst, b"\x55" * 2 * PAGE)  # resident, then made read-only
        do_mprotect(task.mm, dst, 2 * PAGE, PROT_READ)
        before = u.load(dst, 2 * PAGE)
    with capture("hw_vtd:prg_response") as responses:
        u.submit(u.memmove(src, dst, 2 * PAGE, desc + 64, bof=True), desc)
        cr = u.wait(desc + 64)
    assert cr.status == DSA_COMP_PAGE_FAULT_IR | DSA_COMP_STATUS_WRITE
    assert cr.fault_addr == dst and cr.bytes_completed == 0
    assert [e.fields["code"] for e in responses] == [1]  # Invalid Request
    if where == "read-only":
        assert u.load(dst, 2 * PAGE) == before
    else:
        assert task.mm.pgd.walk(dst) is None  # no page appeared there
    assert _unit(k.machine).stats.stale_uses == 0
    do_exit(task)
