"""The founding scenario on the ``smmuv3`` machine: the unchanged idxd driver gets
its system PASID through the IOMMU API, the SMMUv3 driver points CD[pasid] at the
DSA's DMA domain (same ASID and TTB0 as CD 0), and dmaengine memcpys move bytes
through SubstreamID-tagged translation with no stale use, in both PASID API
generations."""

from __future__ import annotations

import pytest

from drivers.idxd.init import idxd_devices
from hw.smmuv3 import Smmuv3Unit
from kernel.dma.dmaengine import DMA_COMPLETE, dma_request_chan
from tests.drivers.arm_smmu_v3.conftest import Boot, cd, cd_asid, cd_ttb0, dsa, unit
from tests.drivers.arm_smmu_v3.machines import DSA_SID
from tests.drivers.idxd.client import MemcpyClient


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int | None]]:
    """Every (StreamID, SubstreamID) the SMMU model is asked to translate."""
    seen: list[tuple[int, int | None]] = []
    orig = Smmuv3Unit.translate

    def spy(self: Smmuv3Unit, rid: int, pasid: int | None, *a: object) -> object:
        seen.append((rid, pasid))
        return orig(self, rid, pasid, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(Smmuv3Unit, "translate", spy)
    return seen


@pytest.mark.parametrize("api", ["upstream", "seed-v3"])
def test_idxd_memcpy_through_the_system_pasid_on_smmuv3(
    smmu_boot: Boot, api: str, requests: list[tuple[int, int | None]]
) -> None:
    k = smmu_boot(f"iommu.pasid_api={api}", builtins=("drivers.arm_smmu_v3", "drivers.idxd"))
    idxd = idxd_devices()[0]
    assert idxd.pasid_enabled
    pasid = idxd.pasid
    dev = dsa()
    cd0, cdp = cd(dev, 0), cd(dev, pasid)
    assert (cd_asid(cdp), cd_ttb0(cdp)) == (cd_asid(cd0), cd_ttb0(cd0))
    clients = [
        MemcpyClient(dma_request_chan(None, wq.dma_chan.name))
        for wq in idxd.wqs
        if wq.dma_chan is not None
    ]
    assert clients
    requests.clear()
    for c in clients:
        for size in (4096, 1 << 20):
            assert c.memcpy(size) == (DMA_COMPLETE, True)
    assert requests and all(r == (DSA_SID, pasid) for r in requests)
    assert unit(k).stats.stale_uses == 0 and unit(k).stats.faults == 0
