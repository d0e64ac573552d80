"""Page requests that go wrong, with Linux's VT-d driver in charge (issue 14, bad input):
a page request queue overflow, a device limited to fewer outstanding requests than it
wants, a page group response for an index nobody asked for, PRI disabled while
requests are outstanding, and unbinding while a request is still in flight (the PD
drain). Each shows the spec's behaviour in registers and config space, Linux's dmesg
lines, no exception and nothing lost: every request is answered and every byte lands.
"""

from __future__ import annotations

import pytest

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import dmar_state, qi_submit_sync
from drivers.intel_iommu.structs import IntelIommu
from hw.pri import (
    PCI_PRI_STATUS_RF,
    PCI_PRI_STATUS_STOPPED,
    PCI_PRI_STATUS_UPRGI,
    PRG_RESP_FAILURE,
    PRG_RESP_INVALID,
    PRG_RESP_SUCCESS,
)
from kernel.delay import ndelay, udelay
from kernel.errno import EBUSY
from kernel.fault_inject import injector
from kernel.iommu.io_pgfault import iopf_queue_add_device
from kernel.iommu.iommu import (
    IOMMU_DEV_FEAT_IOPF,
    iommu_dev_disable_feature,
    iommu_dev_enable_feature,
)
from kernel.mmap import vm_mmap
from kernel.pci import (
    PCI_PRI_ALLOC_REQ,
    PCI_PRI_CTRL,
    PCI_PRI_CTRL_ENABLE,
    PCI_PRI_STATUS,
    PciDev,
    pci_read_config_word,
    pci_write_config_dword,
    pci_write_config_word,
)
from kernel.trace import capture
from kernel.uapi import idxd as uapi
from tests.drivers.idxd.conftest import Boot, dsa_hw
from tests.drivers.idxd.test_bof import ANON, CR, DST, RW, SRC, SZ, Process, _pattern, start

BIG = 0x7F60_0000_0000


def _iommu() -> IntelIommu:
    return dmar_state().units[0]


def _pdev(p: Process) -> PciDev:
    pdev = p.sva.dev
    assert isinstance(pdev, PciDev)
    return pdev


def test_queue_overflow_is_answered_by_hardware_and_cleared_by_the_driver(
    make_kernel: Boot,
) -> None:
    """One page request group of 2048 pages while the page request event is masked:
    the queue holds 2047, the last request (LPIG) is dropped with PRS.PRO and the unit
    answers the group Success itself. Once the event is unmasked the thread reports the
    2047 partial requests, finds the queue empty with PRO set, discards the partial
    faults that can never complete and clears PRO ("PRQ overflow detected" /
    "cleared"). The function got its one answer; nothing is left behind."""
    p = start(make_kernel, dsa={"pri_capacity": 4096})
    assert vm_mmap(p.mm, BIG, 8 << 20, RW, ANON) == BIG
    reg = _iommu().regs
    reg.writel(ir.DMA_FECTL_IM, ir.DMAR_PECTL_REG)
    pri = dsa_hw(p.kernel).pri
    assert pri is not None and pri.allocation == 2048  # PRQ_DEPTH, below the capacity
    answers: list[int] = []
    assert pri.request(p.pasid, False, False, BIG, True, answers.append, pages=2048)
    udelay(2)
    assert reg.readl(ir.DMAR_PRS_REG) == ir.DMA_PRS_PPR | ir.DMA_PRS_PRO
    assert answers == [PRG_RESP_SUCCESS] and not pri.outstanding  # answered by the unit
    with capture("intel_iommu:prq_report") as reports:
        reg.writel(0, ir.DMAR_PECTL_REG)
        udelay(10)
    assert len(reports) == p.unit.prq.written == 2047  # reported as partial faults
    dmesg = p.kernel.dmesg()
    assert "IOMMU: dmar0: PRQ overflow detected" in dmesg
    assert "IOMMU: dmar0: PRQ overflow cleared" in dmesg
    assert reg.readl(ir.DMAR_PRS_REG) == 0
    param = _pdev(p).iommu.fault_param  # type: ignore[union-attr]
    assert not param.partial and not param.faults
    assert answers == [PRG_RESP_SUCCESS]  # no second response for the dropped group
    p.exit()


