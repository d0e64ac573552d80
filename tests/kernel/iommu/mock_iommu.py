"""The mock IOMMU vendor plugin (like iommufd's selftest mock domain), a driver for the
``mock`` hardware model (:mod:`hw.mock_iommu`, firmware table ``MOCK``).

It reaches the hardware the way a real driver does and nothing else: registers through
``ioremap``/``readq``/``writeq`` (the layout is restated below, as a driver's
``registers.h`` restates its spec), tables built as bytes in RAM pages from the page
allocator — a root table per unit, a context table per bus, a PASID directory and
PASID tables per device, and for every paging domain a 4-level page table in the
mock format. ``iotlb_sync`` and ``flush_iotlb_all`` write the unit's invalidation
register (range-selective for the gathered range, domain-selective for everything),
and a freed domain's entries are invalidated before its domain ID is reused; so a
core change that skips a flush leaves the model a stale IOTLB entry to use.

Invariant checks, all WARN (as iommufd's mock): map over an existing mapping, unmap
that would split a leaf (partial unmap), a domain freed with mappings left. Page
sizes 4 KiB and 2 MiB. Fault-injection sites: ``kmalloc`` for domain/device/PASID
bookkeeping, ``alloc_pages`` for table pages, ``ida_alloc`` for domain IDs,
``iommu_pgtable`` once per page in ``map_pages``, ``iommu_attach`` in a paging
domain's ``attach_dev`` (as iommufd's own ``fail_iommufd`` point). The identity,
blocked and SVA domains' ops carry no map ops (``map_pages``, ``unmap_pages``,
``iova_to_phys``): the core handles non-paging domains itself. Implements both PASID
generations: ``set_dev_pasid`` (upstream) on every domain type and the blocked domain,
and ``attach_dev_pasid``/``detach_dev_pasid`` (seed-v3, one PASID per device as VT-d's
v3 patch did).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from attrs import define, field

from kernel.bug import WARN
from kernel.device import Device
from kernel.errno import EBUSY, EEXIST, ENODEV, ENOMEM, EOPNOTSUPP, KernelError
from kernel.fault_inject import should_fail
from kernel.hookspecs import hookimpl
from kernel.idr import IDA, ida_alloc_range, ida_free
from kernel.io import IoMem, ioremap, iounmap
from kernel.iommu.iommu import iommu_state, pci_device_group
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
from kernel.mm import (
    __GFP_ZERO,
    GFP_KERNEL,
    alloc_pages_exact,
    free_page,
    free_pages_exact,
    get_zeroed_page,
    kfree,
    kzalloc,
    pgtable_words,
    phys_to_virt,
    read64,
    virt_to_phys,
    write64,
)
from kernel.module import IommuDriverInfo
from kernel.pci import PciDev

# -- registers and entries (hw/mock_iommu.py's layout, restated for the driver) ----------
MOCK_CAP = 0x00
MOCK_CAP_PW = 0x1F
MOCK_ROOT = 0x08
MOCK_CTRL = 0x10
MOCK_CTRL_EN = 1
MOCK_INV = 0x18
MOCK_INV_ADDR = 0x20
MOCK_INV_DOMAIN = 2
MOCK_INV_RANGE = 3
MOCK_INV_ORDER_SHIFT = 4
MOCK_INV_DID_SHIFT = 16

ENTRY_P = 1
TT_PAGING = 0 << 1
TT_PASS = 1 << 1
TT_X86 = 2 << 1
DID_SHIFT = 52
DID_MAX = (1 << 12) - 1
ADDR_MASK = ((1 << 52) - 1) & ~0xFFF
PTE_R = 1
PTE_W = 2
PTE_LEAF = 1 << 7
PASID_TABLE_SHIFT = 9

SZ_4K = 1 << 12
SZ_2M = 1 << 21
MOCK_PGSIZE_BITMAP = SZ_4K | SZ_2M
MOCK_APERTURE_END = (1 << 48) - 1


@define(eq=False)
class MockIommuDevice(IommuDevice):
    """One mock unit: its registers and its root table (kernel virtual address)."""

    io: IoMem | None = None
    root: int = 0
    ctx_tables: dict[int, int] = field(factory=dict)
    """Bus -> context table (kernel virtual address)."""


@define(eq=False)
class MockDomain(IommuDomain):
    pgd: int = 0
    """Top page-table page (kernel virtual address); 0 until the domain is allocated."""
    did: int = 0
    kmem: int = 0
    table_pages: list[int] = field(factory=list)
    iotlb_syncs: int = 0
    flush_alls: int = 0

    def mappings(self) -> list[tuple[int, int, int]]:
        """Every leaf of the page table in RAM: (iova, phys, size)."""
        return list(_leaves(self.pgd, 4, 0)) if self.pgd else []


@define(eq=False)
class MockDevInfo:
    kmem: int
    seed_pasid: int = 0
    pasids: dict[int, int] = field(factory=dict)
    pasid_dir: int = 0
    pasid_dir_size: int = 0
    pasid_tables: dict[int, int] = field(factory=dict)


def _unit(dev: Device) -> MockIommuDevice:
    assert dev.iommu is not None and isinstance(dev.iommu.iommu_dev, MockIommuDevice)
    return dev.iommu.iommu_dev


def _rid(dev: Device) -> int:
    assert isinstance(dev, PciDev)
    return dev.rid


def _info(dev: Device) -> MockDevInfo:
    assert dev.iommu is not None and isinstance(dev.iommu.priv, MockDevInfo)
    return dev.iommu.priv


def _zeroed_page() -> int:
    page = get_zeroed_page(GFP_KERNEL)
    if page is None:
        raise ENOMEM("mock iommu table page")
    return page


# -- translation entries ------------------------------------------------------------------
def domain_entry(domain: IommuDomain) -> int:
    """The translation entry that points a requester at ``domain`` (0 = blocked)."""
    if isinstance(domain, MockDomain):
        return ENTRY_P | TT_PAGING | virt_to_phys(domain.pgd) | domain.did << DID_SHIFT
    if domain.type == IOMMU_DOMAIN_IDENTITY:
        return ENTRY_P | TT_PASS
    if domain.type == IOMMU_DOMAIN_BLOCKED:
        return 0
    assert domain.mm is not None
    return ENTRY_P | TT_X86 | domain.mm.pgd_phys


def _context_entry(dev: Device, alloc: bool = True) -> int:
    """Kernel virtual address of the device's 16-byte context entry (0 when its bus
    has no context table and ``alloc`` is false)."""
    unit, rid = _unit(dev), _rid(dev)
    table = unit.ctx_tables.get(rid >> 8)
    if table is None:
        if not alloc:
            return 0
        table = unit.ctx_tables[rid >> 8] = _zeroed_page()
        write64(unit.root + 8 * (rid >> 8), virt_to_phys(table) | ENTRY_P)
    return table + 16 * (rid & 0xFF)


def _set_rid_entry(dev: Device, entry: int) -> None:
    write64(_context_entry(dev), entry)


def _pasid_slot(dev: Device, pasid: int) -> int:
    """Kernel virtual address of the device's PASID-table entry for ``pasid``, with the
    directory and table allocated on first use."""
    info = _info(dev)
    if not info.pasid_dir:
        assert dev.iommu is not None
        size = max(SZ_4K, 8 * -(-dev.iommu.max_pasids >> PASID_TABLE_SHIFT))
        pdir = alloc_pages_exact(size, GFP_KERNEL | __GFP_ZERO)
        if pdir is None:
            raise ENOMEM("mock PASID directory")
        info.pasid_dir, info.pasid_dir_size = pdir, size
        write64(_context_entry(dev) + 8, virt_to_phys(pdir) | ENTRY_P)
    idx = pasid >> PASID_TABLE_SHIFT
    table = info.pasid_tables.get(idx)
    if table is None:
        table = info.pasid_tables[idx] = _zeroed_page()
        write64(info.pasid_dir + 8 * idx, virt_to_phys(table) | ENTRY_P)
    return table + 8 * (pasid & ((1 << PASID_TABLE_SHIFT) - 1))


def _set_pasid(domain: IommuDomain, dev: Device, pasid: int) -> None:
    info = _info(dev)
    new = pasid not in info.pasids
    if new:
        kmem = kzalloc(48)
        if kmem is None:
            raise ENOMEM("dev_pasid_info")
        info.pasids[pasid] = kmem
    try:
        slot = _pasid_slot(dev, pasid)
    except KernelError:
        if new:
            kfree(info.pasids.pop(pasid))
            _free_pasid_tables(dev)
        raise
    write64(slot, domain_entry(domain))


def _clear_pasid(dev: Device, pasid: int) -> None:
    info = _info(dev)
    if info.pasid_tables.get(pasid >> PASID_TABLE_SHIFT):
        write64(_pasid_slot(dev, pasid), 0)


def _free_pasid_tables(dev: Device) -> None:
    """Once no PASID is set, the directory goes (the hardware caches no PASID
    entries, so nothing needs invalidating first)."""
    info = _info(dev)
    if info.pasids or info.seed_pasid or not info.pasid_dir:
        return
    ctx = _context_entry(dev, alloc=False)
    if ctx:
        write64(ctx + 8, 0)
    for table in info.pasid_tables.values():
        free_page(table)
    info.pasid_tables.clear()
    free_pages_exact(info.pasid_dir, info.pasid_dir_size)
    info.pasid_dir = info.pasid_dir_size = 0


# -- invalidation -------------------------------------------------------------------------
def _invalidate(domain: MockDomain, start: int | None = None, end: int = 0) -> None:
    """Invalidate ``domain``'s IOTLB entries on every unit: ``[start, end]`` (as the
    smallest aligned power-of-two range holding it) or, with no start, all of them."""
    order = 0
    if start is not None:
        while (start >> (12 + order)) != (end >> (12 + order)):
            order += 1
    for unit in _OPS.units:
        if unit.io is None:
            continue
        cmd = domain.did << MOCK_INV_DID_SHIFT
        if start is None or order > 36:
            unit.io.writeq(cmd | MOCK_INV_DOMAIN, MOCK_INV)
        else:
            unit.io.writeq(start & ~0xFFF, MOCK_INV_ADDR)
            unit.io.writeq(cmd | order << MOCK_INV_ORDER_SHIFT | MOCK_INV_RANGE, MOCK_INV)


# -- page table ---------------------------------------------------------------------------
_SHIFT = (0, 12, 21, 30, 39)
"""The IOVA shift of each level's index (level 1..4): 12 + 9 * (level - 1)."""


