"""The real-server presets (``xeon-s2600wf``, ``xeon-8drhd``): dmesg prints each unit's
registers exactly as the public boot logs do, interrupt remapping runs in x2APIC mode on
every unit, the protected memory regions firmware left on are turned off after
translation is enabled, and the founding demo runs as far as the units allow (legacy
mode: in-kernel DMA without PASID)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from hw.machine import Machine
from hw.vtd import VtdUnit
from hw.vtd import registers as vr
from iommulab import cli
from iommulab.presets import PRESETS, preset
from kernel.boot import boot

if TYPE_CHECKING:
    from iommulab.pytest_plugin import KernelChecks

LOGS = {
    "xeon-s2600wf": ("f020de", ("c5ffc000", "e0ffc000", "fbffc000", "aaffc000")),
    "xeon-8drhd": (
        "f020df",
        (
            "d37fc000",
            "e0ffc000",
            "ee7fc000",
            "fbffc000",
            "aaffc000",
            "b87fc000",
            "c5ffc000",
            "9d7fc000",
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(LOGS))
def test_dmesg_shows_the_platform_registers_and_x2apic_remapping(
    name: str, iommulab_checks: KernelChecks
) -> None:
    m = Machine(preset(name))
    for spec in m.firmware.iommus:  # firmware left the protected regions on
        m.mmio_write(spec.register_base + vr.PMEN_OFF, 4, 1 << 31)
    m.clock.advance(1000)
    k = iommulab_checks.track(boot(m, ""))
    log = k.dmesg()
    ecap, bases = LOGS[name]
    for i, base in enumerate(bases):
        assert f"DMAR: dmar{i}: reg_base_addr {base} ver 1:0 cap 8d2078c106f0466 ecap {ecap}" in log
    assert "DMAR-IR: Enabled IRQ remapping in x2apic mode" in log
    assert "No in-kernel DMA with PASID" in log
    for unit in m.iommus.values():
        assert isinstance(unit, VtdUnit)
        assert unit.irq.enabled and unit.irq.eime
        assert not unit.regs["PMEN"] & 1  # PRS clear: Linux disabled the regions
        assert unit.errors == []
    assert PRESETS[name]["iommus"][-1]["scope"] == "all"


@pytest.mark.parametrize("name", sorted(LOGS))
def test_founding_demo_runs_on_the_server_preset(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo", "--machine", name]) == 0
    out = capsys.readouterr().out
    assert "result: PASS" in out and "legacy mode, second-stage DMA domains" in out
