"""The founding scenario on the ``default`` machine (VT-d + DSA) with the Intel
VT-d driver, in both PASID API generations, plus intel_iommu=off and
iommu.passthrough=1: bytes moved, every DMA request carries the system PASID and
translates through the DMA domain's tables, no stale translation, clean unbind."""

from __future__ import annotations

import pytest

from drivers.idxd.init import idxd_devices
from hw.machine import Machine
from hw.vtd.unit import VtdUnit
from iommulab.presets import PRESETS
from kernel.boot import Kernel
from kernel.dma.dmaengine import DMA_COMPLETE, DMA_TRANS_WRITE_FAILED, dma_request_chan
from kernel.iommu.iommu import iommu_get_domain_for_dev
from tests.drivers.idxd.client import MemcpyClient
from tests.drivers.idxd.conftest import Boot, dsa0

APIS = ["upstream", "seed-v3"]


def vtd(k: Kernel) -> VtdUnit:
    m = k.machine
    assert isinstance(m, Machine)
    unit = m.iommus["dmar0"]
    assert isinstance(unit, VtdUnit)
    return unit


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int | None, bool]]:
    """Every (requester ID, PASID, priv) the VT-d model is asked to translate."""
    seen: list[tuple[int, int | None, bool]] = []
    orig = VtdUnit.translate_ex

    def spy(self: VtdUnit, rid: int, pasid: int | None, priv: bool, *a: object) -> object:
        seen.append((rid, pasid, priv))
        return orig(self, rid, pasid, priv, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(VtdUnit, "translate_ex", spy)
    return seen


def clients() -> list[MemcpyClient]:
    return [
        MemcpyClient(dma_request_chan(None, wq.dma_chan.name))
        for wq in dsa0().wqs
        if wq.dma_chan is not None
    ]


@pytest.mark.parametrize("api", APIS)
def test_founding_scenario_moves_bytes_through_the_system_pasid(
    make_kernel: Boot, api: str, requests: list[tuple[int, int | None, bool]]
) -> None:
    k = make_kernel(dict(PRESETS["default"]), f"iommu.pasid_api={api}", with_intel=True)
    idxd = dsa0()
    assert idxd.pasid_enabled
    cs = clients()
    assert len(cs) == 2
    requests.clear()
    for c in cs:
        for size in (4096, 1 << 20):
            assert c.memcpy(size) == (DMA_COMPLETE, True)
    rid = idxd.pdev.rid
    assert requests and all(r == (rid, idxd.pasid, False) for r in requests)
    unit = vtd(k)
    ctx = unit.walker.context(unit.root, True, rid)
    mine = unit.walker.pasid_entry(ctx, idxd.pasid)
    assert mine.stage == unit.walker.pasid_entry(ctx, ctx.rid_pasid).stage
    assert unit.stats.stale_uses == 0 and unit.stats.faults == 0


@pytest.mark.parametrize("api", APIS)
def test_clean_unbind_leaves_no_dma_debug_leak(make_kernel: Boot, api: str) -> None:
    k = make_kernel(dict(PRESETS["default"]), f"iommu.pasid_api={api}", with_intel=True)
    for c in clients():
        assert c.memcpy(65536) == (DMA_COMPLETE, True)
    k.shutdown()
    assert "DMA-API" not in "".join(ln for ln in k.dmesg().splitlines() if "pending" in ln)
    assert idxd_devices() == []
    assert vtd(k).stats.stale_uses == 0


def test_intel_iommu_off_uses_dma_direct_without_pasid(make_kernel: Boot) -> None:
    make_kernel(dict(PRESETS["default"]), "intel_iommu=off", with_intel=True)
    assert not dsa0().pasid_enabled
    (c,) = clients()
    assert c.memcpy(1 << 20) == (DMA_COMPLETE, True)


def test_passthrough_attaches_the_identity_domain_at_the_pasid(make_kernel: Boot) -> None:
    make_kernel(dict(PRESETS["default"]), "iommu.passthrough=1", with_intel=True)
    idxd = dsa0()
    assert idxd.pasid_enabled
    dom = iommu_get_domain_for_dev(idxd.pdev)
    assert dom is not None and idxd.pdev.iommu_group.pasid_array[idxd.pasid] is dom
    for c in clients():
        assert c.memcpy(1 << 20) == (DMA_COMPLETE, True)


def test_privileged_2022_descriptors_fault_against_todays_pasid_entries(
    make_kernel: Boot,
) -> None:
    k = make_kernel(
        dict(PRESETS["default"]), "iommu.pasid_api=seed-v3 idxd.kernel_priv=1", with_intel=True
    )
    c = clients()[0]
    cp = c.start(4096)
    c.wait(cp)
    assert cp.result is not None and cp.result.result == DMA_TRANS_WRITE_FAILED
    assert vtd(k).stats.faults > 0
    c.finish(cp)