def _leaves(table: int, level: int, base: int) -> Iterator[tuple[int, int, int]]:
    # a scan of whole tables (free()'s mappings-left check runs one per domain freed):
    # entries indexed in pgtable_words(), not a read64 call each
    words, first = pgtable_words(), virt_to_phys(table) >> 3
    for i in range(512):
        pte = words[first + i]
        if not pte & (PTE_R | PTE_W):
            continue
        iova = base + (i << _SHIFT[level])
        if level == 1 or pte & PTE_LEAF:
            yield iova, pte & ADDR_MASK, 1 << _SHIFT[level]
        else:
            yield from _leaves(phys_to_virt(pte & ADDR_MASK), level - 1, iova)


def _pte(domain: MockDomain, iova: int, level: int, alloc: bool) -> tuple[int, int]:
    """(kernel address of the entry at ``level`` for ``iova``, its value), creating the
    tables above it when ``alloc``; (0, pte) at a leaf above ``level``, (0, 0) when a
    table is missing and not allocated."""
    table = domain.pgd
    for lvl in range(4, level, -1):
        slot = table + 8 * ((iova >> _SHIFT[lvl]) & 0x1FF)
        pte = read64(slot)
        if pte & PTE_LEAF:
            return 0, pte
        if not pte & (PTE_R | PTE_W):
            if not alloc:
                return 0, 0
            new = _zeroed_page()
            domain.table_pages.append(new)
            write64(slot, virt_to_phys(new) | PTE_R | PTE_W)
            table = new
        else:
            table = phys_to_virt(pte & ADDR_MASK)
    slot = table + 8 * ((iova >> _SHIFT[level]) & 0x1FF)
    return slot, read64(slot)


