"""ATS on the default machine: the Intel VT-d driver enables PCI ATS on the DSA (as Linux
``intel_iommu_probe_finalize`` does), so the DSA's DMA goes through its ATC: Translation
Requests on misses, translated requests on hits, and the driver's device-TLB
invalidations (type 8 for the system PASID) reach the device on unmap. A driver that
skips them is caught as a stale ``devtlb`` use."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import drivers.intel_iommu.cache as intel_cache
from hw.ats import AddressTranslationCache
from hw.dsa.device import DsaDevice
from hw.vtd import entries as ent
from iommulab.presets import PRESETS
from kernel.boot import Kernel
from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_PREP_INTERRUPT,
    DMA_TRANS_NOERROR,
    dma_sync_wait,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
)
from kernel.dma.mapping import dma_unmap_single
from tests.drivers.idxd.client import Copy, MemcpyClient
from tests.drivers.idxd.conftest import Boot, dsa0, dsa_hw
from tests.drivers.idxd.test_vtd import clients, vtd

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations


def boot(make_kernel: Boot, cmdline: str = "") -> Kernel:
    return make_kernel(dict(PRESETS["default"]), cmdline, with_intel=True)


def atc(k: Kernel) -> AddressTranslationCache:
    port = dsa_hw(k).ats_port
    assert port is not None
    return port.atc


def again(c: MemcpyClient, cp: Copy) -> int:
    """Copy once more between the same (possibly unmapped) device addresses; returns
    the transaction result of the callback."""
    tx = dmaengine_prep_dma_memcpy(c.chan, cp.dst_dma, cp.src_dma, cp.size, DMA_PREP_INTERRUPT)
    assert tx is not None
    seen: list[int] = []
    tx.callback_result = lambda param, result: seen.append(result.result)
    cookie = dmaengine_submit(tx)
    dma_sync_wait(c.chan, cookie)
    assert seen
    return seen[0]


def unmap(c: MemcpyClient, cp: Copy) -> None:
    dma_unmap_single(c.dev, cp.src_dma, cp.size, DMA_TO_DEVICE)
    dma_unmap_single(c.dev, cp.dst_dma, cp.size, DMA_FROM_DEVICE)


def free(c: MemcpyClient, cp: Copy) -> None:
    c.free(cp.src, cp.size)
    c.free(cp.dst, cp.size)


def test_driver_enables_ats_and_the_context_entry_allows_it(make_kernel: Boot) -> None:
    k = boot(make_kernel)
    hw = dsa_hw(k)
    unit = vtd(k)
    assert isinstance(hw, DsaDevice) and hw.ats_enabled and hw.ats_port is not None
    assert unit.atcs == {hw.addr.rid: hw.ats_port.atc}
    assert unit.walker.context(unit.root, True, hw.addr.rid).dte


def test_second_dma_to_the_same_buffers_hits_the_atc(make_kernel: Boot) -> None:
    k = boot(make_kernel)
    unit = vtd(k)
    a = atc(k)
    c = clients()[0]
    cp = c.start(1 << 20)
    assert c.wait(cp) == DMA_COMPLETE
    requests, hits = unit.stats.ats_requests, a.stats.hits
    assert requests > 0 and a.stats.translation_requests == requests
    iotlb = unit.stats.iotlb_hits + unit.stats.iotlb_misses
    assert again(c, cp) == DMA_TRANS_NOERROR
    assert unit.stats.ats_requests == requests  # no new Translation Request for the data
    assert a.stats.hits >= hits + 2 * 256  # source and destination pages from the ATC
    assert unit.stats.iotlb_hits + unit.stats.iotlb_misses - iotlb < 256
    assert c.finish(cp)
    assert unit.stats.stale_uses == 0 and unit.stats.faults == 0


def test_unmap_invalidates_the_device_tlb_and_a_later_dma_faults(make_kernel: Boot) -> None:
    k = boot(make_kernel, "trace_event=hw_vtd:qi_descriptor")
    unit = vtd(k)
    a = atc(k)
    c = clients()[0]
    cp = c.start(16384)
    assert c.wait(cp) == DMA_COMPLETE
    pasid = dsa0().pasid
    assert a.lookup(pasid, cp.src_dma) is not None and a.lookup(pasid, cp.dst_dma) is not None
    before = a.stats.invalidations
    k.tracer.ring.clear()
    unmap(c, cp)
    assert a.stats.invalidations > before
    descs = [e.fields for e in k.tracer.events("hw_vtd:qi_descriptor")]
    devtlb = [d for d in descs if d["type"] == ent.QI_PDEVTLB]
    assert devtlb and all(
        ent.QiPdevTlbQw0.PASID.get(d["qw"][0]) == pasid  # type: ignore[index]
        for d in devtlb
    )
    assert a.lookup(pasid, cp.src_dma) is None and a.lookup(pasid, cp.dst_dma) is None
    assert again(c, cp) != DMA_TRANS_NOERROR  # translation refused, not the stale ATC
    assert unit.stats.stale_uses == 0 and unit.stats.ats_no_access > 0
    free(c, cp)


def test_driver_that_skips_the_devtlb_flush_is_caught(
    make_kernel: Boot, monkeypatch: pytest.MonkeyPatch, iommulab_expect: Expectations
) -> None:
    iommulab_expect.stale()
    k = boot(make_kernel, "trace_event=hw_vtd:stale_translation")
    unit = vtd(k)
    c = clients()[0]
    cp = c.start(8192)
    assert c.wait(cp) == DMA_COMPLETE
    monkeypatch.setattr(intel_cache, "_flush_devtlb", lambda *args: None)
    unmap(c, cp)
    assert unit.stats.stale_uses == 0
    assert again(c, cp) == DMA_TRANS_NOERROR  # the device used its stale ATC entries
    assert unit.stats.stale_uses > 0
    stale = k.tracer.events("hw_vtd:stale_translation")
    assert stale and {e.fields["cache"] for e in stale} == {"devtlb"}
    free(c, cp)
    monkeypatch.undo()
    atc(k).clear()  # what the skipped flush should have done, so shutdown is clean


def test_hw_trace_shows_translation_requests_not_atc_hits(make_kernel: Boot) -> None:
    k = boot(make_kernel, "trace_event=hw_vtd:ats_translate")
    unit = vtd(k)
    a = atc(k)
    k.tracer.ring.clear()
    unit.stats.ats_requests = 0
    c = clients()[0]
    cp = c.start(1 << 20)
    assert c.wait(cp) == DMA_COMPLETE
    assert again(c, cp) == DMA_TRANS_NOERROR
    events = k.tracer.events("hw_vtd:ats_translate")
    assert len(events) == unit.stats.ats_requests > 0
    assert a.stats.hits > 10 * len(events)
    f = events[0].fields
    assert f["rid"] == dsa_hw(k).addr.rid and f["pasid"] == dsa0().pasid
    assert c.finish(cp)


def test_founding_scenario_with_ats_moves_bytes_cleanly(make_kernel: Boot) -> None:
    k = boot(make_kernel)
    for c in clients():
        for size in (4096, 1 << 20):
            assert c.memcpy(size) == (DMA_COMPLETE, True)
    unit = vtd(k)
    assert unit.stats.ats_requests > 0 and unit.stats.devtlb_invalidations > 0
    assert unit.stats.stale_uses == 0 and unit.stats.faults == 0
