"""Interrupt remapping comes up the way Linux 6.12 brings it up, checked from the
hardware's side (``hw_vtd:reg_write``, the invalidation queue) and from dmesg:

- every DMAR unit gets its table, global IEC flush and IRE before any unit gets a
  root table (Linux: ``irq_remapping_prepare``/``irq_remapping_enable`` in the x86
  APIC setup, long before ``intel_iommu_init``), and "Enabled IRQ remapping" is
  printed once, after the last unit's DMAR line;
- ``intel_iommu=off`` leaves interrupt remapping on and translation off;
- each MSI-X vector gets the IEC flushes 6.12's irq core makes (one when the
  vector is allocated, the pair the real trace shows at every ``request_irq``, one
  at ``free_irq``, one when the entry is freed), compared word for word with the
  real trace's ``qi_submit`` lines;
- the DMAR header's host address width is the machine's, as the real dmesg prints
  it for QEMU;
- a read of the interrupt window is fault 0x29, printed as 6.12 prints a reason its
  tables do not name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from drivers.idxd.init import idxd_devices
from drivers.intel_iommu import iommu_regs as ir
from hw.machine import Machine, MachineSpec
from hw.vtd import registers as vr
from hw.vtd.unit import VtdUnit
from iommulab.presets import PRESETS, preset
from kernel.boot import Kernel, boot
from kernel.device import device_release_driver
from tests.drivers.intel_iommu.conftest import VtdFactory
from tests.drivers.intel_iommu.test_irq_remapping import EduIrq

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks

REAL = Path("/work/shared/spec/linux-6.12-trace")
if not REAL.exists():  # pragma: no cover - the spec lives next to the worktrees
    REAL = Path(__file__).resolve().parents[4] / "shared/spec/linux-6.12-trace"
IEC_LINE = re.compile(r"qi_submit: (iec_inv dmar\d+: (0x[0-9a-f]+) 0x0 0x0 0x0)$")


def _real_iec() -> list[tuple[str, str, int]]:
    """(ftrace flags, the line after ``qi_submit:``, qw0) of each real iec_inv."""
    out = []
    for line in (REAL / "trace.txt").read_text().splitlines():
        m = IEC_LINE.search(line)
        if m:
            out.append((line.split()[2], m.group(1), int(m.group(2), 16)))
    return out


def _with_index(text: str, qw0: int, index: int) -> str:
    """The real line with the descriptor's IIDX field (qw0 47:32) set to ``index``."""
    new = (qw0 & ~(0xFFFF << 32)) | index << 32
    return text.replace(f"{qw0:#x}", f"{new:#x}")


def _iec(k: Kernel) -> list[str]:
    return [
        e.text for e in k.tracer.events("intel_iommu:qi_submit") if e.text.startswith("iec_inv")
    ]


def _ires(unit: object) -> bool:
    assert isinstance(unit, VtdUnit)
    return bool(unit.regs.field("GSTS", vr.GSTS.IRES))


def _boot(checks: KernelChecks, name: str, cmdline: str) -> tuple[Kernel, Machine]:
    m = Machine(preset(name))
    return checks.track(boot(m, cmdline)), m


def test_every_unit_remaps_interrupts_before_any_unit_translates(
    iommulab_checks: KernelChecks,
) -> None:
    k, m = _boot(iommulab_checks, "xeon-8drhd", "trace_event=hw_vtd:reg_write")
    units = [u.name for u in k.machine.firmware.iommus]
    order: list[tuple[str, str]] = []
    for e in k.tracer.events("hw_vtd:reg_write"):
        f = e.fields
        if f["reg"] == "GCMD" and isinstance(f["value"], int):
            for bit, name in ((ir.DMA_GCMD_SIRTP, "SIRTP"), (ir.DMA_GCMD_SRTP, "SRTP")):
                if f["value"] & bit:
                    order.append((name, str(f["unit"])))
            if f["value"] & ir.DMA_GCMD_IRE and ("IRE", str(f["unit"])) not in order:
                order.append(("IRE", str(f["unit"])))
    kinds = [k_ for k_, _ in order]
    assert kinds[: 2 * len(units)] == ["SIRTP"] * len(units) + ["IRE"] * len(units)
    assert sorted(u for _, u in order[: len(units)]) == sorted(units)
    assert "SRTP" in kinds[2 * len(units) :]
    assert all(_ires(m.iommus[u]) for u in units)
    log = k.dmesg().splitlines()
    enabled = [i for i, line in enumerate(log) if "DMAR-IR: Enabled IRQ remapping" in line]
    unit_lines = [i for i, line in enumerate(log) if ": reg_base_addr " in line]
    dma = [i for i, line in enumerate(log) if "Using Queued invalidation" in line]
    assert len(enabled) == 1 and len(unit_lines) == len(units)
    assert max(unit_lines) < enabled[0] < min(dma)
    assert log[enabled[0]].endswith("DMAR-IR: Enabled IRQ remapping in x2apic mode")