def _lookup(domain: MockDomain, iova: int) -> tuple[int, int, int, int] | None:
    """(leaf iova, phys, size, entry address) of the leaf mapping ``iova``."""
    table = domain.pgd
    for level in (4, 3, 2, 1):
        slot = table + 8 * ((iova >> _SHIFT[level]) & 0x1FF)
        pte = read64(slot)
        if not pte & (PTE_R | PTE_W):
            return None
        if level == 1 or pte & PTE_LEAF:
            size = 1 << _SHIFT[level]
            return iova & ~(size - 1), pte & ADDR_MASK, size, slot
        table = phys_to_virt(pte & ADDR_MASK)
    return None  # pragma: no cover - level 1 always returns


class MockDomainOps:
    """Paging domain ops (``default_domain_ops``)."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        if should_fail("iommu_attach"):
            raise ENOMEM("mock attach")
        _set_rid_entry(dev, domain_entry(domain))

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
        bits = (PTE_R if prot & IOMMU_READ else 0) | (PTE_W if prot & IOMMU_WRITE else 0)
        level = 2 if pgsize == SZ_2M else 1
        done = 0
        for i in range(pgcount):
            va = iova + i * pgsize
            fail = should_fail("iommu_pgtable")
            slot, pte = _pte(domain, va, level, False)
            clash = bool(pte & (PTE_R | PTE_W)) and (
                not slot  # a leaf above: a 2 MiB page holds this 4 KiB one
                or level == 1
                or bool(pte & PTE_LEAF)
                or any(_leaves(phys_to_virt(pte & ADDR_MASK), 1, va))
            )
            if WARN(clash, f"mock: double map at iova {va:#x}"):
                if done:
                    return done
                raise EEXIST(f"iova {va:#x} already mapped")
            if not fail and not slot:
                try:
                    slot, _ = _pte(domain, va, level, True)
                except ENOMEM:
                    fail = True
            if fail:
                if done:
                    return done
                raise ENOMEM("mock page table")
            write64(slot, (paddr + i * pgsize) | bits | (PTE_LEAF if level == 2 else 0))
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
            hit = _lookup(domain, va)
            if hit is None:
                break
            lo, _, size, slot = hit
            if WARN(lo != va or lo + size > end, f"mock: partial unmap at iova {va:#x}"):
                break
            write64(slot, 0)
            iommu_iotlb_gather_add_page(domain, gather, lo, size)
            va += size
            done += size
        return done

    def iova_to_phys(self, domain: IommuDomain, iova: int) -> int:
        assert isinstance(domain, MockDomain)
        hit = _lookup(domain, iova)
        return 0 if hit is None else hit[1] + (iova - hit[0])

    def iotlb_sync(self, domain: IommuDomain, gather: IommuIotlbGather) -> None:
        """``intel_iommu_tlb_sync`` in spirit: invalidate the gathered range."""
        assert isinstance(domain, MockDomain)
        domain.iotlb_syncs += 1
        if gather.start <= gather.end:
            _invalidate(domain, gather.start, gather.end)

    def flush_iotlb_all(self, domain: IommuDomain) -> None:
        assert isinstance(domain, MockDomain)
        domain.flush_alls += 1
        _invalidate(domain)

    def free(self, domain: IommuDomain) -> None:
        assert isinstance(domain, MockDomain)
        WARN(bool(domain.mappings()), "mock: domain freed with mappings left")
        _invalidate(domain)  # before the DID can name another domain
        for page in (*domain.table_pages, domain.pgd):
            if page:
                free_page(page)
        domain.table_pages.clear()
        domain.pgd = 0
        if domain.did:
            ida_free(_OPS.dids, domain.did)
            domain.did = 0
        kfree(domain.kmem)
        domain.kmem = 0

    # seed-v3 (patch 1/4 semantics: one extra PASID per device)
    def attach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        info = _info(dev)
        if not _unit(dev).max_pasids:
            raise ENODEV("no PASID support")
        if info.seed_pasid:
            if info.seed_pasid == pasid:
                return
            WARN(True, "mock: device already has a DMA PASID")
            raise EBUSY("one DMA PASID per device")
        write64(_pasid_slot(dev, pasid), domain_entry(domain))
        info.seed_pasid = pasid

    def detach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        info = _info(dev)
        WARN(info.seed_pasid != pasid, "mock: detaching a PASID the device does not have")
        _clear_pasid(dev, pasid)
        info.seed_pasid = 0
        _free_pasid_tables(dev)


class MockIdentityOps:
    """The static identity domain: ``attach_dev`` and the PASID ops only; no page
    table, so no map ops (the core never maps a non-paging domain) and no ``free``
    (static domains are never freed)."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        _set_rid_entry(dev, domain_entry(domain))

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        _set_pasid(domain, dev, pasid)

    def attach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        write64(_pasid_slot(dev, pasid), domain_entry(domain))
        _info(dev).seed_pasid = pasid

    def detach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None:
        _clear_pasid(dev, pasid)
        _info(dev).seed_pasid = 0
        _free_pasid_tables(dev)


