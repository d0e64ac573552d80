"""The vendor difference: SMMUv3 tags its TLB by ASID, not by PASID.

A DMA domain used by the RID (CD 0) and by a PASID (CD[pasid]) has one ASID in both
CDs, so an unmap sends TLBI_NH_VA(ASID) + CMD_SYNC and nothing PASID-specific: no
command names the SubstreamID. (On VT-d, first-stage IOTLB entries are tagged by
(domain id, PASID), so the Intel driver sends one PASID-based IOTLB invalidation per
attachment of the domain.)
"""

from __future__ import annotations

from hw.smmuv3 import entries as ent
from kernel.boot import Kernel
from kernel.dma.direction import DMA_BIDIRECTIONAL
from kernel.dma.mapping import dma_unmap_single
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import kfree
from tests.drivers.arm_smmu_v3.conftest import (
    DSA_BDF,
    Boot,
    cd,
    cd_asid,
    commands,
    device_dma,
    dsa,
    map_buffer,
    unit,
)

TRACE = "trace_event=hw_smmuv3:command,hw_smmuv3:stale_translation"


def _unmap_after_pasid_dma(k: Kernel, pasid: int) -> list[tuple[str, int, int]]:
    """Map a buffer, DMA through the PASID and the RID (the TLB now holds the page),
    unmap; return the commands the unmap sent."""
    dev = dsa()
    buf, iova = map_buffer(dev, 4096, DMA_BIDIRECTIONAL)
    assert device_dma(k, DSA_BDF, iova, 64, pasid=pasid) is None
    assert device_dma(k, DSA_BDF, iova, 64) is None
    mark = len(commands(k))
    dma_unmap_single(dev, iova, 4096, DMA_BIDIRECTIONAL)
    sent = commands(k)[mark:]
    # Neither the PASID nor the RID can still reach the page.
    assert device_dma(k, DSA_BDF, iova, 64, pasid=pasid) is not None
    assert device_dma(k, DSA_BDF, iova, 64) is not None
    kfree(buf)
    return sent


def test_unmap_after_pasid_dma_is_one_asid_invalidation_and_no_per_pasid_one(
    smmu_boot: Boot,
) -> None:
    k = smmu_boot(TRACE)
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    pasid = iommu_alloc_global_pasid(dev)
    iommu_attach_device_pasid(dom, dev, pasid)
    asid = cd_asid(cd(dev, 0))
    assert cd_asid(cd(dev, pasid)) == asid
    sent = _unmap_after_pasid_dma(k, pasid)
    assert [op for op, _, _ in sent] == ["TLBI_NH_VA", "CMD_SYNC"]
    assert ent.CmdTlbi0.ASID.get(sent[0][1]) == asid
    assert not any(op.startswith(("CFGI_CD", "ATC")) for op, _, _ in sent)
    assert unit(k).stats.stale_uses == 0
    iommu_detach_device_pasid(dom, dev, pasid)
    iommu_free_global_pasid(pasid)


def test_seed_v3_api_has_no_flush_gap_on_smmuv3(smmu_boot: Boot) -> None:
    """The seed-v3 series flushed only what VT-d's domain knew about (PASID 0's
    tag), which leaves a stale PASID-tagged IOTLB entry on VT-d. SMMUv3 cannot show
    that gap: the TLB is tagged by ASID, the PASID's CD carries the domain's ASID, so
    the ASID-scoped TLBI_NH_VA that unmap sends covers every PASID whose CD carries
    it — the SubstreamID is not part of any TLB tag."""
    k = smmu_boot(f"iommu.pasid_api=seed-v3 {TRACE}")
    dev = dsa()
    pasid = iommu_attach_dma_pasid(dev)
    assert cd_asid(cd(dev, pasid)) == cd_asid(cd(dev, 0))
    sent = _unmap_after_pasid_dma(k, pasid)
    assert [op for op, _, _ in sent] == ["TLBI_NH_VA", "CMD_SYNC"]
    assert unit(k).stats.stale_uses == 0
    assert not k.tracer.events("hw_smmuv3:stale_translation")
    iommu_detach_dma_pasid(dev)
    assert cd(dev, pasid) == [0] * 8


def test_same_unmap_on_vtd_sends_one_pasid_iotlb_invalidation_per_attachment() -> None:
    """The VT-d half of the comparison, on the ``default`` (VT-d + DSA) machine: the
    same default-domain-at-a-PASID setup and the same unmap send one PASID-based
    IOTLB invalidation (descriptor type 6) for PASID 0 (the RID) and one for the
    PASID, because first-stage IOTLB entries are tagged (domain id, PASID)."""
    from hw.bus import PciAddr
    from tests.drivers.intel_iommu.conftest import boot_vtd, pdev

    k, m = boot_vtd("trace_event=hw_vtd:qi_descriptor")
    try:
        dev = pdev(DSA_BDF)
        dom = iommu_get_domain_for_dev(dev)
        assert dom is not None
        pasid = iommu_alloc_global_pasid(dev)
        iommu_attach_device_pasid(dom, dev, pasid)
        buf, iova = map_buffer(dev, 4096, DMA_BIDIRECTIONAL)
        fn = m.functions[PciAddr.parse(DSA_BDF)]
        assert fn.dma_read(pasid, False, iova, 64)[1] is None
        assert fn.dma_read(None, False, iova, 64)[1] is None
        mark = len(k.tracer.events("hw_vtd:qi_descriptor"))
        dma_unmap_single(dev, iova, 4096, DMA_BIDIRECTIONAL)
        sent = k.tracer.events("hw_vtd:qi_descriptor")[mark:]
        p_iotlb = [e.fields["qw"] for e in sent if e.fields["type"] == 6]
        assert sorted((qw[0] >> 32) & 0xFFFFF for qw in p_iotlb) == [0, pasid]
        kfree(buf)
        iommu_detach_device_pasid(dom, dev, pasid)
        iommu_free_global_pasid(pasid)
        assert not k.warnings()
    finally:
        k.shutdown()
