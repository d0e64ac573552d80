"""dmaengine memcpy on the dedicated WQ without an IOMMU (dma-direct): bytes,
completion by interrupt and by polling, every error path a client can see."""

from __future__ import annotations

import pytest

from drivers.idxd.debugfs import _render
from drivers.idxd.device import idxd_wq_abort, idxd_wq_occupancy
from drivers.idxd.idxd import IDXD_DEV_ENABLED
from drivers.idxd.sysfs import idxd_disable
from hw.dsa import registers as hwregs
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_PREP_INTERRUPT,
    DMA_TRANS_ABORTED,
    DMA_TRANS_NOERROR,
    DMA_TRANS_WRITE_FAILED,
    dma_request_chan,
    dmaengine_prep_dma_memcpy,
)
from kernel.errno import EOPNOTSUPP
from kernel.io import ioremap, movdir64b
from kernel.pci import pci_resource_start
from kernel.trace import capture
from kernel.uapi.idxd import DSA_COMP_TRANSLATION_FAIL, DsaHwDesc
from tests.drivers.idxd.client import MemcpyClient
from tests.drivers.idxd.conftest import Boot, dsa0, dsa_hw


@pytest.fixture
def client(make_kernel: Boot) -> MemcpyClient:
    make_kernel()
    return MemcpyClient(dma_request_chan(None, "memcpy"))


@pytest.mark.parametrize("size", [4096, 65536, 1 << 20, 16 << 20])
def test_memcpy_moves_the_bytes_with_a_completion_interrupt(
    client: MemcpyClient, size: int
) -> None:
    status, same = client.memcpy(size)
    c = client.copies[-1]
    assert (status, same) == (DMA_COMPLETE, True)
    assert c.calls == 1 and c.result is not None and c.result.result == DMA_TRANS_NOERROR


def test_memcpy_completes_by_polling_without_interrupt(client: MemcpyClient) -> None:
    status, same = client.memcpy(8192, interrupt=False)
    assert (status, same) == (DMA_COMPLETE, True)
    assert client.copies[-1].calls == 1


def test_descriptors_without_pasid_use_privileged_dedicated_wq(client: MemcpyClient) -> None:
    with capture("idxd:submit") as events:
        client.memcpy(4096)
    assert [(e.fields["pasid"], e.fields["priv"], e.fields["insn"]) for e in events] == [
        (0, 1, "movdir64b")
    ]


def test_completion_error_status_reaches_the_client(client: MemcpyClient) -> None:
    dst = client.alloc(4096)
    tx = dmaengine_prep_dma_memcpy(client.chan, 0x40_0000_0000, 0x40_0000_0000, 4096, 1)
    assert tx is not None
    got = []
    tx.callback_result = lambda p, r: got.append(r)
    from kernel.dma.dmaengine import dma_sync_wait, dmaengine_submit

    cookie = dmaengine_submit(tx)
    assert dma_sync_wait(client.chan, cookie) == DMA_COMPLETE
    assert got[0].result == DMA_TRANS_WRITE_FAILED and got[0].residue == 4096
    assert tx.priv.completion.status & 0x7F == DSA_COMP_TRANSLATION_FAIL
    assert "memcpy failed: status 0x22 (DSA_COMP_TRANSLATION_FAIL)" in client_dmesg()
    client.free(dst, 4096)


def client_dmesg() -> str:
    from kernel.boot import current_kernel

    return current_kernel().dmesg()


def test_transfer_over_the_wq_maximum_is_refused_at_prep(client: MemcpyClient) -> None:
    assert dmaengine_prep_dma_memcpy(client.chan, 0x1000, 0x2000, (64 << 20) + 1, 0) is None


def test_prep_fails_when_every_descriptor_is_in_flight(client: MemcpyClient) -> None:
    for _ in range(16):
        client.start(4096)
    assert dmaengine_prep_dma_memcpy(client.chan, 0x1000, 0x2000, 4096, 0) is None
    for c in client.copies:
        client.wait(c)
        assert client.finish(c)


def test_occupancy_is_visible_while_descriptors_are_queued(client: MemcpyClient) -> None:
    for _ in range(3):
        client.start(1 << 20)
    assert dsa0().wqs[0].in_flight == 3
    assert "in_flight=3 occupancy=3" in _render(None)  # type: ignore[arg-type]
    with pytest.raises(EOPNOTSUPP, match="occupancy not supported"):
        idxd_wq_occupancy(dsa0().wqs[0])
    for c in client.copies:
        client.wait(c)
        client.finish(c)
    assert "in_flight=0 occupancy=0" in _render(None)  # type: ignore[arg-type]


def test_disabling_the_wq_drains_in_flight_copies(client: MemcpyClient) -> None:
    c = client.start(1 << 20)
    idxd_disable(dsa0())
    assert c.result is not None and c.result.result == DMA_TRANS_NOERROR
    assert client.finish(c)


def test_abort_then_disable_reports_aborted_copies(client: MemcpyClient) -> None:
    c = client.start(1 << 20)
    idxd_wq_abort(dsa0().wqs[0])
    idxd_disable(dsa0())
    assert c.result is not None and c.result.result == DMA_TRANS_ABORTED
    client.finish(c)


def test_portal_write_to_a_disabled_wq_is_a_software_error(client: MemcpyClient) -> None:
    k_pdev = dsa0().pdev
    portal = ioremap(pci_resource_start(k_pdev, 2) + 3 * 0x4000 + 0x1000, 0x1000)
    movdir64b(portal, DsaHwDesc().to_bytes())
    client.memcpy(4096)  # lets the misc interrupt run
    assert dsa0().swerr_count == 1
    assert "software error 0x53 wq 3" in client_dmesg()


def test_software_halt_is_recovered_by_a_device_reset(client: MemcpyClient) -> None:
    from kernel.boot import current_kernel

    hw = dsa_hw(current_kernel())
    c = client.start(1 << 20)
    hw.halt(hwregs.RESET_SOFTWARE)
    client.wait(c)
    assert c.result is not None and c.result.result == DMA_TRANS_ABORTED
    client.finish(c)
    assert dsa0().state == IDXD_DEV_ENABLED and dsa0().resets == 1
    assert "recovered from halt by software reset" in client_dmesg()
    assert client.memcpy(4096) == (DMA_COMPLETE, True)


def test_halt_needing_flr_stops_the_device(client: MemcpyClient) -> None:
    from kernel.boot import current_kernel

    hw = dsa_hw(current_kernel())
    c = client.start(4096)
    hw.halt(hwregs.RESET_FLR)
    client.wait(c)
    assert c.result is not None and c.result.result == DMA_TRANS_ABORTED
    client.finish(c)
    assert "idxd halted, need FLR/system reset" in client_dmesg()
    assert dmaengine_prep_dma_memcpy(client.chan, 0x1000, 0x2000, 4096, DMA_PREP_INTERRUPT) is None
