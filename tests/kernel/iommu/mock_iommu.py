"""The mock IOMMU vendor plugin (like iommufd's selftest mock domain).

Claims firmware units of table ``MOCK`` (the :mod:`tests.kernel.iommu.mock_hw`
model). Paging domains keep a dict page table (:class:`MockPageTable`, shared with
the hardware by reference — see mock_hw's docstring) with iommufd-style invariant
checks, all WARN: map over an existing mapping, unmap that would split a leaf
(partial unmap), a domain freed with mappings left. Page sizes 4 KiB and 2 MiB.
Fault-injection sites: ``kmalloc`` for domain/device/PASID bookkeeping and
``iommu_pgtable`` in ``map_pages``,
``iommu_attach`` in a paging domain's ``attach_dev`` (as iommufd's own ``fail_iommufd`` point).
The identity, blocked and SVA domains' ops carry no map ops (``map_pages``,
``unmap_pages``, ``iova_to_phys``): the core handles non-paging domains itself.
Implements both PASID generations: ``set_dev_pasid`` (upstream) on every domain
type and the blocked domain, and ``attach_dev_pasid``/``detach_dev_pasid`` (seed-v3,
one PASID per device as VT-d's v3 patch did).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import define, field

from hw.bus import IommuUnitInfo
from kernel.bug import WARN
from kernel.device import Device
from kernel.errno import EBUSY, EEXIST, ENODEV, ENOMEM, EOPNOTSUPP
from kernel.fault_inject import should_fail
from kernel.hookspecs import hookimpl
from kernel.io import IoMem, ioremap, iounmap
from kernel.iommu.iommu import pci_device_group
from kernel.iommu.iommu_device import iommu_device_register, iommu_device_unregister
from kernel.iommu.iommu_h import (
    IOMMU_CAP_CACHE_COHERENCY,
    IOMMU_CAP_DEFERRED_FLUSH,
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_READ,
    IOMMU_WRITE,
    IommuDevice,
    IommuDomain,
    IommuDomainGeometry,
    IommuGroup,
    IommuIotlbGather,
    iommu_iotlb_gather_add_page,
)
from kernel.mm import kfree, kzalloc
from kernel.module import IommuDriverInfo
from kernel.pci import PciDev
from tests.kernel.iommu.mock_hw import (
    IDENTITY,
    MOCK_UNITS,
    PROT_READ,
    PROT_WRITE,
    REG_FLUSH,
    MockIommuUnit,
    MockPageTable,
)

SZ_4K = 1 << 12
SZ_2M = 1 << 21
MOCK_PGSIZE_BITMAP = SZ_4K | SZ_2M
MOCK_APERTURE_END = (1 << 48) - 1


@define(eq=False)
class MockIommuDevice(IommuDevice):
    hw: MockIommuUnit | None = None
    io: IoMem | None = None


@define(eq=False)
class MockDomain(IommuDomain):
    pt: MockPageTable = field(factory=MockPageTable)
    kmem: int = 0
    iotlb_syncs: int = 0
    flush_alls: int = 0


@define(eq=False)
class MockDevInfo:
    kmem: int
    seed_pasid: int = 0
    pasids: dict[int, int] = field(factory=dict)


def _hw(dev: Device) -> MockIommuUnit:
    assert dev.iommu is not None and isinstance(dev.iommu.iommu_dev, MockIommuDevice)
    hw = dev.iommu.iommu_dev.hw
    assert hw is not None
    return hw


def _rid(dev: Device) -> int:
    assert isinstance(dev, PciDev)
    return dev.rid


def _info(dev: Device) -> MockDevInfo:
    assert dev.iommu is not None and isinstance(dev.iommu.priv, MockDevInfo)
    return dev.iommu.priv


def _flush(domain: IommuDomain) -> None:
    for iommu in _OPS.units:
        if iommu.io is not None:
            iommu.io.writel(1, REG_FLUSH)


def _ctx(domain: IommuDomain) -> object:
    if isinstance(domain, MockDomain):
        return domain.pt
    if domain.type == IOMMU_DOMAIN_IDENTITY:
        return IDENTITY
    assert domain.mm is not None
    return ("x86", domain.mm.pgd_phys)


def _set_pasid(domain: IommuDomain, dev: Device, pasid: int) -> None:
    info = _info(dev)
    if pasid not in info.pasids:
        kmem = kzalloc(48)
        if kmem is None:
            raise ENOMEM("dev_pasid_info")
        info.pasids[pasid] = kmem
    _hw(dev).contexts[(_rid(dev), pasid)] = _ctx(domain)


class MockDomainOps:
    """Paging domain ops (``default_domain_ops``)."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        if should_fail("iommu_attach"):
            raise ENOMEM("mock attach")
        _hw(dev).contexts[(_rid(dev), None)] = _ctx(domain)

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        _set_pasid(domain, dev, pasid)

    def map_pages(
        self,
        domain: IommuDomain,
        iova: int,
        paddr: int,
        pgsize: int,
        pgcount: int,
        prot: int,
        gfp: int,
    ) -> int:
        assert isinstance(domain, MockDomain)
        leaves = domain.pt.leaves
        hw_prot = (PROT_READ if prot & IOMMU_READ else 0) | (
            PROT_WRITE if prot & IOMMU_WRITE else 0
        )
        done = 0
        for i in range(pgcount):
            va = iova + i * pgsize
            fail = should_fail("iommu_pgtable")
            clash = domain.pt.lookup(va) or domain.pt.lookup(va + pgsize - 1)
            idx = leaves.bisect_left(va)
            if not clash and idx < len(leaves) and leaves.keys()[idx] < va + pgsize:
                clash = (0, 0, 0, 0)
            if WARN(bool(clash), f"mock: double map at iova {va:#x}"):
                if done:
                    return done
                raise EEXIST(f"iova {va:#x} already mapped")
            if fail:
                if done:
                    return done
                raise ENOMEM("mock page table")
            leaves[va] = (paddr + i * pgsize, pgsize, hw_prot)
            done += pgsize
        return done

    def unmap_pages(
        self, domain: IommuDomain, iova: int, pgsize: int, pgcount: int, gather: IommuIotlbGather
    ) -> int:
        assert isinstance(domain, MockDomain)
        done = 0
        end = iova + pgsize * pgcount
        va = iova
        while va < end:
            hit = domain.pt.lookup(va)
            if hit is None:
                break
            lo, _, size, _ = hit
            if WARN(lo != va or lo + size > end, f"mock: partial unmap at iova {va:#x}"):
                break
            del domain.pt.leaves[lo]
            iommu_iotlb_gather_add_page(domain, gather, lo, size)
            va += size
            done += size
        return done

    def iova_to_phys(self, domain: IommuDomain, iova: int) -> int:
        assert isinstance(domain, MockDomain)
        hit = domain.pt.lookup(iova)
        return 0 if hit is None else hit[1] + (iova - hit[0])

    def iotlb_sync(self, domain: IommuDomain, gather: IommuIotlbGather) -> None:
        assert isinstance(domain, MockDomain)
        domain.iotlb_syncs += 1
        _flush(domain)

    def flush_iotlb_all(self, domain: IommuDomain) -> None:
        assert isinstance(domain, MockDomain)
        domain.flush_alls += 1
        _flush(domain)

    def free(self, domain: IommuDomain) -> None:
        assert isinstance(domain, MockDomain)
        WARN(bool(domain.pt.leaves), "mock: domain freed with mappings left")
        kfree(domain.kmem)
        domain.kmem = 0

    # seed-v3 (patch 1/4 semantics: one extra PASID per device)
    def attach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        info = _info(dev)
        if not _hw(dev).pasid_width:
            raise ENODEV("no PASID support")
        if info.seed_pasid:
            if info.seed_pasid == pasid:
                return
            WARN(True, "mock: device already has a DMA PASID")
            raise EBUSY("one DMA PASID per device")
        _hw(dev).contexts[(_rid(dev), pasid)] = _ctx(domain)
        info.seed_pasid = pasid

    def detach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        info = _info(dev)
        WARN(info.seed_pasid != pasid, "mock: detaching a PASID the device does not have")
        _hw(dev).contexts.pop((_rid(dev), pasid), None)
        info.seed_pasid = 0


