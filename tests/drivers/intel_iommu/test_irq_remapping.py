"""Interrupt remapping end to end: the bring-up order Linux 6.12 uses, an IRTE per MSI-X
vector, devices delivering MSI-X as DMA writes through VT-d, ``intremap=`` options, and
what a corrupted IRTE, a stale one, or a wrong message in a device's MSI-X table does
(fault record and dmesg, no interrupt). Everything through the booted kernel, MMIO,
RAM, the hardware trace and dmesg."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import dmar_state
from drivers.intel_iommu.irq_remapping import IrTable, qi_flush_iec
from hw.edu import (
    DMA_CMD_START,
    DMA_CMD_TO_RAM,
    EDU_BUF_ADDR,
    REG_DMA_CMD,
    REG_DMA_COUNT,
    REG_DMA_DST,
    REG_DMA_SRC,
    REG_IRQ_RAISE,
)
from hw.machine import Machine
from iommulab import cli
from iommulab.presets import preset
from kernel.boot import boot
from kernel.io import IoMem
from kernel.irq import IRQ_HANDLED, free_irq, irq_to_desc, request_irq
from kernel.mm import memory_read, memory_write
from kernel.pci import (
    PCI_IRQ_MSIX,
    PciDev,
    pci_alloc_irq_vectors,
    pci_free_irq_vectors,
    pci_ioremap_bar,
    pci_irq_vector,
)
from kernel.trace import capture
from tests.drivers.intel_iommu.conftest import Vtd, VtdFactory

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks

EDU_RID = 0x18  # 00:03.0
MSIX_TABLE = 0x1000  # hw/edu.py: BAR0 + 0x1000


class EduIrq:
    """The edu device with one MSI-X vector and a handler that counts."""

    def __init__(self, vtd: Vtd) -> None:
        self.vtd = vtd
        self.dev: PciDev = vtd.edu
        self.bar: IoMem = pci_ioremap_bar(self.dev, 0)
        assert pci_alloc_irq_vectors(self.dev, 1, 1, PCI_IRQ_MSIX) == 1
        self.irq = pci_irq_vector(self.dev, 0)
        self.count = 0
        request_irq(self.irq, self._handler, 0, "edu", self)

    def _handler(self, irq: int, dev_id: Any) -> int:
        self.count += 1
        return IRQ_HANDLED

    def raise_irq(self) -> None:
        self.bar.writel(1, REG_IRQ_RAISE)

    @property
    def vector(self) -> int:
        desc = irq_to_desc(self.irq)
        assert desc is not None
        return desc.vector

    def msix(self) -> tuple[int, int]:
        """(address, data) of MSI-X table entry 0, read over MMIO."""
        e = self.bar + MSIX_TABLE
        return e.readl(0) | e.readl(4) << 32, e.readl(8)

    def set_msix(self, addr: int, data: int) -> None:
        e = self.bar + MSIX_TABLE
        e.writel(addr & 0xFFFF_FFFF, 0)
        e.writel(addr >> 32, 4)
        e.writel(data, 8)

    @property
    def index(self) -> int:
        addr, _ = self.msix()
        return ((addr >> 5) & 0x7FFF) | ((addr >> 2) & 1) << 15

    def irte_at(self) -> int:
        iommu = dmar_state().units[0]
        table = iommu.ir_table
        assert isinstance(table, IrTable)
        return table.base + 16 * self.index

    def irte(self) -> tuple[int, int]:
        raw = memory_read(self.irte_at(), 16)
        return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")

    def write_irte(self, low: int, high: int, flush: bool) -> None:
        memory_write(self.irte_at(), low.to_bytes(8, "little") + high.to_bytes(8, "little"))
        if flush:
            qi_flush_iec(dmar_state().units[0], self.index, 0)

    def close(self) -> None:
        free_irq(self.irq, self)
        pci_free_irq_vectors(self.dev)


def test_bring_up_order_on_qemu_preset_matches_linux(iommulab_checks: KernelChecks) -> None:
    """Must-show: QIE; SIRTP; IEC global + wait; IRE; SRTP; context-cache, PASID-cache and
    IOTLB global (each + wait); TE; then index IEC flushes as idxd sets up its vectors —
    from the hardware trace. The first two qi_submit lines are the real trace's."""
    m = Machine(preset("qemu-7.2-sm"))
    events = "hw_vtd:reg_write,hw_vtd:qi_descriptor,intel_iommu:qi_submit"
    k = iommulab_checks.track(boot(m, f"intel_iommu=on,sm_on iommu.strict=1 trace_event={events}"))
    steps: list[str] = []
    gcmd = 0
    names = {1: "cc", 2: "iotlb", 4: "iec", 5: "wait", 7: "pc"}
    for e in k.tracer.events("hw_vtd:*"):
        f = e.fields
        if e.name == "hw_vtd:reg_write" and f["reg"] == "GCMD":
            value = f["value"]
            assert isinstance(value, int)
            oneshot = value & (ir.DMA_GCMD_SIRTP | ir.DMA_GCMD_SRTP)
            changed = oneshot or (value ^ gcmd)
            gcmd = value & ~oneshot
            bits = {
                ir.DMA_GCMD_QIE: "QIE",
                ir.DMA_GCMD_SIRTP: "SIRTP",
                ir.DMA_GCMD_IRE: "IRE",
                ir.DMA_GCMD_SRTP: "SRTP",
                ir.DMA_GCMD_TE: "TE",
            }
            steps += [n for b, n in bits.items() if changed & b]
        elif e.name == "hw_vtd:qi_descriptor":
            qw = f["qw"]
            assert isinstance(qw, tuple)
            dtype = f["type"]
            assert isinstance(dtype, int)
            kind = names[dtype]
            if kind == "iec":
                kind += " index" if qw[0] & ir.QI_IEC_SELECTIVE else " global"
            steps.append(kind)
    assert steps[:13] == [
        "QIE",
        "SIRTP",
        "iec global",
        "wait",
        "IRE",
        "SRTP",
        "cc",
        "wait",
        "pc",
        "wait",
        "iotlb",
        "wait",
        "TE",
    ]
    rest = steps[13:]
    assert rest and rest == ["iec index", "wait"] * (len(rest) // 2)
    submits = [
        e.ftrace().split("qi_submit: ", 1)[-1] for e in k.tracer.events("intel_iommu:qi_submit")
    ]
    assert submits[0] == "iec_inv dmar0: 0x4 0x0 0x0 0x0"  # linux-6.12-trace/trace.txt line 13
    assert submits[4] == "iec_inv dmar0: 0x14 0x0 0x0 0x0"  # idxd's first vector, index 0
    assert "DMAR-IR: Enabled IRQ remapping in xapic mode" in k.dmesg()


def test_msix_vector_gets_a_validated_irte_and_its_interrupt_is_remapped(
    make_vtd: VtdFactory,
) -> None:
    vtd = make_vtd("trace_event=hw_vtd:irte")
    with capture("hw_vtd:qi_descriptor") as alloc:
        edu = EduIrq(vtd)
    # allocation (reservation-mode activation), request_irq's activation and affinity
    assert [e.fields["type"] for e in alloc] == [ir.QI_IEC_TYPE, ir.QI_IWD_TYPE] * 3
    addr, data = edu.msix()
    assert addr & 0xFFF0_0000 == 0xFEE0_0000 and addr & 0x18 == 0x18 and data == 0
    low, high = edu.irte()
    assert low & 1 and (low >> 16) & 0xFF == edu.vector and (low >> 3) & 1  # P, V, RH
    assert high & 0xFFFF == EDU_RID and (high >> 18) & 3 == 1  # SID, SVT=verify SID/SQ
    edu.raise_irq()
    edu.raise_irq()
    assert edu.count == 2
    used = vtd.kernel.tracer.events("hw_vtd:irte")
    assert [(e.fields["sid"], e.fields["index"], e.fields["cached"]) for e in used] == [
        (EDU_RID, edu.index, False),
        (EDU_RID, edu.index, True),
    ]
    with capture("hw_vtd:qi_descriptor") as free:
        edu.close()
    assert [e.fields["type"] for e in free] == [ir.QI_IEC_TYPE, ir.QI_IWD_TYPE] * 2
    assert edu.irte() == (0, 0)


@pytest.mark.parametrize(
    ("what", "reason", "text"),
    [
        ("absent", 0x22, "Present field in the IRTE entry is clear"),
        ("sid", 0x26, "Blocked an interrupt request due to source-id verification failure"),
    ],
)
def test_corrupted_irte_faults_with_its_reason_and_raises_no_interrupt(
    make_vtd: VtdFactory, what: str, reason: int, text: str
) -> None:
    vtd = make_vtd("trace_event=hw_vtd:fault")
    edu = EduIrq(vtd)
    low, high = edu.irte()
    if what == "absent":
        low &= ~1
    else:
        high = (high & ~0xFFFF) | 0x0010  # another function's requester ID
    edu.write_irte(low, high, flush=True)
    edu.raise_irq()
    assert edu.count == 0
    (fault,) = vtd.kernel.tracer.events("hw_vtd:fault")
    assert (fault.fields["reason"], fault.fields["rid"]) == (reason, EDU_RID)
    line = (
        f"DMAR: [INTR-REMAP] Request device [00:03.0] fault index {edu.index:#x} "
        f"[fault reason {reason:#04x}] {text}"
    )
    assert line in vtd.kernel.dmesg()
    edu.close()


def test_irte_changed_without_iec_flush_is_reported_stale(make_vtd: VtdFactory) -> None:
    vtd = make_vtd("", {"strict_stale": False}, allow_stale=True)
    edu = EduIrq(vtd)
    edu.raise_irq()
    low, high = edu.irte()
    edu.write_irte(low & ~1, high, flush=False)  # cleared in RAM, never invalidated
    edu.raise_irq()
    assert vtd.unit.stats.stale_uses == 1
    assert edu.count == 2  # the cached entry is still what the unit uses
    edu.close()


@pytest.mark.parametrize(
    ("addr", "data", "reason"),
    [
        (0xFEE0_0000 | 0x1234 << 5 | 0x18, 0, 0x22),  # a handle nobody allocated
        (0xFEE0_0000 | 0x18, 0x1_0000, 0x20),  # reserved data bits
        (0xFEE0_0000, 0x30, 0x25),  # compatibility format while remapping is on
    ],
)
def test_wrong_message_in_the_msix_table_gives_a_remapping_fault(
    make_vtd: VtdFactory, addr: int, data: int, reason: int
) -> None:
    vtd = make_vtd("trace_event=hw_vtd:fault")
    edu = EduIrq(vtd)
    edu.set_msix(addr, data)
    edu.raise_irq()
    assert edu.count == 0
    assert [e.fields["reason"] for e in vtd.kernel.tracer.events("hw_vtd:fault")] == [reason]
    assert f"[fault reason {reason:#04x}]" in vtd.kernel.dmesg()
    edu.close()


def test_intremap_off_keeps_compatibility_format(make_vtd: VtdFactory) -> None:
    vtd = make_vtd("intremap=off trace_event=hw_vtd:irte")
    assert not vtd.unit.regs["GSTS"] & ir.DMA_GSTS_IRES
    assert "DMAR-IR" not in vtd.kernel.dmesg()
    edu = EduIrq(vtd)
    assert edu.msix() == (0xFEE0_0000, edu.vector)
    edu.raise_irq()
    assert edu.count == 1 and not vtd.kernel.tracer.events("hw_vtd:irte")
    edu.close()


def test_intremap_nosid_turns_source_validation_off(make_vtd: VtdFactory) -> None:
    vtd = make_vtd("intremap=nosid,nopost,no_x2apic_optout,bogus")
    edu = EduIrq(vtd)
    _, high = edu.irte()
    assert (high >> 18) & 3 == 0 and high & 0xFFFF == EDU_RID
    assert vtd.kernel.cmdline_problems == []
    edu.close()


def test_eim_unit_runs_remapping_in_x2apic_mode(make_vtd: VtdFactory) -> None:
    vtd = make_vtd("", {"eim": True})
    log = vtd.kernel.dmesg()
    assert (
        "DMAR-IR: Queued invalidation will be enabled to support x2apic and Intr-remapping." in log
    )
    assert "DMAR-IR: Enabled IRQ remapping in x2apic mode" in log
    assert vtd.unit.regs["IRTA"] & (1 << 11) and vtd.unit.irq.eime


@pytest.mark.parametrize("cmdline", ["", "intremap=off"])
def test_device_dword_write_to_the_window_is_an_interrupt_request(
    make_vtd: VtdFactory, cmdline: str
) -> None:
    """The edu DMA engine writes 4 bytes (the vector) to 0xFEE00000: with remapping off
    it is a compatibility-format interrupt, with remapping on it is blocked (0x25)."""
    vtd = make_vtd(cmdline)
    edu = EduIrq(vtd)
    edu.bar.writel(EDU_BUF_ADDR, REG_DMA_SRC)
    edu.bar.writel(0xFEE0_0000, REG_DMA_DST)
    edu.bar.writel(4, REG_DMA_COUNT)
    vtd.machine.functions[edu.dev.addr].buffer[0:4] = edu.vector.to_bytes(4, "little")  # type: ignore[attr-defined]
    edu.bar.writel(DMA_CMD_START | DMA_CMD_TO_RAM, REG_DMA_CMD)
    vtd.machine.clock.advance(10_000)
    if cmdline:
        assert edu.count == 1
    else:
        assert edu.count == 0 and "[fault reason 0x25]" in vtd.kernel.dmesg()
    edu.close()


def test_device_read_of_the_window_faults(make_vtd: VtdFactory) -> None:
    vtd = make_vtd()
    _, fault = vtd.dma_read(vtd.edu, 0xFEE0_0000, 4)
    assert fault is not None and fault.reason == 0x29
    assert "Request device [00:03.0] fault addr 0xfee00000 [fault reason 0x29]" in (
        vtd.kernel.dmesg()
    )


def test_dump_vtd_irq_lists_the_table_like_debugfs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dump", "vtd", "--irq"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Remapped Interrupt supported on IOMMU: dmar0"
    assert out[1].startswith(" IR table address:")
    assert out[2] == " Entry SrcID   DstID    Vct IRTE_high\t\tIRTE_low"
    rows = [r.split() for r in out[3:] if r.strip()]
    assert rows and all(r[1] == "00:02.0" and r[2] == "00000000" for r in rows)
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
