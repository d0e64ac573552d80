"""RID attach (CD 0), PASID attach through ``set_dev_pasid`` (CD[pasid] with CD 0's
contents), detach through the blocked domain, and the CFGI/SYNC sequences of the
entry writer."""

from __future__ import annotations

import pytest

from drivers.arm_smmu_v3 import registers as r
from hw.smmuv3 import entries as ent
from kernel.boot import Kernel
from kernel.errno import EINVAL, EOPNOTSUPP
from kernel.iommu.iommu import (
    iommu_attach_device,
    iommu_detach_device,
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_group_claim_dma_owner,
    iommu_group_release_dma_owner,
    iommu_paging_domain_alloc,
)
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from tests.drivers.arm_smmu_v3.conftest import (
    DSA_BDF,
    Boot,
    cd,
    cd_asid,
    cd_ttb0,
    commands,
    device_dma,
    dsa,
    edu,
    master,
    ste,
    ste_field,
    unit,
)
from tests.drivers.arm_smmu_v3.machines import DSA_SID


def test_attach_rewrites_cd0_with_the_new_domains_asid_and_tables(k: Kernel) -> None:
    dev = edu()
    default = iommu_get_domain_for_dev(dev)
    dom = iommu_paging_domain_alloc(dev)
    iommu_attach_device(dom, dev)
    assert cd_asid(cd(dev, 0)) == dom.asid != default.asid  # type: ignore[attr-defined,union-attr]
    assert cd_ttb0(cd(dev, 0)) == dom.pgtbl_ops.cfg.ttbr  # type: ignore[attr-defined]
    iommu_detach_device(dom, dev)
    assert cd_asid(cd(dev, 0)) == default.asid  # type: ignore[union-attr]
    iommu_domain_free(dom)


def test_pasid_cd_carries_the_same_asid_and_ttb0_as_cd0(k: Kernel) -> None:
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    pasid = iommu_alloc_global_pasid(dev)
    iommu_attach_device_pasid(dom, dev, pasid)
    cd0, cdp = cd(dev, 0), cd(dev, pasid)
    assert cdp[0] & r.CTXDESC_CD_0_V
    assert (cd_asid(cdp), cd_ttb0(cdp)) == (cd_asid(cd0), cd_ttb0(cd0))
    assert cdp == cd0
    assert master(dev).cd_table.used_ssids == 1
    iommu_detach_device_pasid(dom, dev, pasid)
    assert cd(dev, pasid) == [0] * 8
    iommu_free_global_pasid(pasid)


def _cfgi_cd(sid: int, ssid: int, leaf: int = 1) -> tuple[str, int, int]:
    return (
        "CFGI_CD",
        ent.CmdCfgiCd0.encode(OP=ent.Op.CFGI_CD, SID=sid, SSID=ssid),
        ent.CmdCfgiLeaf1.encode(LEAF=leaf),
    )


def test_fresh_pasid_cd_is_written_hitlessly_with_two_syncs_each_way(k: Kernel) -> None:
    """Attach: CD body first, then dword 0 with V=1; detach: dword 0, then the rest.
    Each step is CFGI_CD(sid, ssid, leaf) + CMD_SYNC; the STE (already a CD-table
    STE for the DMA domain on the RID) is not touched."""
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    pasid = iommu_alloc_global_pasid(dev)
    mark = len(commands(k))
    iommu_attach_device_pasid(dom, dev, pasid)
    attach = [(op, d0, d1) for op, d0, d1 in commands(k)[mark:]]
    mark = len(commands(k))
    iommu_detach_device_pasid(dom, dev, pasid)
    detach = commands(k)[mark:]
    one = [_cfgi_cd(DSA_SID, pasid), ("CMD_SYNC",)]
    assert [c[:1] if c[0] == "CMD_SYNC" else c for c in attach] == one * 2
    assert [c[:1] if c[0] == "CMD_SYNC" else c for c in detach] == one * 2
    iommu_free_global_pasid(pasid)


def test_a_pasid_in_a_new_cd_leaf_invalidates_the_l1cd_first(k: Kernel) -> None:
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    pasid = 5000  # leaf 4 of the 2-level CD table
    mark = len(commands(k))
    iommu_attach_device_pasid(dom, dev, pasid)
    assert commands(k)[mark] == _cfgi_cd(DSA_SID, pasid, leaf=0)
    assert cd_asid(cd(dev, pasid)) == cd_asid(cd(dev, 0))
    iommu_detach_device_pasid(dom, dev, pasid)


