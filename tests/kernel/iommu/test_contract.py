"""IOMMU core contract tests, run against every registered vendor plugin.

To add a vendor (VT-d, SMMUv3), append a ``pytest.param`` to :data:`VENDORS` whose
value boots a kernel with that plugin and returns a :class:`VendorSetup`: the
kernel, a PCI device with PASID support and one without.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from attrs import frozen

from kernel.boot import Kernel
from kernel.errno import EINVAL, ENOMEM, KernelError
from kernel.fault_inject import injector
from kernel.iommu import iommu_map as iommu_core
from kernel.iommu.dma_iommu import iommu_attach_dma_pasid, iommu_detach_dma_pasid
from kernel.iommu.iommu import (
    dev_iommu_ops,
    iommu_attach_device,
    iommu_detach_device,
    iommu_domain_free,
    iommu_get_domain_for_dev,
    iommu_paging_domain_alloc,
    iommu_state,
)
from kernel.iommu.iommu_h import IOMMU_DOMAIN_DMA, IOMMU_READ, IOMMU_WRITE, has_optional_op
from kernel.iommu.iommu_map import iommu_iova_to_phys, iommu_map, iommu_unmap
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import (
    GFP_KERNEL,
    PAGE_OFFSET,
    alloc_pages_exact,
    free_pages_exact,
    memory_read,
    memory_write,
)
from kernel.pci import PciDev
from tests.kernel.conftest import EDU_BDF, PASID_BDF, KernelFactory, pdev_at, take_warnings
from tests.kernel.iommu.helpers import device_read, device_write
from tests.kernel.iommu.mock_hw import mock_unit

SZ_4K = 1 << 12
SZ_2M = 1 << 21
RW = IOMMU_READ | IOMMU_WRITE

if TYPE_CHECKING:
    from iommulab.pytest_plugin import Expectations


@frozen
class VendorSetup:
    kernel: Kernel
    pasid_dev: PciDev
    plain_dev: PciDev


def _mock(make_kernel: KernelFactory, cmdline: str) -> VendorSetup:
    k = make_kernel(cmdline)
    return VendorSetup(k, pdev_at(PASID_BDF), pdev_at(EDU_BDF))


VENDORS = [pytest.param(_mock, id="mock")]
VENDORS.append(__import__("tests.drivers.arm_smmu_v3.contract", fromlist=[""]).VENDOR_PARAM)
VENDORS.append(__import__("tests.drivers.intel_iommu.vendor", fromlist=[""]).VENDOR_PARAM)


@pytest.fixture(params=VENDORS)
def vendor(
    request: pytest.FixtureRequest, make_kernel: KernelFactory
) -> Callable[[str], VendorSetup]:
    boot_vendor: Callable[[KernelFactory, str], VendorSetup] = request.param
    return lambda cmdline="": boot_vendor(make_kernel, cmdline)


def _buf(size: int) -> int:
    vaddr = alloc_pages_exact(size, GFP_KERNEL)
    assert vaddr is not None
    return vaddr


def test_default_domain_is_a_dma_domain(vendor: Callable[[str], VendorSetup]) -> None:
    v = vendor("")
    dom = iommu_get_domain_for_dev(v.plain_dev)
    assert dom is not None and dom.type == IOMMU_DOMAIN_DMA
    assert v.plain_dev.dma_iommu


def test_map_translates_and_unmap_removes(vendor: Callable[[str], VendorSetup]) -> None:
    v = vendor("")
    dom = iommu_paging_domain_alloc(v.plain_dev)
    buf = _buf(SZ_4K * 3)
    phys = buf - PAGE_OFFSET
    iommu_map(dom, 0x10000, phys, SZ_4K * 3, RW, GFP_KERNEL)
    assert iommu_iova_to_phys(dom, 0x10000 + 0x1234) == phys + 0x1234
    assert iommu_unmap(dom, 0x10000, SZ_4K * 3) == SZ_4K * 3
    assert iommu_iova_to_phys(dom, 0x10000) == 0
    iommu_domain_free(dom)
    free_pages_exact(buf, SZ_4K * 3)


def test_map_uses_large_pages_when_aligned(vendor: Callable[[str], VendorSetup]) -> None:
    v = vendor("")
    dom = iommu_paging_domain_alloc(v.plain_dev)
    iommu_map(dom, SZ_2M - SZ_4K, 0x40_0000 - SZ_4K, SZ_2M + SZ_4K * 2, RW, GFP_KERNEL)
    assert iommu_iova_to_phys(dom, SZ_2M + 5) == 0x40_0000 + 5
    assert iommu_unmap(dom, SZ_2M - SZ_4K, SZ_2M + SZ_4K * 2) == SZ_2M + SZ_4K * 2
    iommu_domain_free(dom)


def test_static_domains_have_no_map_ops_and_the_core_handles_them(
    vendor: Callable[[str], VendorSetup],
) -> None:
    """Identity and blocked domains provide ``attach_dev`` (and PASID ops) only, as in
    Linux; the core never calls map ops on them: map is EINVAL, unmap unmaps
    nothing, identity translates to itself and blocked to 0."""
    v = vendor("")
    ops = dev_iommu_ops(v.plain_dev)
    statics = [(d, t) for d, t in ((ops.identity_domain, True), (ops.blocked_domain, False)) if d]
    assert statics
    for dom, identity in statics:
        for op in ("map_pages", "unmap_pages", "iova_to_phys"):
            assert not has_optional_op(dom.ops, op), (dom, op)
        with pytest.raises(EINVAL):
            iommu_map(dom, 0x10000, 0x100000, SZ_4K, RW, GFP_KERNEL)
        assert iommu_unmap(dom, 0x10000, SZ_4K) == 0
        assert iommu_iova_to_phys(dom, 0x10234) == (0x10234 if identity else 0)
    assert not take_warnings(v.kernel)


def test_attach_then_device_dma_uses_the_domain(vendor: Callable[[str], VendorSetup]) -> None:
    v = vendor("")
    dev = v.plain_dev
    default = iommu_get_domain_for_dev(dev)
    dom = iommu_paging_domain_alloc(dev)
    buf = _buf(SZ_4K)
    memory_write(buf, b"\xab" * 64)
    iommu_map(dom, 0x20000, buf - PAGE_OFFSET, SZ_4K, RW, GFP_KERNEL)
    iommu_attach_device(dom, dev)
    assert iommu_get_domain_for_dev(dev) is dom
    assert device_read(dev, 0x20000, 64) == 0
    iommu_detach_device(dom, dev)
    assert iommu_get_domain_for_dev(dev) is default
    assert device_read(dev, 0x20000, 64) != 0
    iommu_unmap(dom, 0x20000, SZ_4K)
    iommu_domain_free(dom)
    free_pages_exact(buf, SZ_4K)


def remap_outcome(v: VendorSetup) -> tuple[bytes, bytes]:
    """The device reads page A through IOVA (its IOMMU may cache the translation), the
    IOVA is unmapped and mapped again to page B, and the device writes what it read
    back to IOVA. Returns (B, A) as they are afterwards; with every flush the core and
    driver owe, the bytes land in B and A keeps what the CPU left there."""
    dev = v.plain_dev
    dom = iommu_paging_domain_alloc(dev)
    a, b = _buf(SZ_4K), _buf(SZ_4K)
    memory_write(a, b"\xaa" * 64)
    memory_write(b, bytes(64))
    iommu_attach_device(dom, dev)
    iommu_map(dom, 0x30000, a - PAGE_OFFSET, SZ_4K, RW, GFP_KERNEL)
    assert device_read(dev, 0x30000, 64) == 0
    memory_write(a, bytes(64))
    assert iommu_unmap(dom, 0x30000, SZ_4K) == SZ_4K
    iommu_map(dom, 0x30000, b - PAGE_OFFSET, SZ_4K, RW, GFP_KERNEL)
    device_write(dev, 0x30000, 64)
    out = memory_read(b, 64), memory_read(a, 64)
    iommu_detach_device(dom, dev)
    iommu_unmap(dom, 0x30000, SZ_4K)
    iommu_domain_free(dom)
    free_pages_exact(a, SZ_4K)
    free_pages_exact(b, SZ_4K)
    return out


def test_unmap_then_remap_reaches_the_new_page(vendor: Callable[[str], VendorSetup]) -> None:
    """``iommu_unmap`` syncs the IOTLB before it returns (strict mode): a cached
    translation of the old page is never used after the IOVA is mapped again."""
    assert remap_outcome(vendor("")) == (b"\xaa" * 64, bytes(64))


def test_a_core_that_skips_iotlb_sync_fails_the_contract_on_the_mock(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch, iommulab_expect: Expectations
) -> None:
    """The mock vendor catches a missing flush in the core: with the core's
    ``iommu_iotlb_sync`` patched out (what ``iommu_unmap`` and the gather call), the
    mock's IOTLB keeps IOVA -> A, the device's write lands in A instead of B — what
    :func:`test_unmap_then_remap_reaches_the_new_page` forbids — and the model counts
    the use of the stale translation."""
    iommulab_expect.stale()
    v = _mock(make_kernel, "")
    monkeypatch.setattr(iommu_core, "iommu_iotlb_sync", lambda domain, gather: None)
    assert remap_outcome(v) == (bytes(64), b"\xaa" * 64)
    assert mock_unit().stats.stale_uses >= 1


def test_pasid_attach_upstream(vendor: Callable[[str], VendorSetup]) -> None:
    v = vendor("")
    dev = v.pasid_dev
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    pasid = iommu_alloc_global_pasid(dev)
    iommu_attach_device_pasid(dom, dev, pasid)
    assert dev.iommu_group.pasid_array[pasid] is dom
    iommu_detach_device_pasid(dom, dev, pasid)
    assert pasid not in dev.iommu_group.pasid_array
    iommu_free_global_pasid(pasid)


def test_pasid_attach_seed_v3(vendor: Callable[[str], VendorSetup]) -> None:
    v = vendor("iommu.pasid_api=seed-v3")
    dev = v.pasid_dev
    pasid = iommu_attach_dma_pasid(dev)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None and dom.pasid == pasid and dom.pasid_users == 1
    iommu_detach_dma_pasid(dev)
    assert dom.pasid == 0
    assert not iommu_state().global_pasid_ida.ids


STEPS = ["domain_alloc", "map", "attach", "pasid"]


@pytest.mark.parametrize("step", STEPS)
def test_injected_failure_unwinds(vendor: Callable[[str], VendorSetup], step: str) -> None:
    """Each step fails on its first allocation; the state is what it was before."""
    v = vendor("")
    dev = v.pasid_dev
    before = {(a.kind, a.addr) for a in v.kernel.mm.live()}
    default = iommu_get_domain_for_dev(dev)
    assert default is not None
    inj = injector()
    if step == "domain_alloc":
        inj.arm(1)
        with pytest.raises(ENOMEM):
            iommu_paging_domain_alloc(dev)
    elif step == "map":
        dom = iommu_paging_domain_alloc(dev)
        iommu_map(dom, 0, 0x100000, SZ_4K, RW, GFP_KERNEL)
        inj.arm(2)
        with pytest.raises(KernelError):
            iommu_map(dom, 0x10000, 0x200000, SZ_4K * 4, RW, GFP_KERNEL)
        assert iommu_iova_to_phys(dom, 0x10000) == 0
        assert iommu_iova_to_phys(dom, 0) == 0x100000
        iommu_unmap(dom, 0, SZ_4K)
        iommu_domain_free(dom)
    elif step == "attach":
        dom = iommu_paging_domain_alloc(v.plain_dev)
        inj.arm(1)
        with pytest.raises(ENOMEM):
            iommu_attach_device(dom, dev)
        iommu_domain_free(dom)
    else:
        pasid = iommu_alloc_global_pasid(dev)
        inj.arm(1)
        with pytest.raises(ENOMEM):
            iommu_attach_device_pasid(default, dev, pasid)
        assert pasid not in dev.iommu_group.pasid_array
        iommu_free_global_pasid(pasid)
    inj.disarm()
    assert iommu_get_domain_for_dev(dev) is default
    assert {(a.kind, a.addr) for a in v.kernel.mm.live()} == before
    take_warnings(v.kernel)
