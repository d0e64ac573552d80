"""PCIe PRI on a DSA and the VT-d page request queue, at register and RAM level.

The DSA at 00:02.0 has a PRI capability (``hw.pri.PriPort``); its page requests go to
the unit, which writes 32-byte descriptors into the queue at PQA and signals the page
request event; page group responses come back through the invalidation queue. These
tests drive both sides the way hardware and Linux do and read the results from config
space, registers and RAM."""

from __future__ import annotations

import pytest

from hw.pci import PCI_EXT_CAP_ID_PRI
from hw.pri import (
    PCI_PRI_STATUS_PASID,
    PCI_PRI_STATUS_RF,
    PCI_PRI_STATUS_STOPPED,
    PCI_PRI_STATUS_UPRGI,
    PRG_RESP_FAILURE,
    PRG_RESP_INVALID,
    PRG_RESP_SUCCESS,
    PageRequest,
    PriPort,
)
from hw.vtd import entries as ent
from hw.vtd import registers as vr
from hw.vtd.prq import PR_TRANSIT_NS, encode_page_request
from tests.hw.vtd.helpers import RID, PageTable, Queue, reg_read, reg_write
from tests.hw.vtd.test_devtlb import BDF, DID, PASID, Rig

MSI_ADDR = 0xFEE0_0000
MSI_DATA = 0x41
VA = 0x40_0000


class PrqRig(Rig):
    """A scalable-mode unit with the DSA's context entry (PRE as asked), a 4 KiB page
    request queue (128 descriptors) and its event unmasked, and PRI enabled."""

    def __init__(self, pre: bool = True, alloc: int = 512, fpd: bool = False) -> None:
        super().__init__()
        ctx = self.t.sm_ctx(RID, fpd=fpd)
        lo = self.m.memory.read_u64(ctx) | ent.SmCtxLo.DTE.mask
        self.m.memory.write_u64(ctx, lo | (ent.SmCtxLo.PRE.mask if pre else 0))
        self.t.pasid_entry(RID, PASID, ent.PGTT_FL, DID, PageTable(self.m, self.pages, 4, fl=True))
        self.start()
        self.prq = self.pages.alloc()
        reg_write(self.m, vr.PQH_OFF, 0, 8)
        reg_write(self.m, vr.PQT_OFF, 0, 8)
        reg_write(self.m, vr.PQA_OFF, self.prq, 8)
        reg_write(self.m, vr.PEDATA_OFF, MSI_DATA)
        reg_write(self.m, vr.PEADDR_OFF, MSI_ADDR)
        reg_write(self.m, vr.PECTL_OFF, 0)
        self.cap = self.fn.find_ext_cap(PCI_EXT_CAP_ID_PRI)
        self.cfg(0xC, alloc, 4)
        self.cfg(4, 1)
        self.answers: list[tuple[int, int]] = []

    @property
    def pri(self) -> PriPort:
        assert self.fn.pri is not None
        return self.fn.pri

    def cfg(self, off: int, value: int, size: int = 2) -> None:
        self.m.pci_config_write(BDF, self.cap + off, size, value)

    def status(self) -> int:
        return self.fn.config_read(self.cap + 6, 2)

    def ask(self, page: int, write: bool = True) -> bool:
        def done(code: int) -> None:
            self.answers.append((page, code))

        return self.pri.request(PASID, False, False, VA + 4096 * page, write, done)

    def msis(self) -> int:
        return sum(1 for a, d in self.m.lost_msis if (a, d) == (MSI_ADDR, MSI_DATA))

    def desc(self, slot: int) -> tuple[int, ...]:
        return self.m.memory.read_u64s(self.prq + 32 * slot, 4)

    def respond(self, prgi: int, code: int, q: Queue, **extra: int) -> None:
        qw0 = ent.QiPgrpQw0.encode(TYPE=ent.QI_PGRP, PP=1, RC=code, RID=RID, PASID=PASID, **extra)
        q.submit((qw0, ent.QiPgrpQw1.encode(LPIG=1, PRGI=prgi)))


def test_pri_capability_resets_stopped_and_asks_for_pasid_in_responses() -> None:
    r = Rig()
    cap = r.fn.find_ext_cap(PCI_EXT_CAP_ID_PRI)
    assert r.fn.config_read(cap + 6, 2) == PCI_PRI_STATUS_STOPPED | PCI_PRI_STATUS_PASID
    assert r.fn.config_read(cap + 8, 4) == 512  # capacity, read-only
    r.m.pci_config_write(BDF, cap + 8, 4, 7)
    assert r.fn.config_read(cap + 8, 4) == 512
    assert r.fn.pri is not None and not r.fn.pri.request(None, False, False, 0, False, print)


