"""dma-iommu: IOVA placement, the flush queue, scatterlist unwind, and the seed-v3
``iommu_attach_dma_pasid`` export."""

from __future__ import annotations

import pytest

from kernel.dma.direction import (
    DMA_ATTR_MMIO,
    DMA_ATTR_PRIVILEGED,
    DMA_BIDIRECTIONAL,
    DMA_BIT_MASK,
    DMA_FROM_DEVICE,
    DMA_NONE,
    DMA_TO_DEVICE,
)
from kernel.dma.mapping import (
    dma_map_sg,
    dma_map_single,
    dma_mapping_error,
    dma_set_mask_and_coherent,
    dma_unmap_single,
)
from kernel.dma.scatterlist import sg_init_table, sg_set_buf
from kernel.errno import ENODEV, ENOMEM
from kernel.fault_inject import injector
from kernel.iommu.dma_iommu import (
    IOVA_DEFAULT_FQ_SIZE,
    _cookie,
    dma_info_to_prot,
    iommu_attach_dma_pasid,
    iommu_detach_dma_pasid,
    iommu_dma_flush_queue_pending,
    iommu_dma_live_iovas,
    iommu_get_dma_cookie,
)
from kernel.iommu.iommu import (
    iommu_get_domain_for_dev,
    iommu_probe_device,
    iommu_release_device,
    iommu_state,
)
from kernel.iommu.iommu_h import (
    IOMMU_CACHE,
    IOMMU_DOMAIN_DMA,
    IOMMU_MMIO,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuDomain,
)
from kernel.iommu.iova import alloc_iova
from kernel.pci import PciDev
from tests.kernel.conftest import (
    EDU_BDF,
    PASID_BDF,
    KernelFactory,
    pdev_at,
    scratch_buffer,
    take_warnings,
)
from tests.kernel.iommu import mock_iommu

SZ_4K = 1 << 12


def _buf(size: int = 64) -> int:
    return scratch_buffer(size)


def _fill_below(dev: PciDev, limit: int) -> None:
    """Allocate every free IOVA page frame of ``dev``'s default domain below ``limit``
    (the gaps around the reserved PCI window), highest gap first."""
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    iovad = _cookie(dom).iovad
    assert iovad is not None
    top = limit >> 12
    gaps, nxt = [], 1
    for lo, hi in iovad.tree.items():
        if lo >= top:
            break
        if lo > nxt:
            gaps.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt < top:
        gaps.append((nxt, top - 1))
    for lo, hi in reversed(gaps):
        assert alloc_iova(iovad, hi - lo + 1, hi, False) == lo


def test_prot_follows_direction_coherence_and_attributes() -> None:
    assert dma_info_to_prot(DMA_BIDIRECTIONAL, True, 0) == IOMMU_CACHE | IOMMU_READ | IOMMU_WRITE
    assert dma_info_to_prot(DMA_TO_DEVICE, False, 0) == IOMMU_READ
    assert dma_info_to_prot(DMA_FROM_DEVICE, False, 0) == IOMMU_WRITE
    assert dma_info_to_prot(DMA_TO_DEVICE, False, DMA_ATTR_PRIVILEGED) == IOMMU_READ | IOMMU_PRIV
    assert dma_info_to_prot(DMA_TO_DEVICE, False, DMA_ATTR_MMIO) == IOMMU_READ | IOMMU_MMIO
    assert dma_info_to_prot(DMA_NONE, False, 0) == 0


def test_a_domain_gets_one_dma_cookie(make_kernel: KernelFactory) -> None:
    make_kernel()
    dom = iommu_get_domain_for_dev(pdev_at(EDU_BDF))
    assert dom is not None
    with pytest.raises(Exception, match="already has a cookie"):
        iommu_get_dma_cookie(dom)
    with pytest.raises(ENODEV):
        _cookie(IommuDomain(name="plain"))


