"""The fault-event interrupt handler: every pending record is printed with Linux's reason
string and cleared, the output is rate-limited as ``dmar_fault`` is, and a masked
fault event is delivered when software unmasks it."""

from __future__ import annotations

import pytest

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import dmar_fault_do_one, dmar_get_fault_reason, dmar_state
from kernel.delay import msleep
from tests.drivers.intel_iommu.conftest import Vtd

BASE = 0xFED9_0000
UNMAPPED = 0x7000_0000


def _fault_lines(v: Vtd) -> list[str]:
    return [ln for ln in v.kernel.log.lines() if "Request device" in ln]


def test_each_fault_is_printed_and_its_record_cleared(vtd: Vtd) -> None:
    for i in range(3):
        assert vtd.dma_read(vtd.edu, UNMAPPED + i * 0x1000, 8)[1] is not None
    lines = _fault_lines(vtd)
    assert [ln.split("fault addr ")[1].split()[0] for ln in lines] == [
        "0x70000000",
        "0x70001000",
        "0x70002000",
    ]
    regs = vtd.unit.regs
    assert regs["FSTS"] & (ir.DMA_FSTS_PPF | ir.DMA_FSTS_PFO) == 0
    assert all(not regs[f"FRCD{i}_HI"] >> 63 for i in range(8))


def test_fault_with_a_pasid_names_it(vtd: Vtd) -> None:
    _, fault = vtd.dma_read(vtd.dsa, UNMAPPED, 8, pasid=5)
    assert fault is not None and fault.reason == 0x59
    assert (
        "DMAR: [DMA Read PASID 0x5] Request device [00:02.0] fault addr 0x70000000 "
        "[fault reason 0x59] SM: Present bit in PASID Table Entry is clear"
    ) in vtd.kernel.dmesg()


def test_fault_output_is_rate_limited_with_a_suppressed_count(vtd: Vtd) -> None:
    for i in range(12):
        vtd.dma_read(vtd.edu, UNMAPPED + i * 0x1000, 8)
    assert vtd.unit.stats.faults_recorded == 12
    printed = len(_fault_lines(vtd))
    assert 0 < printed < 12
    msleep(5001)
    vtd.dma_read(vtd.edu, UNMAPPED, 8)
    log = vtd.kernel.dmesg()
    assert "dmar_fault: " in log and "callbacks suppressed" in log
    assert len(_fault_lines(vtd)) == printed + 1


def test_masked_fault_event_is_delivered_on_unmask(vtd: Vtd) -> None:
    vtd.machine.mmio_write(BASE + ir.DMAR_FECTL_REG, 4, ir.DMA_FECTL_IM)
    for i in range(10):
        vtd.dma_read(vtd.edu, UNMAPPED + i * 0x1000, 8)
    assert vtd.unit.regs["FSTS"] & ir.DMA_FSTS_PFO
    assert _fault_lines(vtd) == []
    vtd.machine.mmio_write(BASE + ir.DMAR_FECTL_REG, 4, 0)
    assert len(_fault_lines(vtd)) == 8
    assert vtd.unit.regs["FSTS"] & (ir.DMA_FSTS_PPF | ir.DMA_FSTS_PFO) == 0


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (0x01, "Present bit in root entry is clear"),
        (0x0D, "PCE for translation request specifies blocking"),
        (0x22, "Present field in the IRTE entry is clear"),
        (0x41, "SM: Present bit in Context Entry is clear"),
        (0x71, "SM: Present bit in first-level paging entry is clear"),
        (0x79, "SM: Read/Write permission error in second-level paging entry"),
        (0x85, "SM: No write permission for Write/AtomicOp request"),
        (0x8F, "Unknown"),
        (0x90, "SM: A/D bit update needed in first-level entry when set up in no snoop"),
        (0x1F, "Unknown"),
        (0xF0, "Unknown"),
    ],
)
def test_fault_reason_strings_are_linuxs(reason: int, text: str) -> None:
    assert dmar_get_fault_reason(reason)[0] == text


def test_interrupt_remapping_faults_print_the_index(vtd: Vtd) -> None:
    dmar_fault_do_one(dmar_state().units[0], 1, 0x22, -1, 0x0018, 5 << 48)
    assert (
        "DMAR: [INTR-REMAP] Request device [00:03.0] fault index 0x5 "
        "[fault reason 0x22] Present field in the IRTE entry is clear"
    ) in vtd.kernel.dmesg()