def test_multi_page_group_is_handled_as_one_and_answered_once(make_kernel: Boot) -> None:
    """Three requests without LPIG wait as partial faults until the last one; the SVA
    handler resolves the four pages and one page group response answers them."""
    p = start(make_kernel)
    pri = dsa_hw(p.kernel).pri
    assert pri is not None
    answers: list[int] = []
    with capture("intel_iommu:*") as events:
        assert pri.request(p.pasid, False, False, DST, True, answers.append, pages=4)
        udelay(20)
    assert answers == [PRG_RESP_SUCCESS]
    reports = [e.text for e in events if e.name == "intel_iommu:prq_report"]
    assert [r.split(" ")[-3] for r in reports] == ["-w---", "-w---", "-w---", "-w--l"]
    grp = [
        e
        for e in events
        if e.name == "intel_iommu:qi_submit" and e.fields["type"] == "page_grp_resp"
    ]
    assert len(grp) == 1
    for i in range(4):  # the handler made all four pages resident and writable
        hit = p.mm.pgd.walk(DST + 4096 * i)
        assert hit is not None and hit[0] & 0x2
    p.exit()


def test_allocation_below_demand_holds_requests_back(make_kernel: Boot) -> None:
    """Software allocates one outstanding request: two blocked descriptors take turns,
    the function never has two page requests out, both complete with the right bytes."""
    p = start(make_kernel)
    pdev = _pdev(p)
    pci_write_config_dword(pdev, pdev.pri_cap + PCI_PRI_ALLOC_REQ, 1)
    data = _pattern(2 * 4096)
    p.write(SRC, data)
    with capture("hw_vtd:*") as events:
        p.submit(SRC, DST, 2 * 4096, CR)
        p.submit(SRC, DST + SZ - 2 * 4096, 2 * 4096, CR + 32)
        first, second = p.wait(CR), p.wait(CR + 32)
    assert first.status == second.status == uapi.DSA_COMP_SUCCESS
    assert p.read(DST, 8192) == p.read(DST + SZ - 8192, 8192) == data
    out = peak = 0
    for e in events:
        out += {"hw_vtd:page_request": 1, "hw_vtd:prg_response": -1}.get(e.name, 0)
        peak = max(peak, out)
    hw = dsa_hw(p.kernel)
    assert peak == 1 and hw.pri is not None and hw.pri.stats.held >= 1
    assert hw.pri.stats.requests == 4
    p.exit()


def test_response_for_an_unknown_prg_index_sets_uprgi(make_kernel: Boot) -> None:
    """A page group response nobody asked for (a driver bug): the function records
    Unexpected PRG Index and ignores it; page requests keep working."""
    p = start(make_kernel)
    pdev = _pdev(p)
    qw0 = (
        ir.QI_PGRP_PASID(p.pasid)
        | ir.QI_PGRP_DID(pdev.rid)
        | ir.QI_PGRP_PASID_P(1)
        | ir.QI_PGRP_RESP_CODE(ir.QI_RESP_SUCCESS)
        | ir.QI_PGRP_RESP_TYPE
    )
    assert qi_submit_sync(_iommu(), [(qw0, ir.QI_PGRP_IDX(300) | ir.QI_PGRP_LPIG(1), 0, 0)]) == 0
    status = pci_read_config_word(pdev, pdev.pri_cap + PCI_PRI_STATUS)
    assert status & PCI_PRI_STATUS_UPRGI
    p.write(SRC, _pattern(4096))
    assert p.memmove(SRC, DST, 4096).status == uapi.DSA_COMP_SUCCESS
    p.exit()


def test_pri_disabled_with_a_request_outstanding(make_kernel: Boot) -> None:
    """Enable is cleared while the first page's request is out: that request is still
    answered and its page copied; the second page then faults with no page request
    allowed, so the descriptor ends as a page fault (0x03) after 4 KiB, and the
    interface reports Stopped only once nothing is outstanding."""
    p = start(make_kernel)
    pdev = _pdev(p)
    hw = dsa_hw(p.kernel)
    assert hw.pri is not None
    data = _pattern(2 * 4096)
    p.write(SRC, data)
    p.submit(SRC, DST, 2 * 4096)
    while not hw.pri.outstanding:
        ndelay(50)
    ctrl = pdev.pri_cap + PCI_PRI_CTRL
    pci_write_config_word(pdev, ctrl, 0)
    stopped = pci_read_config_word(pdev, pdev.pri_cap + PCI_PRI_STATUS) & PCI_PRI_STATUS_STOPPED
    assert not stopped
    cr = p.wait()
    assert cr.status == uapi.DSA_COMP_PAGE_FAULT_NOBOF | uapi.DSA_COMP_STATUS_WRITE
    assert cr.bytes_completed == 4096 and cr.fault_addr == DST + 4096
    assert p.read(DST, 4096) == data[:4096]
    assert pci_read_config_word(pdev, pdev.pri_cap + PCI_PRI_STATUS) & PCI_PRI_STATUS_STOPPED
    pci_write_config_word(pdev, ctrl, PCI_PRI_CTRL_ENABLE)  # as the driver left it
    p.exit()


