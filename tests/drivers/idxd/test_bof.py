"""Block on fault through PCIe page requests, end to end on the default VT-d machine.

A process address space (an mm with anonymous VMAs) is bound to the DSA with SVA
(in-kernel ``iommu_sva_bind_device``); a descriptor carrying the mm's PASID (ENQCMD,
priv=0) goes to a shared WQ configured with block_on_fault. Where the device's ATS
Translation Request finds no page, the DSA sends a page request; VT-d writes it to
its page request queue and raises the page request event; intel ``prq_event_thread``
reports it to the IOMMU core, whose SVA handler faults the page in with
``handle_mm_fault`` and answers with a page group response; the DSA retries. The
evidence is the completion record and the bytes in the process's memory, the trace
(request → report → response, per PRG index, in order), and the hardware counters.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from attrs import define

from drivers.idxd.init import idxd_find
from drivers.idxd.sysfs import idxd_enable, idxd_load_config
from hw.vtd import VtdUnit
from iommulab.presets import PRESETS
from kernel.boot import Kernel
from kernel.delay import NSEC_PER_USEC, ktime_get_ns, wait_next_event
from kernel.errno import EOPNOTSUPP
from kernel.fork import mm_alloc, mmput
from kernel.io import enqcmd
from kernel.iommu.iommu_sva import (
    IommuSva,
    iommu_sva_bind_device,
    iommu_sva_get_pasid,
    iommu_sva_unbind_device,
)
from kernel.memory import access_remote_vm
from kernel.mm_types import MmStruct
from kernel.mmap import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    vm_mmap,
)
from kernel.trace import capture
from kernel.uapi import idxd as uapi
from tests.drivers.idxd.conftest import Boot, dsa_hw

SRC = 0x7F10_0000_0000
DST = 0x7F20_0000_0000
RO = 0x7F30_0000_0000
CR = 0x7F40_0000_0000
HOLE = 0x7F50_0000_0000
SZ = 2 << 20
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
BOF_FLAGS = uapi.IDXD_OP_FLAG_CRAV | uapi.IDXD_OP_FLAG_RCR | uapi.IDXD_OP_FLAG_BOF


def _spec(dsa: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = copy.deepcopy(PRESETS["default"])
    spec["ram"] = "64M"
    spec["iommus"][0]["config"] = {"strict_stale": True}
    spec["devices"][0]["config"] = dsa or {}
    return spec


def _config(bof: int, **extra: int) -> dict[str, Any]:
    wq = {
        **extra,
        "dev": "wq0.0",
        "mode": "shared",
        "size": 16,
        "threshold": 15,
        "priority": 10,
        "type": "kernel",
        "name": "bof",
        "driver_name": "dmaengine",
        "block_on_fault": bof,
    }
    return {
        "dev": "dsa0",
        "groups": [
            {
                "dev": "group0.0",
                "grouped_workqueues": [wq],
                "grouped_engines": [{"dev": "engine0.0"}],
            }
        ],
    }


@define(eq=False)
class Process:
    """A process whose mm is bound to the DSA, and the WQ it submits to."""

    kernel: Kernel
    mm: MmStruct
    sva: IommuSva
    pasid: int

    @property
    def unit(self) -> VtdUnit:
        unit = self.kernel.machine.iommus["dmar0"]  # type: ignore[attr-defined]
        assert isinstance(unit, VtdUnit)
        return unit

    def write(self, addr: int, data: bytes) -> None:
        assert access_remote_vm(self.mm, addr, bytearray(data), True) == len(data)

    def read(self, addr: int, size: int) -> bytes:
        buf = bytearray(size)
        assert access_remote_vm(self.mm, addr, buf, False) == size
        return bytes(buf)

    def submit(self, src: int, dst: int, size: int, cr: int = CR, flags: int = BOF_FLAGS) -> None:
        """ENQCMD a MEMMOVE with the process's PASID (completion record at ``cr``)."""
        self.write(cr, bytes(32))
        d = uapi.DsaHwDesc()
        d.opcode = uapi.DSA_OPCODE_MEMMOVE
        d.flags = flags
        d.completion_addr = cr
        d.src_addr = src
        d.dst_addr = dst
        d.xfer_size = size
        wq = idxd_find("dsa0").wqs[0]
        assert wq.portal is not None
        assert enqcmd(wq.portal, d.to_bytes(), self.pasid) == 0

    def wait(self, cr: int = CR) -> Any:
        """Poll the completion record until the device wrote it (for up to 100 ms of
        virtual time), running to the next clock event between reads: only events make
        the device write, so this sees what a 1 us poll sees, in far fewer reads."""
        deadline = ktime_get_ns() + 100_000 * NSEC_PER_USEC
        while True:
            rec = uapi.DsaCompletionRecord.from_bytes(self.read(cr, 32))
            if rec.status:
                return rec
            if not wait_next_event(deadline):
                raise AssertionError("the descriptor never completed")

    def memmove(self, src: int, dst: int, size: int, flags: int = BOF_FLAGS) -> Any:
        """Submit a MEMMOVE and wait for its completion record."""
        self.submit(src, dst, size, CR, flags)
        return self.wait(CR)

    def exit(self) -> None:
        iommu_sva_unbind_device(self.sva)
        mmput(self.mm)