class MockBlockedOps:
    """The static blocked domain: like the identity domain, no map ops and no ``free``."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None:
        _set_rid_entry(dev, 0)

    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None:
        _clear_pasid(dev, pasid)
        kfree(_info(dev).pasids.pop(pasid, 0))
        _free_pasid_tables(dev)


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
        self.dids = IDA("mock_did")
        IDENTITY_DOMAIN.owner = self
        BLOCKED_DOMAIN.owner = self

    @property
    def units(self) -> list[MockIommuDevice]:
        """The running kernel's registered mock units (the core's list, not ours)."""
        return [u for u in iommu_state().iommus if isinstance(u, MockIommuDevice) and u.ops is self]

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
        ctx = _context_entry(dev, alloc=False)
        if ctx:
            write64(ctx, 0)
            write64(ctx + 8, 0)
        for table in info.pasid_tables.values():
            free_page(table)
        if info.pasid_dir:
            free_pages_exact(info.pasid_dir, info.pasid_dir_size)
        kfree(info.kmem)
        dev.iommu.priv = None  # type: ignore[union-attr]

    def device_group(self, dev: Device) -> IommuGroup:
        return pci_device_group(dev)

    def domain_alloc_paging(self, dev: Device) -> IommuDomain:
        kmem = kzalloc(192)
        if kmem is None:
            raise ENOMEM("mock domain")
        dom = MockDomain(
            pgsize_bitmap=MOCK_PGSIZE_BITMAP,
            geometry=IommuDomainGeometry(0, MOCK_APERTURE_END, True),
            kmem=kmem,
            name="mock-paging",
        )
        try:
            dom.pgd = _zeroed_page()
            dom.did = ida_alloc_range(self.dids, 1, DID_MAX)
        except KernelError:
            if dom.pgd:
                free_page(dom.pgd)
            kfree(kmem)
            raise
        return dom

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


def mock_probe(unit: Any) -> None:
    """Map the unit's registers, give it an empty root table, enable translation."""
    io = ioremap(unit.register_base, unit.register_size)
    root = get_zeroed_page(GFP_KERNEL)
    if root is None:
        iounmap(io)
        raise ENOMEM("mock root table")
    width = io.readq(MOCK_CAP) & MOCK_CAP_PW
    io.writeq(virt_to_phys(root), MOCK_ROOT)
    io.writeq(MOCK_CTRL_EN, MOCK_CTRL)
    iommu = MockIommuDevice(
        name=unit.name, max_pasids=(1 << width) if width else 0, io=io, root=root
    )
    if not _OPS.units:  # the first unit of a kernel: no domain of an earlier one counts
        _OPS.dids = IDA("mock_did")
    iommu_device_register(iommu, _OPS, unit)


def mock_shutdown() -> None:
    for iommu in list(_OPS.units):
        iommu_device_unregister(iommu)
        if iommu.io is not None:
            iommu.io.writeq(0, MOCK_CTRL)
            iounmap(iommu.io)
        for table in iommu.ctx_tables.values():
            free_page(table)
        free_page(iommu.root)


INFO = IommuDriverInfo("mock_iommu", "MOCK", mock_probe, mock_shutdown, "test IOMMU vendor")


@hookimpl
def iommulab_iommu_drivers() -> Sequence[IommuDriverInfo]:
    return [INFO]