def test_pci_device_gets_32bit_iovas_first_even_with_a_64bit_mask(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64))
    h = dma_map_single(dev, _buf(), 64, DMA_TO_DEVICE)
    assert not dma_mapping_error(dev, h) and h < 1 << 32
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)


def test_full_32bit_iova_space_switches_the_device_to_addresses_up_to_the_aperture(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64))
    _fill_below(dev, 1 << 32)
    h = dma_map_single(dev, _buf(), 64, DMA_TO_DEVICE)
    assert not dma_mapping_error(dev, h) and h >= 1 << 32
    # The 64-bit mask is clipped to the mock's 48-bit aperture, as Linux does.
    assert f"pci {EDU_BDF}: Using 48-bit DMA addresses" in k.dmesg()
    assert not dev.iommu.pci_32bit_workaround
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)


def test_no_iova_below_the_mask_is_a_mapping_error(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    _fill_below(dev, 1 << 32)
    h = dma_map_single(dev, _buf(), 64, DMA_TO_DEVICE)
    assert dma_mapping_error(dev, h)
    bufs = [_buf(), _buf()]
    sgl = sg_init_table(2)
    for sg, b in zip(sgl, bufs, strict=True):
        sg_set_buf(sg, b, 64)
    assert dma_map_sg(dev, sgl, 2, DMA_TO_DEVICE) == 0


def test_sg_map_failing_midway_unmaps_and_frees_everything(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_domain_for_dev(dev)
    sgl = sg_init_table(3)
    for sg in sgl:
        sg_set_buf(sg, _buf(4096), 4096)
    injector().arm(2, frozenset({"iommu_pgtable"}))
    try:
        assert dma_map_sg(dev, sgl, 3, DMA_TO_DEVICE) == 0
    finally:
        injector().disarm()
    assert iommu_dma_live_iovas(dev) == 0
    assert not dom.mappings()  # type: ignore[union-attr]
    assert all(sg.dma_length == 0 for sg in sgl)


def test_live_iovas_of_a_device_without_iommu_is_0(make_kernel: KernelFactory) -> None:
    make_kernel(iommu=False)
    assert iommu_dma_live_iovas(pdev_at(EDU_BDF)) == 0
    assert iommu_dma_flush_queue_pending(IommuDomain()) == 0


# --------------------------------------------------------------------------- flush queue


def test_full_flush_queue_is_flushed_before_the_next_entry(make_kernel: KernelFactory) -> None:
    make_kernel("iommu.strict=0")
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_domain_for_dev(dev)
    buf = _buf()
    for _ in range(IOVA_DEFAULT_FQ_SIZE):
        h = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
        dma_mapping_error(dev, h)
        dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)
    assert iommu_dma_flush_queue_pending(dom) == IOVA_DEFAULT_FQ_SIZE  # type: ignore[arg-type]
    assert dom.flush_alls == 0  # type: ignore[union-attr]
    h = dma_map_single(dev, buf, 64, DMA_TO_DEVICE)
    dma_mapping_error(dev, h)
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)
    assert dom.flush_alls == 1  # type: ignore[union-attr]
    assert iommu_dma_flush_queue_pending(dom) == 1  # type: ignore[arg-type]


def test_flush_queue_is_drained_when_the_domain_is_freed(make_kernel: KernelFactory) -> None:
    make_kernel("iommu.strict=0")
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_domain_for_dev(dev)
    h = dma_map_single(dev, _buf(), 64, DMA_TO_DEVICE)
    dma_mapping_error(dev, h)
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)
    assert iommu_dma_flush_queue_pending(dom) == 1  # type: ignore[arg-type]
    iommu_release_device(dev)
    assert dom.flush_alls == 1 and dom.iova_cookie is None  # type: ignore[union-attr]