def test_unbind_drains_a_page_request_still_in_flight(make_kernel: Boot) -> None:
    """The process unbinds while its device's page request is on its way to the unit:
    the PASID teardown's drain (an invalidation wait with PD) completes only once the
    request is in the queue, the thread has handled it and the IOPF queue is flushed,
    so nothing of that PASID is left in the queue or in software afterwards."""
    p = start(make_kernel)
    unit = p.unit
    p.write(SRC, _pattern(4096))
    p.submit(SRC, DST, 4096)
    while not unit.prq.in_transit:
        ndelay(50)
    p.exit()
    assert unit.prq.in_transit == 0 and unit.prq.written == 1
    assert unit.regs["PQH"] == unit.regs["PQT"]
    assert _pdev(p).iommu is not None
    fault_param = _pdev(p).iommu.fault_param  # type: ignore[union-attr]
    assert fault_param is not None and not fault_param.faults and not fault_param.partial
    udelay(100)  # the device's retry finds the PASID gone: a recorded fault, no stale use
    assert "SM: Present bit in PASID Table Entry is clear" in p.kernel.dmesg()


def _answers(p: Process, addr: int, pasid: int | None = None) -> list[int]:
    pri = dsa_hw(p.kernel).pri
    assert pri is not None
    out: list[int] = []
    assert pri.request(p.pasid if pasid is None else pasid, False, False, addr, True, out.append)
    return out


def test_page_request_for_a_pasid_without_a_domain_is_aborted(make_kernel: Boot) -> None:
    """No domain is attached at the request's PASID: the core warns "iopf with pasid N
    aborted" and answers Response Failure, which Linux encodes as 2 (reserved in
    PCIe): the function takes it as Response Failure and stops asking."""
    p = start(make_kernel)
    answers = _answers(p, DST, pasid=77)
    udelay(20)
    assert answers == [PRG_RESP_FAILURE]
    assert "iopf with pasid 77 aborted" in p.kernel.dmesg()
    pdev = _pdev(p)
    assert pci_read_config_word(pdev, pdev.pri_cap + PCI_PRI_STATUS) & PCI_PRI_STATUS_RF
    p.exit()


def test_no_memory_for_the_fault_group_answers_response_failure(make_kernel: Boot) -> None:
    p = start(make_kernel)
    injector().arm(1, frozenset({"kmalloc"}))
    try:
        answers = _answers(p, DST)
        udelay(20)
    finally:
        injector().disarm()
    assert answers == [PRG_RESP_FAILURE]
    assert f"iopf with pasid {p.pasid} aborted" in p.kernel.dmesg()
    p.exit()


def test_disabling_iopf_answers_pending_groups_invalid_once(make_kernel: Boot) -> None:
    """IOPF is turned off while a reported group waits for its work item: the group is
    answered Invalid Request when the device leaves the IOPF queue, and the work that
    runs later sends nothing more."""
    p = start(make_kernel)
    param = _pdev(p).iommu.fault_param  # type: ignore[union-attr]
    answers = _answers(p, DST)
    while not param.faults:
        ndelay(50)
    iommu_dev_disable_feature(_pdev(p), IOMMU_DEV_FEAT_IOPF)
    udelay(20)
    assert answers == [PRG_RESP_INVALID] and not param.faults
    iommu_dev_enable_feature(_pdev(p), IOMMU_DEV_FEAT_IOPF)
    with pytest.raises(EBUSY, match="already on an IOPF queue"):
        iopf_queue_add_device(_iommu().iopf_queue, _pdev(p))
    with pytest.raises(EBUSY, match="PRI already enabled"):
        iommu_dev_enable_feature(_pdev(p), IOMMU_DEV_FEAT_IOPF)
    p.exit()
