"""Probe and remove on a machine without an IOMMU (dma-direct, no PASID)."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.idxd import registers as regs
from drivers.idxd.debugfs import _render
from drivers.idxd.idxd import IDXD_DEV_ENABLED, IDXD_WQ_ENABLED
from drivers.idxd.init import idxd_devices
from hw.dsa import commands as hw_commands
from hw.dsa import registers as hwregs
from kernel.dma.dmaengine import dma_request_chan
from kernel.irq import irq_controller
from kernel.trace import capture
from tests.drivers.idxd.conftest import Boot, direct_spec, dsa0, dsa_hw


def test_probe_reads_capabilities_and_table_offsets(make_kernel: Boot) -> None:
    k = make_kernel()
    idxd, hw = dsa0(), dsa_hw(k)
    assert (idxd.max_wqs, idxd.max_engines, idxd.max_groups) == (8, 4, 4)
    assert idxd.max_wq_size == 128
    assert idxd.grpcfg_offset == hw.layout.grpcfg
    assert idxd.wqcfg_offset == hw.layout.wqcfg
    assert idxd.msix_perm_offset == hw.layout.msix_perm
    assert idxd.configurable


def test_probe_enables_device_and_default_dedicated_wq(make_kernel: Boot) -> None:
    k = make_kernel()
    hw = dsa_hw(k)
    assert hw.state == hwregs.GENSTS_ENABLED
    assert hw.wqs[0].enabled and hw.wqs[0].dedicated and not hw.wqs[0].pasid_en
    assert not hw.wqs[1].enabled  # no shared WQ without a PASID
    assert dsa0().state == IDXD_DEV_ENABLED
    assert "No in-kernel DMA with PASID" in k.dmesg()


def test_probe_requests_misc_and_per_wq_vectors(make_kernel: Boot) -> None:
    make_kernel()
    idxd = dsa0()
    owners = {a.name for d in irq_controller().descs.values() for a in d.actions}
    assert owners == {"idxd0", "idxd-wq0.0"}
    assert idxd.irq_cnt == idxd.max_wqs + 1
    assert idxd.wqs[0].ie is not None and idxd.wqs[0].ie.id == 1


def test_probe_registers_a_dmaengine_channel(make_kernel: Boot) -> None:
    make_kernel()
    chan = dma_request_chan(None, "memcpy")
    assert chan.priv is dsa0().wqs[0]


def test_commands_complete_by_cmdsts_and_by_misc_interrupt(make_kernel: Boot) -> None:
    k = make_kernel()
    with capture("idxd:cmd") as events:
        k.shutdown()
    codes = [e.fields["cmd"] for e in events]
    assert codes[:3] == [
        regs.IDXD_CMD_DRAIN_WQ,
        regs.IDXD_CMD_RESET_WQ,
        regs.IDXD_CMD_DISABLE_DEVICE,
    ]
    assert all(e.fields["status"] == 0 for e in events)


def test_remove_undoes_probe(make_kernel: Boot) -> None:
    k = make_kernel()
    hw = dsa_hw(k)
    k.shutdown()
    assert hw.state == hwregs.GENSTS_DISABLED
    assert not hw.bus_master
    assert not irq_controller().descs
    assert idxd_devices() == []
    assert "dsa0 removed" in k.dmesg()


def test_remove_leaves_no_allocation_behind(make_kernel: Boot) -> None:
    k = make_kernel()
    assert any(a.site.startswith(("init.py", "device.py")) for a in k.mm.live())
    k.shutdown()
    assert [a.site for a in k.mm.live()] == ["init_task stack"]


def test_without_default_config_the_device_stays_disabled(make_kernel: Boot) -> None:
    k = make_kernel(cmdline="idxd.default_config=0")
    assert dsa_hw(k).state == hwregs.GENSTS_DISABLED
    assert all(wq.state != IDXD_WQ_ENABLED for wq in dsa0().wqs)


def test_dump_shows_device_wqs_and_occupancy(make_kernel: Boot) -> None:
    make_kernel()
    text = _render(None)  # type: ignore[arg-type]
    assert "dsa0 (0000:00:02.0) state=enabled" in text
    assert "wq0.0: enabled dedicated type=kernel name=dma-dwq size=16" in text
    assert "in_flight=0 occupancy=0" in text


def test_command_timeout_fails_probe_cleanly(make_kernel: Boot) -> None:
    k = make_kernel(direct_spec({"cmd_latency_ns": 10**9}))
    assert idxd_devices() == []
    assert "command reset device timed out" in k.dmesg()
    assert "probe with driver idxd failed with error -110" in k.dmesg()
    assert not dsa_hw(k).bus_master


def test_enable_device_failure_fails_probe_cleanly(
    make_kernel: Boot, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(dev: Any) -> int:
        return hw_commands.ERR_CONFIG

    monkeypatch.setattr(hw_commands, "_enable_device", refuse)
    k = make_kernel()
    assert "Enabling device failed: 0x11" in k.dmesg()
    assert "probe with driver idxd failed with error -6" in k.dmesg()
    assert idxd_devices() == []
    assert not irq_controller().descs
    assert [a.site for a in k.mm.live()] == ["init_task stack"]