def test_flush_queue_allocation_failure_falls_back_to_strict(make_kernel: KernelFactory) -> None:
    k = make_kernel("iommu.strict=0")
    dev = pdev_at(EDU_BDF)
    iommu_release_device(dev)
    injector().arm(0, frozenset({"kmalloc"}))
    iommu_probe_device(dev)
    n = len(injector().seen)  # the flush queue is the last allocation of the probe
    injector().disarm()
    iommu_release_device(dev)
    injector().arm(n, frozenset({"kmalloc"}))
    try:
        iommu_probe_device(dev)
    finally:
        injector().disarm()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None and dom.type == IOMMU_DOMAIN_DMA
    assert "iommu: iova flush queue initialization failed" in k.dmesg()
    assert iommu_dma_flush_queue_pending(dom) == 0


# --------------------------------------------------------------------------- seed-v3


def test_seed_dma_pasid_needs_an_iommu_and_pasid_support(make_kernel: KernelFactory) -> None:
    make_kernel("iommu.pasid_api=seed-v3")
    with pytest.raises(ENODEV):
        iommu_attach_dma_pasid(pdev_at(EDU_BDF))  # no PASID capability
    assert not iommu_state().global_pasid_ida.ids


def test_seed_dma_pasid_of_a_device_without_iommu(make_kernel: KernelFactory) -> None:
    make_kernel("iommu.pasid_api=seed-v3", iommu=False)
    dev = pdev_at(PASID_BDF)
    with pytest.raises(ENODEV):
        iommu_attach_dma_pasid(dev)
    iommu_detach_dma_pasid(dev)  # nothing attached: nothing to do


def test_seed_dma_pasid_is_freed_when_the_driver_refuses_it(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_kernel("iommu.pasid_api=seed-v3")
    dev = pdev_at(PASID_BDF)

    def refuse(self: object, domain: IommuDomain, dev: PciDev, pasid: int) -> None:
        raise ENOMEM("attach_dev_pasid")

    monkeypatch.setattr(mock_iommu.MockDomainOps, "attach_dev_pasid", refuse)
    with pytest.raises(ENOMEM):
        iommu_attach_dma_pasid(dev)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None and dom.pasid == 0 and dom.pasid_users == 0
    assert not iommu_state().global_pasid_ida.ids


def test_seed_second_user_refused_keeps_the_pasid_of_the_first(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_kernel("iommu.pasid_api=seed-v3")
    dev = pdev_at(PASID_BDF)
    pasid = iommu_attach_dma_pasid(dev)

    def refuse(self: object, domain: IommuDomain, dev: PciDev, pasid: int) -> None:
        raise ENOMEM("attach_dev_pasid")

    monkeypatch.setattr(mock_iommu.MockDomainOps, "attach_dev_pasid", refuse)
    with pytest.raises(ENOMEM):
        iommu_attach_dma_pasid(dev)
    monkeypatch.undo()
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None and dom.pasid == pasid and dom.pasid_users == 1
    iommu_detach_dma_pasid(dev)
    assert not iommu_state().global_pasid_ida.ids


def test_seed_detach_without_a_dma_pasid_warns(make_kernel: KernelFactory) -> None:
    k = make_kernel("iommu.pasid_api=seed-v3")
    iommu_detach_dma_pasid(pdev_at(PASID_BDF))
    assert take_warnings(k) == [f"{PASID_BDF}: no DMA PASID to detach"]


def test_without_a_forced_aperture_the_dma_mask_alone_limits_iovas(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    real = mock_iommu._OPS.domain_alloc_paging

    def alloc(d: PciDev) -> IommuDomain:
        dom = real(d)
        dom.geometry.force_aperture = False
        return dom

    monkeypatch.setattr(mock_iommu._OPS, "domain_alloc_paging", alloc)
    iommu_release_device(dev)
    iommu_probe_device(dev)
    dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64))
    _fill_below(dev, 1 << 32)
    h = dma_map_single(dev, _buf(), 64, DMA_TO_DEVICE)
    assert not dma_mapping_error(dev, h) and h >= 1 << 48
    assert f"pci {EDU_BDF}: Using 64-bit DMA addresses" in k.dmesg()
    dma_unmap_single(dev, h, 64, DMA_TO_DEVICE)