class MockIdentityOps:
    """The static identity domain: ``attach_dev`` and the PASID ops only; no page
    table, so no map ops (the core never maps a non-paging domain) and no ``free``
    (static domains are never freed)."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        _hw(dev).contexts[(_rid(dev), None)] = IDENTITY

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        _set_pasid(domain, dev, pasid)

    def attach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        _hw(dev).contexts[(_rid(dev), pasid)] = IDENTITY
        _info(dev).seed_pasid = pasid

    def detach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        _hw(dev).contexts.pop((_rid(dev), pasid), None)
        _info(dev).seed_pasid = 0


class MockBlockedOps:
    """The static blocked domain: like the identity domain, no map ops and no ``free``."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        _hw(dev).contexts.pop((_rid(dev), None), None)

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        _hw(dev).contexts.pop((_rid(dev), pasid), None)
        kfree(_info(dev).pasids.pop(pasid, 0))


@define(eq=False)
class MockSvaDomain(IommuDomain):
    kmem: int = 0


class MockSvaOps:
    """An SVA domain: PASID attach and ``free``; no map ops (the process page table
    is the mapping), so the core's ``iommu_iova_to_phys`` reads 0."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        raise EOPNOTSUPP("SVA domains attach at a PASID only")

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        _set_pasid(domain, dev, pasid)

    def free(self, domain: IommuDomain) -> None:
        kfree(getattr(domain, "kmem", 0))


IDENTITY_DOMAIN = IommuDomain(type=IOMMU_DOMAIN_IDENTITY, ops=MockIdentityOps(), name="identity")
BLOCKED_DOMAIN = IommuDomain(type=IOMMU_DOMAIN_BLOCKED, ops=MockBlockedOps(), name="blocked")


class MockIommuOps:
    """``struct iommu_ops`` of the mock vendor."""

    pgsize_bitmap = MOCK_PGSIZE_BITMAP

    def __init__(self) -> None:
        self.identity_domain: IommuDomain | None = IDENTITY_DOMAIN
        self.blocked_domain: IommuDomain | None = BLOCKED_DOMAIN
        self.default_domain_ops = MockDomainOps()
        self.def_type = 0
        self.units: list[MockIommuDevice] = []
        IDENTITY_DOMAIN.owner = self
        BLOCKED_DOMAIN.owner = self

    def probe_device(self, dev: Device) -> IommuDevice:
        if not isinstance(dev, PciDev):
            raise ENODEV("mock iommu handles PCI devices only")
        # An explicit device scope wins over INCLUDE_PCI_ALL (as the DMAR rules).
        units = sorted(
            (u for u in self.units if u.fwnode is not None and u.fwnode.covers(dev.addr)),
            key=lambda u: u.fwnode is not None and u.fwnode.include_pci_all,
        )
        unit = units[0] if units else None
        if unit is None:
            raise ENODEV("not in scope")
        kmem = kzalloc(96)
        if kmem is None:
            raise ENOMEM("device_domain_info")
        assert dev.iommu is not None
        dev.iommu.priv = MockDevInfo(kmem)
        return unit

    def release_device(self, dev: Device) -> None:
        info = _info(dev)
        for pasid, kmem in list(info.pasids.items()):
            WARN(True, f"mock: PASID {pasid} still set at release")
            kfree(kmem)
        kfree(info.kmem)
        dev.iommu.priv = None  # type: ignore[union-attr]

    def device_group(self, dev: Device) -> IommuGroup:
        return pci_device_group(dev)

    def domain_alloc_paging(self, dev: Device) -> IommuDomain:
        kmem = kzalloc(192)
        if kmem is None:
            raise ENOMEM("mock domain")
        return MockDomain(
            pgsize_bitmap=MOCK_PGSIZE_BITMAP,
            geometry=IommuDomainGeometry(0, MOCK_APERTURE_END, True),
            kmem=kmem,
            name="mock-paging",
        )

    def domain_alloc_sva(self, dev: Device, mm: Any) -> IommuDomain:
        kmem = kzalloc(64)
        if kmem is None:
            raise ENOMEM("mock sva domain")
        return MockSvaDomain(ops=MockSvaOps(), kmem=kmem, name="mock-sva")

    def def_domain_type(self, dev: Device) -> int:
        return self.def_type

    def capable(self, dev: Device, cap: int) -> bool:
        return cap in (IOMMU_CAP_CACHE_COHERENCY, IOMMU_CAP_DEFERRED_FLUSH)


_OPS = MockIommuOps()


def mock_probe(unit: IommuUnitInfo) -> None:
    hw = MOCK_UNITS.get(unit.name)
    if hw is None:
        raise ENODEV(f"no mock hardware named {unit.name}")
    io = ioremap(unit.register_base, unit.register_size)
    width = io.readq(0)
    iommu = MockIommuDevice(name=unit.name, max_pasids=(1 << width) if width else 0, hw=hw, io=io)
    _OPS.units.append(iommu)
    iommu_device_register(iommu, _OPS, unit)


def mock_shutdown() -> None:
    for iommu in list(_OPS.units):
        iommu_device_unregister(iommu)
        if iommu.io is not None:
            iounmap(iommu.io)
        _OPS.units.remove(iommu)


INFO = IommuDriverInfo("mock_iommu", "MOCK", mock_probe, mock_shutdown, "test IOMMU vendor")


@hookimpl
def iommulab_iommu_drivers() -> Sequence[IommuDriverInfo]:
    return [INFO]
