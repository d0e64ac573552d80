"""The founding scenario with interrupt remapping on (the default) and off
(``intremap=off``): DSA completion interrupts and the idxd misc interrupt are MSI-X
writes that VT-d remaps through the IRTEs the driver set up, or pass as
compatibility-format messages when remapping is off."""

from __future__ import annotations

import pytest

from hw.machine import Machine
from hw.vtd.unit import VtdUnit
from iommulab import cli
from iommulab.presets import PRESETS
from kernel.dma.dmaengine import DMA_COMPLETE, dma_request_chan
from kernel.irq import irq_to_desc
from kernel.pci import pci_irq_vector
from tests.drivers.idxd.client import MemcpyClient
from tests.drivers.idxd.conftest import Boot, dsa0


@pytest.mark.parametrize("cmdline", ["", "intremap=off"])
def test_founding_scenario_interrupts_through_vtd(make_kernel: Boot, cmdline: str) -> None:
    k = make_kernel(dict(PRESETS["default"]), f"{cmdline} trace_event=hw_vtd:irte", with_intel=True)
    m = k.machine
    assert isinstance(m, Machine)
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    idxd = dsa0()
    rid = idxd.pdev.rid
    wq = next(w for w in idxd.wqs if w.dma_chan is not None)
    assert wq.dma_chan is not None
    client = MemcpyClient(dma_request_chan(None, wq.dma_chan.name))
    counts = [irq_to_desc(pci_irq_vector(idxd.pdev, i)) for i in range(idxd.irq_cnt)]
    before = [d.count if d else 0 for d in counts]
    assert client.memcpy(65536) == (DMA_COMPLETE, True)
    after = [d.count if d else 0 for d in counts]
    assert sum(after) > sum(before)  # a completion interrupt arrived
    used = k.tracer.events("hw_vtd:irte")
    if cmdline:
        assert used == [] and not unit.irq.enabled
    else:
        assert unit.irq.enabled and used
        assert {e.fields["sid"] for e in used} == {rid}
        assert 0 in {e.fields["index"] for e in used}  # vector 0: the misc interrupt
        assert len({e.fields["index"] for e in used}) >= 2  # and a completion vector
    assert unit.stats.faults == 0 and unit.stats.stale_uses == 0


@pytest.mark.parametrize("cmdline", ["", "intremap=off"])
def test_founding_demo_passes(cmdline: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["demo"] + (["--cmdline", cmdline] if cmdline else [])
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "result: PASS" in out
    assert ("Enabled IRQ remapping in xapic mode" in out) == (not cmdline)