def start(make_kernel: Boot, bof: int = 1, dsa: dict[str, Any] | None = None, **wq: int) -> Process:
    k = make_kernel(_spec(dsa), "idxd.default_config=0", with_intel=True)
    idxd = idxd_find("dsa0")
    assert idxd.user_pasid_enabled  # idxd_enable_sva: IOPF (PRI) and SVA are on
    idxd_load_config(idxd, _config(bof, **wq))
    idxd_enable(idxd)
    mm = mm_alloc()
    assert mm is not None
    for va, size, prot in ((SRC, SZ, RW), (DST, SZ, RW), (RO, 4096, PROT_READ), (CR, 4096, RW)):
        assert vm_mmap(mm, va, size, prot, ANON) == va
    sva = iommu_sva_bind_device(idxd.pdev, mm)
    return Process(k, mm, sva, iommu_sva_get_pasid(sva))


def _pattern(size: int) -> bytes:
    block = bytes(range(251)) * 17
    return (block * (size // len(block) + 1))[:size]


def test_untouched_2mib_destination_is_faulted_in_through_page_requests(
    make_kernel: Boot,
) -> None:
    p = start(make_kernel)
    data = _pattern(SZ)
    p.write(SRC, data)  # the process filled its source; the destination is untouched
    with capture("*") as events:
        cr = p.memmove(SRC, DST, SZ)
    assert cr.status == uapi.DSA_COMP_SUCCESS
    assert p.read(DST, SZ) == data
    requests = [e for e in events if e.name == "hw_vtd:page_request"]
    reports = [e for e in events if e.name == "intel_iommu:prq_report"]
    responses = [
        e
        for e in events
        if e.name == "intel_iommu:qi_submit" and e.fields["type"] == "page_grp_resp"
    ]
    delivered = [e for e in events if e.name == "hw_vtd:prg_response"]
    assert len(requests) == len(reports) == len(responses) == len(delivered) == SZ // 4096
    assert [e.fields["addr"] for e in requests] == list(range(DST, DST + SZ, 4096))
    assert all(e.fields["write"] and e.fields["pasid"] == p.pasid for e in requests)
    assert all(e.fields["code"] == 0 for e in delivered)  # Success
    order = [e.name for e in events if e.name in {
        "hw_vtd:page_request", "intel_iommu:prq_report", "hw_vtd:prg_response",
        "hw_dsa:descriptor_complete",
    }]  # fmt: skip
    cycle = ["hw_vtd:page_request", "intel_iommu:prq_report", "hw_vtd:prg_response"]
    assert order == cycle * (SZ // 4096) + ["hw_dsa:descriptor_complete"]
    assert "seq# 0: rid=0x10 addr=0x7f2000000 -w--l pasid=0x" in reports[0].text
    assert p.unit.prq.overflows == 0 and p.unit.regs["PQH"] == p.unit.regs["PQT"]
    hw = dsa_hw(p.kernel)
    assert hw.bof.stats.page_requests == SZ // 4096 and hw.bof.stats.failed == 0
    assert hw.pri is not None and hw.pri.stats.requests == SZ // 4096 and not hw.pri.outstanding
    p.exit()


def test_each_retry_looks_up_only_what_it_moves(make_kernel: Boot) -> None:
    """A retried MEMMOVE continues from the faulting address and translates only up
    to its next fault: over the 512 page requests of an untouched 2 MiB destination
    the device's ATC serves a few pages per retry, not the whole remaining source
    each time (which would be ~131k page hits), and it sends no more Translation
    Requests than translating the rest at once would."""
    p = start(make_kernel)
    data = _pattern(SZ)
    p.write(SRC, data)
    hw = dsa_hw(p.kernel)
    assert hw.ats_port is not None
    atc = hw.ats_port.atc.stats
    hits, requests = atc.hits, atc.translation_requests
    cr = p.memmove(SRC, DST, SZ)
    assert cr.status == uapi.DSA_COMP_SUCCESS and p.read(DST, SZ) == data
    pages = SZ // 4096
    assert hw.bof.stats.retries == pages
    assert atc.hits - hits <= 4 * pages
    # the source once, the destination once per attempt (1 + 512), the completion record
    assert atc.translation_requests - requests == 1 + (1 + pages) + 1
    p.exit()


def test_resumed_copy_meets_faults_after_its_windows_grow(make_kernel: Boot) -> None:
    """An 8 MiB destination touched except for four pages (the first, two in the
    middle of later windows and one past the point where a retry translates the rest
    at once): exactly those pages are requested, in order, and every byte arrives."""
    size = 8 << 20
    p = start(make_kernel, max_transfer_size=size)
    src, dst = SRC + (64 << 20), DST + (64 << 20)
    for va in (src, dst):
        assert vm_mmap(p.mm, va, size, RW, ANON) == va
    data = _pattern(size)
    p.write(src, data)
    holes = [0, 3 * 4096, 300 * 4096, (6 << 20) + 5 * 4096]
    for off in range(0, size, 4096):
        if off not in holes:
            p.write(dst + off, b"\xee")  # fault the page in from the CPU
    with capture("hw_vtd:page_request") as events:
        cr = p.memmove(src, dst, size)
    assert cr.status == uapi.DSA_COMP_SUCCESS
    assert [e.fields["addr"] for e in events] == [dst + off for off in holes]
    assert p.read(dst, size) == data
    p.exit()


@pytest.mark.parametrize(
    ("src", "dst", "write"),
    [(SRC, HOLE, True), (HOLE, DST, False), (SRC, RO, True)],
    ids=["write-outside-vma", "read-outside-vma", "write-read-only"],
)
def test_refused_page_request_ends_in_a_partial_completion(
    make_kernel: Boot, src: int, dst: int, write: bool
) -> None:
    p = start(make_kernel)
    p.write(SRC, _pattern(4096))
    before = p.read(RO, 4096)
    cr = p.memmove(src, dst, 4096)
    expect = uapi.DSA_COMP_PAGE_FAULT_IR | (uapi.DSA_COMP_STATUS_WRITE if write else 0)
    assert cr.status == expect
    assert cr.bytes_completed == 0 and cr.fault_addr == (dst if write else src)
    assert p.read(RO, 4096) == before  # nothing written to the read-only mapping
    hw = dsa_hw(p.kernel)
    assert hw.bof.stats.failed == 1
    assert hw.pri is not None and not hw.pri.response_failed  # Invalid Request, not failure
    p.exit()


def test_partial_progress_is_kept_when_a_later_page_is_refused(make_kernel: Boot) -> None:
    """The copy runs past the end of the destination VMA: its last two pages are
    faulted in and copied, the page beyond is refused, and the completion record
    counts the bytes moved before it."""
    p = start(make_kernel)
    data = _pattern(3 * 4096)
    p.write(SRC, data)
    dst = DST + SZ - 2 * 4096
    cr = p.memmove(SRC, dst, 3 * 4096)
    assert cr.status == uapi.DSA_COMP_PAGE_FAULT_IR | uapi.DSA_COMP_STATUS_WRITE
    assert cr.bytes_completed == 2 * 4096 and cr.fault_addr == DST + SZ
    assert p.read(dst, 2 * 4096) == data[: 2 * 4096]
    p.exit()


def test_without_block_on_fault_the_record_reports_the_fault(make_kernel: Boot) -> None:
    p = start(make_kernel, bof=0)
    p.write(SRC, _pattern(8192))
    cr = p.memmove(SRC, DST, 8192)
    assert cr.status == uapi.DSA_COMP_PAGE_FAULT_NOBOF | uapi.DSA_COMP_STATUS_WRITE
    assert cr.bytes_completed == 0 and cr.fault_addr == DST
    assert p.unit.prq.received == 0
    p.exit()


def test_wq_prs_disable_keeps_block_on_fault_from_asking(make_kernel: Boot) -> None:
    """WQCAP offers the per-WQ PRS disable (bit 55) and the WQ is configured with
    prs_disable (accel-config's attribute, written to WQCFG dword 2 bit 3): a BOF
    descriptor then sends no page request and completes as a page fault (0x03)."""
    k = make_kernel(_spec({"wq_prs_disable": True}), "idxd.default_config=0", with_intel=True)
    idxd = idxd_find("dsa0")
    assert idxd.hw.wq_cap >> 55 & 1
    idxd_load_config(idxd, _config(1, prs_disable=1))
    idxd_enable(idxd)
    assert dsa_hw(k).wqs[0].prs_disable and dsa_hw(k).wqs[0].bof
    mm = mm_alloc()
    assert mm is not None
    for va in (SRC, DST, CR):
        assert vm_mmap(mm, va, 4096, RW, ANON) == va
    sva = iommu_sva_bind_device(idxd.pdev, mm)
    p = Process(k, mm, sva, iommu_sva_get_pasid(sva))
    p.write(SRC, _pattern(4096))
    cr = p.memmove(SRC, DST, 4096)
    assert cr.status == uapi.DSA_COMP_PAGE_FAULT_NOBOF | uapi.DSA_COMP_STATUS_WRITE
    assert cr.fault_addr == DST and p.unit.prq.received == 0
    p.exit()


def test_prs_disable_is_refused_without_the_capability(make_kernel: Boot) -> None:
    make_kernel(_spec(), "idxd.default_config=0", with_intel=True)
    with pytest.raises(EOPNOTSUPP, match="no per-WQ PRS disable"):
        idxd_load_config(idxd_find("dsa0"), _config(1, prs_disable=1))