def test_page_request_descriptor_lands_in_ram_with_one_event() -> None:
    r = PrqRig()
    assert not r.status() & PCI_PRI_STATUS_STOPPED  # enabling cleared Stopped
    assert r.ask(3) and r.ask(4, write=False)
    assert r.unit.prq.in_transit == 2 and reg_read(r.m, vr.PQT_OFF, 8) == 0
    r.m.clock.advance(PR_TRANSIT_NS)
    assert reg_read(r.m, vr.PQT_OFF, 8) == 64
    q0, q1, q2, q3 = r.desc(0)
    assert q0 == 1 | 1 << 8 | RID << 16 | PASID << 32  # type 1, PASID present
    assert q1 == 0b110 | (VA + 3 * 4096)  # W, LPIG, PRG index 0, page address
    assert (q2, q3) == (0, 0)
    assert r.desc(1)[1] == 0b101 | 1 << 3 | (VA + 4 * 4096)  # R, LPIG, index 1
    assert r.msis() == 1  # PPR 0 -> 1 signalled once
    assert reg_read(r.m, vr.PRS_OFF) == vr.PRS.PPR.mask
    reg_write(r.m, vr.PRS_OFF, vr.PRS.PPR.mask)  # RW1C
    r.ask(5)
    r.m.clock.advance(PR_TRANSIT_NS)
    assert r.msis() == 2


def test_masked_event_is_pending_until_unmasked() -> None:
    r = PrqRig()
    reg_write(r.m, vr.PECTL_OFF, vr.EventControl.IM.mask)
    r.ask(0)
    r.m.clock.advance(PR_TRANSIT_NS)
    assert r.msis() == 0 and reg_read(r.m, vr.PECTL_OFF) == vr.EventControl.IM.mask | 1 << 30
    reg_write(r.m, vr.PECTL_OFF, 0)
    assert r.msis() == 1 and reg_read(r.m, vr.PECTL_OFF) == 0


def test_page_group_response_resumes_the_function() -> None:
    r = PrqRig()
    r.ask(0)
    r.ask(1)
    r.m.clock.advance(PR_TRANSIT_NS)
    q = r.queue()
    r.respond(1, PRG_RESP_INVALID, q)
    r.respond(0, PRG_RESP_SUCCESS, q)
    assert q.done() and r.answers == [(1, PRG_RESP_INVALID), (0, PRG_RESP_SUCCESS)]
    assert not r.pri.outstanding and r.pri.stats.responses == 2


def test_response_for_an_unknown_prg_index_sets_uprgi_and_nothing_else() -> None:
    r = PrqRig()
    r.ask(0)
    r.m.clock.advance(PR_TRANSIT_NS)
    r.respond(77, PRG_RESP_SUCCESS, r.queue())
    assert r.status() & PCI_PRI_STATUS_UPRGI and r.answers == [] and 0 in r.pri.outstanding
    r.cfg(6, PCI_PRI_STATUS_UPRGI)  # RW1C
    assert not r.status() & PCI_PRI_STATUS_UPRGI


def test_response_failure_fails_every_outstanding_group_and_stops_requests() -> None:
    r = PrqRig()
    for page in range(3):
        r.ask(page)
    r.m.clock.advance(PR_TRANSIT_NS)
    r.respond(1, PRG_RESP_FAILURE, r.queue())
    assert r.status() & PCI_PRI_STATUS_RF
    assert sorted(r.answers) == [(p, PRG_RESP_FAILURE) for p in range(3)]
    assert not r.ask(9)  # no request while Response Failure is set
    r.cfg(4, 0)
    r.cfg(4, 1)  # re-enabling clears RF
    assert not r.status() & PCI_PRI_STATUS_RF and r.ask(9)


def test_reserved_response_code_is_taken_as_response_failure() -> None:
    r = PrqRig()
    r.ask(0)
    r.m.clock.advance(PR_TRANSIT_NS)
    r.respond(0, 2, r.queue())  # Linux's IOMMU_PAGE_RESP_FAILURE value, reserved in PCIe
    assert r.answers == [(0, PRG_RESP_FAILURE)] and r.status() & PCI_PRI_STATUS_RF


def test_requests_beyond_the_allocation_wait_for_a_credit() -> None:
    r = PrqRig(alloc=2)
    for page in range(5):
        assert r.ask(page)
    assert len(r.pri.outstanding) == 2 and len(r.pri.queued) == 3 and r.pri.stats.held == 3
    r.m.clock.advance(PR_TRANSIT_NS)
    assert reg_read(r.m, vr.PQT_OFF, 8) == 64  # only two reached the queue
    q = r.queue()
    r.respond(0, PRG_RESP_SUCCESS, q)
    r.m.clock.advance(PR_TRANSIT_NS)
    assert len(r.pri.outstanding) == 2 and reg_read(r.m, vr.PQT_OFF, 8) == 96


def test_zero_allocation_sends_nothing() -> None:
    r = PrqRig(alloc=0)
    assert r.ask(0)
    r.m.clock.advance(PR_TRANSIT_NS)
    assert r.unit.prq.received == 0 and len(r.pri.queued) == 1


def test_disabling_pri_with_requests_outstanding_stops_only_after_their_responses() -> None:
    r = PrqRig()
    r.ask(0)
    r.ask(1)
    r.cfg(4, 0)  # Enable cleared: no new request, the two still count
    assert not r.status() & PCI_PRI_STATUS_STOPPED and not r.ask(2)
    r.m.clock.advance(PR_TRANSIT_NS)
    q = r.queue()
    r.respond(0, PRG_RESP_SUCCESS, q)
    assert not r.status() & PCI_PRI_STATUS_STOPPED
    r.respond(1, PRG_RESP_SUCCESS, q)
    assert r.status() & PCI_PRI_STATUS_STOPPED
    assert r.answers == [(0, PRG_RESP_SUCCESS), (1, PRG_RESP_SUCCESS)]