def test_pasid_dma_lands_in_the_domains_pages(k: Kernel) -> None:
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    pasid = iommu_alloc_global_pasid(dev)
    iommu_attach_device_pasid(dom, dev, pasid)
    from kernel.iommu.iommu_h import IOMMU_READ, IOMMU_WRITE
    from kernel.iommu.iommu_map import iommu_map, iommu_unmap

    iommu_map(dom, 0x7000_0000, 0x300000, 0x1000, IOMMU_READ | IOMMU_WRITE, 0)
    assert device_dma(k, DSA_BDF, 0x7000_0000, 64, pasid=pasid) is None
    assert device_dma(k, DSA_BDF, 0x7000_0000, 64) is None
    assert iommu_unmap(dom, 0x7000_0000, 0x1000) == 0x1000
    iommu_detach_device_pasid(dom, dev, pasid)
    iommu_free_global_pasid(pasid)
    assert unit(k).stats.stale_uses == 0


def test_identity_default_domain_refuses_pasid_attach(smmu_boot: Boot) -> None:
    smmu_boot("iommu.passthrough=1")
    dev = dsa()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None and ste_field(ste(dev), 0, r.STRTAB_STE_0_CFG) == 4
    pasid = iommu_alloc_global_pasid(dev)
    with pytest.raises(EOPNOTSUPP):
        iommu_attach_device_pasid(dom, dev, pasid)
    iommu_free_global_pasid(pasid)


def test_paging_pasid_under_an_identity_rid_bypasses_substream_zero(smmu_boot: Boot) -> None:
    k = smmu_boot("iommu.passthrough=1")
    dev = dsa()
    dom = iommu_paging_domain_alloc(dev)
    iommu_attach_device_pasid(dom, dev, 3)
    words = ste(dev)
    assert ste_field(words, 0, r.STRTAB_STE_0_CFG) == r.STRTAB_STE_0_CFG_S1_TRANS
    assert ste_field(words, 1, r.STRTAB_STE_1_S1DSS) == r.STRTAB_STE_1_S1DSS_BYPASS
    assert device_dma(k, DSA_BDF, 0x200000, 64) is None  # RID: untranslated
    assert device_dma(k, DSA_BDF, 0x200000, 64, pasid=3) is not None  # nothing mapped
    iommu_detach_device_pasid(dom, dev, 3)
    assert ste_field(ste(dev), 0, r.STRTAB_STE_0_CFG) == r.STRTAB_STE_0_CFG_BYPASS
    iommu_domain_free(dom)


def test_paging_pasid_under_a_blocked_rid_terminates_substream_zero(k: Kernel) -> None:
    dev = dsa()
    owner = object()
    iommu_group_claim_dma_owner(dev.iommu_group, owner)
    assert ste_field(ste(dev), 0, r.STRTAB_STE_0_CFG) == r.STRTAB_STE_0_CFG_ABORT
    dom = iommu_paging_domain_alloc(dev)
    iommu_attach_device_pasid(dom, dev, 7)
    words = ste(dev)
    assert ste_field(words, 1, r.STRTAB_STE_1_S1DSS) == r.STRTAB_STE_1_S1DSS_TERMINATE
    assert device_dma(k, DSA_BDF, 0x1000, 8) is not None
    assert "event: F_STREAM_DISABLED client: 0000:00:02.0 sid: 0x10 ssid: 0x0" in k.dmesg()
    iommu_detach_device_pasid(dom, dev, 7)
    assert ste_field(ste(dev), 0, r.STRTAB_STE_0_CFG) == r.STRTAB_STE_0_CFG_ABORT
    iommu_domain_free(dom)
    iommu_group_release_dma_owner(dev.iommu_group)


def test_domain_of_another_smmu_is_refused(smmu_boot: Boot) -> None:
    from hw.machine import build_machine
    from kernel.boot import boot
    from tests.drivers.arm_smmu_v3.machines import SMMUV3

    spec = dict(SMMUV3)
    spec["iommus"] = [
        {"kind": "smmuv3", "name": "smmu0", "scope": ["0000:00:02.0"]},
        {"kind": "smmuv3", "name": "smmu1", "scope": ["0000:00:03.0"]},
    ]
    k = boot(build_machine(spec), "", builtins=("drivers.arm_smmu_v3",), entry_points=False)
    try:
        dom = iommu_paging_domain_alloc(dsa())
        with pytest.raises(EINVAL):
            iommu_attach_device(dom, edu())
        iommu_domain_free(dom)
        assert master(edu()).smmu.name == "smmu1"
    finally:
        k.shutdown()