def test_intel_iommu_off_keeps_interrupt_remapping_and_turns_translation_off(
    make_vtd: VtdFactory,
) -> None:
    vtd = make_vtd("intel_iommu=off trace_event=hw_vtd:irte,hw_vtd:reg_write")
    assert _ires(vtd.unit) and not vtd.unit.te
    log = vtd.kernel.dmesg()
    assert "DMAR: IOMMU disabled" in log
    assert "DMAR-IR: Enabled IRQ remapping in" in log
    assert "Intel(R) Virtualization Technology for Directed I/O" not in log
    assert not vtd.edu.dma_iommu
    # intel_disable_iommus: a GCMD write with TE clear, after IRE was set
    gcmd = [e.fields["value"] for e in vtd.kernel.tracer.events("hw_vtd:reg_write")]
    assert gcmd and isinstance(gcmd[-1], int) and not gcmd[-1] & ir.DMA_GCMD_TE
    edu = EduIrq(vtd)
    addr, _ = edu.msix()
    assert addr & 0x10  # remappable format
    edu.raise_irq()
    assert edu.count == 1
    assert [e.fields["index"] for e in vtd.kernel.tracer.events("hw_vtd:irte")] == [edu.index]
    edu.close()


def test_idxd_vectors_get_the_iec_flushes_of_linux(iommulab_checks: KernelChecks) -> None:
    """pci_alloc_irq_vectors: one flush per vector (reservation-mode activation); each
    request_irq: the real trace's pair (activation, then affinity); free_irq: one
    (deactivation); pci_free_irq_vectors: one per entry (clear_entries)."""
    cmd = "intel_iommu=on,sm_on iommu.strict=1 trace_event=intel_iommu:qi_submit"
    k, _ = _boot(iommulab_checks, "qemu-7.2-sm", cmd)
    real = _real_iec()
    # the real request_irq pair (eth0 up: ip-136 at 4.805166/4.805223) and free_irq single
    pair = [r for r in real if r[1].endswith("0xf00000014 0x0 0x0 0x0")]
    assert [p[0] for p in pair[:2]] == ["d..3.", "d..4."] and pair[0][1] == pair[1][1]
    request = pair[0]
    release = next(r for r in real if r[0] == "d..3." and r[1] == pair[2][1])
    idxd = next(iter(idxd_devices()))
    nvec = len(idxd.pdev.irqs)
    boot_iec = _iec(k)
    assert boot_iec[0] == real[0][1] == "iec_inv dmar0: 0x4 0x0 0x0 0x0"  # global, bring-up
    alloc = boot_iec[1 : 1 + nvec]
    assert alloc == [_with_index(request[1], request[2], i) for i in range(nvec)]
    # misc vector (entry 0) requested at probe, then wq0.0's (entry 1) when it is enabled
    assert boot_iec[1 + nvec :] == [_with_index(request[1], request[2], i) for i in (0, 0, 1, 1)]
    n = len(k.tracer.events("intel_iommu:qi_submit"))
    with k:
        device_release_driver(idxd.pdev)
    after = _iec(k)[len(boot_iec) :]
    # wq0.0's free_irq, the misc free_irq, then every entry cleared (IM=0)
    release_lines = [_with_index(release[1], release[2], i) for i in (1, 0)]
    clears = [_with_index(request[1], request[2], i) for i in range(nvec)]
    assert after == release_lines + clears
    assert len(k.tracer.events("intel_iommu:qi_submit")) > n


