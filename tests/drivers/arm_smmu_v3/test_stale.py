"""The hardware model catches a driver that forgets an invalidation: each test
removes one of the driver's flushes (a test-only monkeypatch) and checks that the
SMMU model reports the use of a stale cached entry, naming the missing command."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from drivers.arm_smmu_v3 import domain, entry_writer
from kernel.boot import Kernel
from kernel.dma.direction import DMA_BIDIRECTIONAL
from kernel.dma.mapping import dma_unmap_single
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.mm import kfree, virt_to_phys
from tests.drivers.arm_smmu_v3.conftest import (
    DSA_BDF,
    EDU_BDF,
    device_dma,
    dsa,
    edu,
    map_buffer,
    unit,
)

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations


def _stale_missing(k: Kernel) -> list[str]:
    return [str(e.fields["missing"]) for e in k.tracer.events("hw_smmuv3:stale_translation")]


def test_cd_cleared_without_cfgi_cd_is_a_stale_cd_use(
    k: Kernel, monkeypatch: pytest.MonkeyPatch, iommulab_expect: Expectations
) -> None:
    iommulab_expect.stale()
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    buf, iova = map_buffer(dev, 4096, DMA_BIDIRECTIONAL)
    iommu_attach_device_pasid(dom, dev, 4)
    assert device_dma(k, DSA_BDF, iova, 64, pasid=4) is None  # CD[4] now cached
    with monkeypatch.context() as mp:
        mp.setattr(entry_writer, "arm_smmu_sync_cd", lambda master, ssid, leaf: None)
        iommu_detach_device_pasid(dom, dev, 4)  # CD[4] zeroed, no CFGI_CD
    assert device_dma(k, DSA_BDF, iova, 64, pasid=4) is None  # the SMMU used the old CD
    assert unit(k).stats.stale_uses == 1
    assert _stale_missing(k) == ["CFGI_CD"]
    [found] = [f for f in k.findings if f.check == "stale"]
    assert (found.requester, found.pasid, found.cache) == ("00:02.0", 4, "CD cache")
    assert [i.text() for i in found.missing] == ["CMD_CFGI_CD: SID=0x10 SSID=4 Leaf=1"]
    assert any("iommu_detach_device_pasid" in line for w in found.writes for line in w.chain())
    dma_unmap_single(dev, iova, 4096, DMA_BIDIRECTIONAL)
    kfree(buf)


def test_pte_cleared_without_tlbi_is_a_stale_tlb_use(
    k: Kernel, monkeypatch: pytest.MonkeyPatch, iommulab_expect: Expectations
) -> None:
    iommulab_expect.stale()
    dev = edu()
    buf, iova = map_buffer(dev, 4096, DMA_BIDIRECTIONAL)
    assert device_dma(k, EDU_BDF, iova, 64) is None  # the TLB holds the page
    with monkeypatch.context() as mp:
        mp.setattr(domain, "arm_smmu_tlb_inv_range_domain", lambda *a: None)
        dma_unmap_single(dev, iova, 4096, DMA_BIDIRECTIONAL)  # PTE cleared, no TLBI
    assert device_dma(k, EDU_BDF, iova, 64) is None  # translated by the stale entry
    assert unit(k).stats.stale_uses == 1
    assert _stale_missing(k) == ["TLBI_NH_VA"]
    [found] = [f for f in k.findings if f.check == "stale"]
    asid = unit(k).caches.cd[(0x18, 0)].info.asid
    assert (found.requester, found.pasid, found.iova, found.cache) == ("00:03.0", None, iova, "TLB")
    assert found.domain == f"VMID 0 ASID {asid}"
    assert found.cached is not None and found.cached.phys == virt_to_phys(buf) & ~0xFFF
    assert found.current is not None and found.current.phys is None
    assert found.current.fault == "event 0x10 F_TRANSLATION"
    assert [i.text() for i in found.missing] == [
        f"CMD_TLBI_NH_VA: VMID=0 ASID={asid} Address={iova & ~0xFFF:#x} range=4KiB Leaf=1"
    ]
    [write] = found.writes
    assert write.new == 0 and write.old & ~0xFFF & ((1 << 48) - 1) == virt_to_phys(buf) & ~0xFFF
    assert "dma_unmap_single" in [line.split()[0] for line in write.chain()]
    kfree(buf)


def test_with_every_flush_in_place_nothing_is_stale(k: Kernel) -> None:
    dev = edu()
    buf, iova = map_buffer(dev, 4096, DMA_BIDIRECTIONAL)
    assert device_dma(k, EDU_BDF, iova, 64) is None
    dma_unmap_single(dev, iova, 4096, DMA_BIDIRECTIONAL)
    assert device_dma(k, EDU_BDF, iova, 64) is not None
    assert unit(k).stats.stale_uses == 0
    kfree(buf)
