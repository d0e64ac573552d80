"""The system PASID as drivers/dma/idxd/init.c of Linux 5.15 made it, for
``iommu.pasid_api=kernel-sva``: ``idxd_enable_system_pasid`` binds the kernel's own
address space with ``iommu_sva_bind_device(dev, NULL, SVM_FLAG_SUPERVISOR_MODE)``
and takes the PASID from ``iommu_sva_get_pasid``; ``idxd_disable_system_pasid``
unbinds.

This generation follows 5.15 on purpose: kernel descriptors then carry kernel
virtual addresses and priv=1 (WQCFG.priv and ``hw->priv``; ``idxd.kernel_priv`` is
forced on), and a kernel client maps nothing with the DMA API: the IOMMU walks
``init_mm``'s page tables. Upstream replaced this with the DMA API PASID
(v6.6, f5ccf55e1028) because those tables change without any IOTLB flush.

Difference from 5.15: 5.15's ``wq_name_store`` refused to name a kernel WQ while
the device PASID was on (dmaengine had no SVA support), so the dmaengine channel
was unusable; here the channel works and its client passes kernel virtual
addresses, which is what an in-kernel SVA user did.
"""

from __future__ import annotations

from drivers.idxd.idxd import IdxdDevice
from kernel.errno import ENODEV, KernelError
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.iommu.kernel_sva import (
    SVM_FLAG_SUPERVISOR_MODE,
    iommu_sva_bind_device,
    iommu_sva_get_pasid,
    iommu_sva_unbind_device,
)
from kernel.printk import dev_dbg, dev_warn


def idxd_enable_system_pasid(idxd: IdxdDevice) -> int:
    """5.15 ``idxd_enable_system_pasid``: the supervisor bind ("iommu sva bind
    failed: -errno" when refused), then its PASID (ENODEV, after unbinding, when the
    driver reports none). Returns the PASID; the bond is kept in ``idxd.sva``."""
    dev = idxd.pdev
    try:
        sva = iommu_sva_bind_device(dev, None, SVM_FLAG_SUPERVISOR_MODE)
    except KernelError as err:
        dev_warn(dev, f"iommu sva bind failed: -{err.errno}")
        raise
    pasid = iommu_sva_get_pasid(sva)
    if pasid == IOMMU_PASID_INVALID:
        iommu_sva_unbind_device(sva)
        raise ENODEV(f"{idxd.name}: supervisor bind without a PASID")
    idxd.sva = sva
    dev_dbg(dev, f"system pasid: {pasid}")
    return pasid


def idxd_disable_system_pasid(idxd: IdxdDevice) -> None:
    """5.15 ``idxd_disable_system_pasid``: ``iommu_sva_unbind_device(idxd->sva)``."""
    if idxd.sva is not None:
        iommu_sva_unbind_device(idxd.sva)
        idxd.sva = None