def test_reset_while_disabled_drops_outstanding_requests() -> None:
    r = PrqRig()
    r.ask(0)
    r.cfg(4, 2)  # Enable 0 and Reset in one write
    assert r.answers == [(0, PRG_RESP_FAILURE)] and r.status() & PCI_PRI_STATUS_STOPPED
    assert r.fn.config_read(r.cap + 4, 2) == 0  # Reset reads 0
    r.m.clock.advance(PR_TRANSIT_NS)
    r.respond(0, PRG_RESP_SUCCESS, r.queue())  # the host answers the dropped request
    assert r.status() & PCI_PRI_STATUS_UPRGI


def test_full_queue_overflows_with_an_automatic_success_response() -> None:
    r = PrqRig()
    reg_write(r.m, vr.PECTL_OFF, vr.EventControl.IM.mask)
    for page in range(129):
        r.ask(page)
    r.m.clock.advance(PR_TRANSIT_NS)
    assert reg_read(r.m, vr.PQT_OFF, 8) == 127 * 32  # one slot stays free
    assert reg_read(r.m, vr.PRS_OFF) == vr.PRS.PPR.mask | vr.PRS.PRO.mask
    assert r.answers == [(127, PRG_RESP_SUCCESS), (128, PRG_RESP_SUCCESS)]
    assert r.unit.prq.overflows == 2 and r.unit.prq.written == 127
    reg_write(r.m, vr.PQH_OFF, 127 * 32, 8)  # software consumed everything
    r.ask(200)
    r.m.clock.advance(PR_TRANSIT_NS)
    assert r.answers[-1] == (200, PRG_RESP_SUCCESS)  # dropped again: PRO still set
    reg_write(r.m, vr.PRS_OFF, vr.PRS.PRO.mask | vr.PRS.PPR.mask)
    r.ask(201)
    r.m.clock.advance(PR_TRANSIT_NS)
    assert reg_read(r.m, vr.PQT_OFF, 8) == 0  # written in the last slot, tail wrapped
    assert r.desc(127)[1] & ~0xFFF == VA + 201 * 4096


@pytest.mark.parametrize("fpd", [False, True])
def test_pre_clear_refuses_the_request_with_fault_0x47(fpd: bool) -> None:
    r = PrqRig(pre=False, fpd=fpd)
    r.ask(0)
    r.m.clock.advance(PR_TRANSIT_NS)
    assert r.answers == [(0, PRG_RESP_INVALID)] and r.unit.prq.written == 0
    hi = reg_read(r.m, 0x200 + 8, 8)
    if fpd:
        assert not hi >> 63 and r.unit.stats.faults_suppressed == 1
    else:
        assert hi >> 63 and vr.FRCD_HI.FR.get(hi) == 0x47 and vr.FRCD_HI.PV.get(hi) == PASID


def test_page_group_response_with_reserved_bits_is_an_iqe() -> None:
    r = PrqRig()
    r.ask(0)
    r.m.clock.advance(PR_TRANSIT_NS)
    q = r.queue()
    qw0 = ent.QiPgrpQw0.encode(TYPE=ent.QI_PGRP, RC=0, RID=RID) | 1 << 60
    q.submit((qw0, ent.QiPgrpQw1.encode(LPIG=1, PRGI=0)))
    assert reg_read(r.m, vr.FSTS_OFF) & vr.FSTS.IQE.mask and r.answers == []


@pytest.mark.parametrize("pd", [True, False])
def test_wait_with_pd_completes_after_requests_in_transit_are_written(pd: bool) -> None:
    r = PrqRig()
    q = r.queue()
    r.ask(0)
    r.m.memory.write_u32(q.status, 0)
    qw0, qw1 = q.wait_desc()
    q.put(qw0 | (ent.QiWaitQw0.PD.mask if pd else 0), qw1)
    reg_write(r.m, vr.IQT_OFF, q.tail, 8)
    r.m.clock.advance(PR_TRANSIT_NS - 1)
    assert q.done() is not pd and r.unit.prq.in_transit == 1
    r.m.clock.advance(1000)
    assert q.done() and r.unit.prq.written == 1


def test_descriptor_encoding_of_privileged_execute_requests() -> None:
    req = PageRequest(0x1234, 0xABCDE, True, True, 0x7000_1000, True, False, 0x1FF, False)
    qw0, qw1 = encode_page_request(req)
    assert qw0 == 1 | 1 << 8 | 0x1234 << 16 | 0xABCDE << 32 | 1 << 52 | 1 << 53
    assert qw1 == 1 | 0x1FF << 3 | 0x7000_1000
    qw0, _ = encode_page_request(PageRequest(0x10, None, True, True, 0, False, True, 0))
    assert qw0 == 1 | 0x10 << 16  # no PASID: no PASID, Execute or Privileged bits