@pytest.mark.parametrize(("name", "haw"), [("qemu-7.2-sm", 48), ("xeon-s2600wf", 46)])
def test_host_address_width_is_the_machines(
    iommulab_checks: KernelChecks, name: str, haw: int
) -> None:
    k, _ = _boot(iommulab_checks, name, "")
    line = f"DMAR: Host address width {haw}"
    assert line in k.dmesg()
    if name == "qemu-7.2-sm":
        assert line in (REAL / "dmesg.txt").read_text()


def test_an_invalid_host_address_width_refuses_the_dmar_table(
    iommulab_checks: KernelChecks,
) -> None:
    d = dict(PRESETS["qemu-7.2-sm"])
    d["dmar"] = {"host_address_width": 11}
    m = Machine(MachineSpec.from_dict(d))
    k = iommulab_checks.track(boot(m, ""))
    log = k.dmesg()
    assert "DMAR: Invalid DMAR haw" in log
    assert "DMAR: Host address width" not in log and "Enabled IRQ remapping" not in log
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit) and not _ires(unit) and not unit.te
    assert "iommu: intel_iommu failed to bring up dmar0" in log


@pytest.mark.parametrize("haw", [0, 257, True, "48"])
def test_a_host_address_width_the_table_cannot_hold_is_refused(haw: object) -> None:
    d = dict(PRESETS["qemu-7.2-sm"])
    d["dmar"] = {"host_address_width": haw}
    with pytest.raises(ValueError, match=r"machine\.dmar\.host_address_width"):
        MachineSpec.from_dict(d)


@pytest.mark.parametrize(
    ("size", "write", "kind"), [(4, False, "DMA Read"), (8, True, "DMA Write")]
)
def test_window_reads_and_wrong_sizes_are_fault_0x29_printed_as_6_12_does(
    make_vtd: VtdFactory, size: int, write: bool, kind: str
) -> None:
    """0x29 is the spec's reason (facts A12.2); 6.12's tables stop at 0x26, so
    ``dmar_get_fault_reason`` says Unknown and ``dmar_fault_do_one`` prints the DMA
    form of the line."""
    vtd = make_vtd()
    if write:
        fault = vtd.dma_write(vtd.edu, 0xFEE0_0000, bytes(size))
    else:
        _, fault = vtd.dma_read(vtd.edu, 0xFEE0_0000, size)
    assert fault is not None and fault.reason == 0x29
    line = (
        f"DMAR: [{kind} NO_PASID] Request device [00:03.0] fault addr 0xfee00000 "
        "[fault reason 0x29] Unknown"
    )
    assert line in vtd.kernel.dmesg()


def _two_units(second: dict[str, object]) -> MachineSpec:
    d = dict(PRESETS["default"])
    d["ram"] = "64M"
    d["iommus"] = [
        {"kind": "vtd", "name": "dmar0", "scope": ["0000:00:02.0"], "config": {"eim": True}},
        {"kind": "vtd", "name": "dmar1", "scope": "all", "config": second},
    ]
    return MachineSpec.from_dict(d)


def test_a_unit_without_remapping_keeps_it_off_on_every_unit(
    iommulab_checks: KernelChecks,
) -> None:
    """``intel_prepare_irq_remapping``: every unit must have ECAP.IR; else the units
    already looked at are cleaned up, with the warning when x2APIC was possible."""
    m = Machine(_two_units({"ir": False}))
    k = iommulab_checks.track(boot(m, ""))
    log = k.dmesg()
    assert (
        "DMAR-IR: Failed to enable irq remapping. You are vulnerable to irq-injection attacks."
        in log
    )
    assert "Enabled IRQ remapping" not in log
    assert not any(_ires(u) for u in m.iommus.values())
    assert all(isinstance(u, VtdUnit) and u.te for u in m.iommus.values())


def test_one_unit_without_eim_puts_every_unit_in_xapic_mode(
    iommulab_checks: KernelChecks,
) -> None:
    m = Machine(_two_units({"eim": False}))
    k = iommulab_checks.track(boot(m, ""))
    log = k.dmesg()
    assert "DMAR-IR: dmar1 does not support EIM" in log
    assert "DMAR-IR: Enabled IRQ remapping in xapic mode" in log
    assert all(_ires(u) for u in m.iommus.values())
