"""The IOMMU API's types, constants and vendor protocols (include/linux/iommu.h).

Vendor interface
================

A vendor driver (``drivers/intel_iommu``, ``drivers/arm_smmu_v3``, the mock in
``tests/kernel/iommu``) contributes an :class:`kernel.module.IommuDriverInfo` whose
``probe(unit)`` brings a firmware unit up and calls
:func:`kernel.iommu.iommu_device.iommu_device_register`
with an :class:`IommuDevice` and an object implementing :class:`IommuOps`.  The
core then probes every PCI device the unit's firmware scope covers.

``struct iommu_ops`` → :class:`IommuOps` (required members)::

    probe_device(dev) -> IommuDevice          # raise ENODEV if not ours
    release_device(dev) -> None
    device_group(dev) -> IommuGroup           # use pci_device_group / generic_device_group
    domain_alloc_paging(dev) -> IommuDomain   # UNMANAGED/DMA/DMA_FQ page tables
    def_domain_type(dev) -> int               # 0: no preference
    capable(dev, cap) -> bool                 # IOMMU_CAP_*
    identity_domain: IommuDomain | None       # static domains (type/ops filled)
    blocked_domain: IommuDomain | None
    default_domain_ops: IommuPagingDomainOps  # the ops of domain_alloc_paging's domains
    pgsize_bitmap: int

Optional ``iommu_ops`` members (a NULL pointer in C; here the method is simply
absent or None): ``probe_finalize(dev)``, ``domain_alloc_sva(dev, mm) -> IommuDomain``.
The core tests an optional op the way C tests the pointer, on each call, with one
attribute lookup (:func:`has_optional_op`); the ``Supports*`` protocols below document the
signatures for typing. (``isinstance`` against a runtime-checkable protocol gives the
same answer but rebuilds the protocol's member list on every check, ~10 us.)

``struct iommu_domain_ops`` is split by what a domain can do, as the C members
are all optional pointers and each domain type fills only its own.  Every domain's
ops (identity, blocked, SVA) → :class:`IommuDomainOps` (required)::

    attach_dev(domain, dev, old) -> None

A paging domain's ops (``default_domain_ops``, UNMANAGED/DMA/DMA_FQ) →
:class:`IommuPagingDomainOps`, which adds (required)::

    map_pages(domain, iova, paddr, pgsize, pgcount, prot, gfp) -> int   # bytes mapped
    unmap_pages(domain, iova, pgsize, pgcount, gather) -> int           # bytes unmapped
    iova_to_phys(domain, iova) -> int                                   # 0 if unmapped

Identity and blocked domains have no page table and provide no map ops: the core
never maps a non-paging domain (``iommu_map`` raises EINVAL, ``iommu_unmap``
returns 0, ``iommu_iova_to_phys`` returns ``iova`` for identity and 0 for blocked,
and 0 for any other domain whose ops lack ``iova_to_phys``, such as SVA).

Optional on any domain: ``free(domain)`` (static identity/blocked domains are never
freed; an SVA domain frees its bookkeeping here), ``set_dev_pasid(domain, dev,
pasid, old)`` (upstream PASID attach; the blocked domain's one tears the PASID
down), ``iotlb_sync_map(domain, iova, size)``, ``flush_iotlb_all(domain)``,
``iotlb_sync(domain, gather)``, and the seed-v3 pair ``attach_dev_pasid(domain,
dev, pasid)`` / ``detach_dev_pasid(domain, dev, pasid)``.

Errors are raised as :class:`kernel.errno.KernelError` where C returns ``-errno``.
``map_pages`` returns the bytes it mapped (C's ``*mapped``); fewer than asked means
it hit an error (C's non-zero return with a partial ``*mapped``): the core then
unmaps everything this ``iommu_map`` mapped and raises. It may also raise when
nothing of the call was mapped.  ``unmap_pages`` returns 0 when nothing is mapped at ``iova``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, cast, runtime_checkable

from attrs import define, field

from hw.bus import IommuUnitInfo
from kernel.device import Device

ULONG_MAX = (1 << 64) - 1
ioasid_t = int

IOMMU_NO_PASID = 0
IOMMU_FIRST_GLOBAL_PASID = 1
IOMMU_PASID_INVALID = 0xFFFF_FFFF

IOMMU_READ = 1 << 0
IOMMU_WRITE = 1 << 1
IOMMU_CACHE = 1 << 2
IOMMU_NOEXEC = 1 << 3
IOMMU_MMIO = 1 << 4
IOMMU_PRIV = 1 << 5

__IOMMU_DOMAIN_PAGING = 1 << 0
__IOMMU_DOMAIN_DMA_API = 1 << 1
__IOMMU_DOMAIN_PT = 1 << 2
__IOMMU_DOMAIN_DMA_FQ = 1 << 3
__IOMMU_DOMAIN_SVA = 1 << 4
__IOMMU_DOMAIN_NESTED = 1 << 6

IOMMU_DOMAIN_BLOCKED = 0
IOMMU_DOMAIN_IDENTITY = __IOMMU_DOMAIN_PT
IOMMU_DOMAIN_UNMANAGED = __IOMMU_DOMAIN_PAGING
IOMMU_DOMAIN_DMA = __IOMMU_DOMAIN_PAGING | __IOMMU_DOMAIN_DMA_API
IOMMU_DOMAIN_DMA_FQ = __IOMMU_DOMAIN_PAGING | __IOMMU_DOMAIN_DMA_API | __IOMMU_DOMAIN_DMA_FQ
IOMMU_DOMAIN_SVA = __IOMMU_DOMAIN_SVA
IOMMU_DOMAIN_NESTED = __IOMMU_DOMAIN_NESTED
"""A user stage-1 domain over a nesting parent (iommufd's nested HWPTs)."""

DOMAIN_TYPES = (
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_DOMAIN_UNMANAGED,
    IOMMU_DOMAIN_DMA,
    IOMMU_DOMAIN_DMA_FQ,
    IOMMU_DOMAIN_SVA,
)

# enum iommu_cap
IOMMU_CAP_CACHE_COHERENCY = 0
IOMMU_CAP_NOEXEC = 1
IOMMU_CAP_PRE_BOOT_PROTECTION = 2
IOMMU_CAP_ENFORCE_CACHE_COHERENCY = 3
IOMMU_CAP_DEFERRED_FLUSH = 4
IOMMU_CAP_DIRTY_TRACKING = 5

# iommu_report_device_fault flags (IOMMU_FAULT_*)
IOMMU_FAULT_READ = 0x0
IOMMU_FAULT_WRITE = 0x1


# --------------------------------------------------------------------------- structures


@define(eq=False)
class IommuDomainGeometry:
    """``struct iommu_domain_geometry``."""

    aperture_start: int = 0
    aperture_end: int = ULONG_MAX
    force_aperture: bool = False


@define(eq=False)
class IommuDomain:
    """``struct iommu_domain``. Vendor drivers subclass it (``dmar_domain`` embeds it).

    ``pasid``/``pasid_users``/``pasid_lock`` are the seed-v3 additions (patch 2/4),
    used only by :func:`kernel.iommu.dma_iommu.iommu_attach_dma_pasid`; the lock is
    the mutex the v3 review asked for.
    """

    type: int = IOMMU_DOMAIN_UNMANAGED
    ops: IommuDomainOps | None = None
    owner: IommuOps | None = None
    pgsize_bitmap: int = 0
    geometry: IommuDomainGeometry = field(factory=IommuDomainGeometry)
    iova_cookie: Any = None
    handler: Callable[[IommuDomain, Device, int, int], int] | None = None
    iopf_handler: Callable[[Any], int] | None = None
    """``domain->iopf_handler``: takes a :class:`kernel.iommu.io_pgfault.IopfGroup`."""
    mm: Any = None
    users: int = 0
    pasid: int = 0
    pasid_users: int = 0
    pasid_lock: threading.Lock = field(factory=threading.Lock)
    name: str = ""
    dirty_ops: Any = None
    """``domain->dirty_ops`` (``struct iommu_dirty_ops``: ``set_dirty_tracking``,
    ``read_and_clear_dirty``), set by a driver for a dirty-tracking domain; see
    :mod:`kernel.iommufd.iova_bitmap`."""

    def __repr__(self) -> str:
        return f"<iommu_domain {self.name or hex(id(self))} type={self.type:#x}>"


@define(eq=False, init=False)
class IommuIotlbGather:
    """``struct iommu_iotlb_gather``: the range an unmap touched, flushed by iotlb_sync.
    (The initializer is written out: one is made per unmap, and attrs' factory call
    for ``freelist`` costs more than a list display.)"""

    start: int
    end: int
    pgsize: int
    freelist: list[Any]
    queued: bool

    def __init__(
        self,
        start: int = ULONG_MAX,
        end: int = 0,
        pgsize: int = 0,
        freelist: list[Any] | None = None,
        queued: bool = False,
    ) -> None:
        self.start = start
        self.end = end
        self.pgsize = pgsize
        self.freelist = [] if freelist is None else freelist
        self.queued = queued


def iommu_iotlb_gather_init(gather: IommuIotlbGather) -> None:
    gather.start = ULONG_MAX
    gather.end = 0
    gather.pgsize = 0
    gather.freelist = []
    gather.queued = False


def iommu_iotlb_gather_add_range(gather: IommuIotlbGather, iova: int, size: int) -> None:
    end = iova + size - 1
    if iova < gather.start:
        gather.start = iova
    if end > gather.end:
        gather.end = end


def iommu_iotlb_gather_add_page(
    domain: IommuDomain, gather: IommuIotlbGather, iova: int, size: int
) -> None:
    """Batch a page into the gather; a discontiguous page or a page-size change
    flushes what was gathered first (``iommu_iotlb_gather_is_disjoint``)."""
    if (gather.pgsize and gather.pgsize != size) or (
        gather.end and (iova + size < gather.start or iova > gather.end + 1)
    ):
        iommu_iotlb_sync(domain, gather)
    gather.pgsize = size
    iommu_iotlb_gather_add_range(gather, iova, size)


@define(eq=False)
class IommuDevice:
    """``struct iommu_device``: one hardware unit as the core knows it."""

    ops: IommuOps | None = None
    fwnode: IommuUnitInfo | None = None
    name: str = ""
    max_pasids: int = 0
    registered: bool = False


@define(eq=False)
class DevIommu:
    """``struct dev_iommu``: the core's per-device IOMMU state (``dev->iommu``)."""

    iommu_dev: IommuDevice | None = None
    max_pasids: int = 0
    priv: Any = None
    pci_32bit_workaround: bool = True
    attach_deferred: bool = False
    require_direct: bool = False
    """A reserved region of type DIRECT covers the device (no blocking domain for it)."""
    kmem: int = 0
    group_kmem: int = 0
    fault_param: Any = None
    """``dev->iommu->fault_param``: a :class:`kernel.iommu.io_pgfault.IommuFaultParam`
    while the device is on an IOPF queue."""


@define(eq=False)
class IommuGroup:
    """``struct iommu_group``."""

    id: int
    devices: list[Device] = field(factory=list)
    default_domain: IommuDomain | None = None
    blocking_domain: IommuDomain | None = None
    domain: IommuDomain | None = None
    owner: object | None = None
    owner_cnt: int = 0
    pasid_array: dict[int, IommuDomain] = field(factory=dict)
    mutex: threading.RLock = field(factory=threading.RLock)
    kmem: int = 0
    refs: int = 1

    def __repr__(self) -> str:
        return f"<iommu_group {self.id}>"


# --------------------------------------------------------------------------- vendor protocols


class IommuDomainOps(Protocol):
    """``struct iommu_domain_ops``: what every domain's ops provide (identity, blocked,
    SVA and paging); see this module's docstring."""

    def attach_dev(self, domain: IommuDomain, dev: Device, old: IommuDomain | None) -> None: ...


class IommuPagingDomainOps(IommuDomainOps, Protocol):
    """The paging domains' ``struct iommu_domain_ops``: :class:`IommuDomainOps` plus
    the map operations (see this module's docstring). The core calls them only on a
    domain whose type has ``__IOMMU_DOMAIN_PAGING`` (``kernel.iommu.iommu_map.__iommu_map``)."""

    def map_pages(
        self,
        domain: IommuDomain,
        iova: int,
        paddr: int,
        pgsize: int,
        pgcount: int,
        prot: int,
        gfp: int,
    ) -> int: ...
    def unmap_pages(
        self, domain: IommuDomain, iova: int, pgsize: int, pgcount: int, gather: IommuIotlbGather
    ) -> int: ...
    def iova_to_phys(self, domain: IommuDomain, iova: int) -> int: ...


@runtime_checkable
class SupportsFree(Protocol):
    def free(self, domain: IommuDomain) -> None: ...


@runtime_checkable
class SupportsSetDevPasid(Protocol):
    def set_dev_pasid(
        self, domain: IommuDomain, dev: Device, pasid: int, old: IommuDomain | None
    ) -> None: ...


@runtime_checkable
class SupportsIotlbSync(Protocol):
    def iotlb_sync(self, domain: IommuDomain, gather: IommuIotlbGather) -> None: ...


@runtime_checkable
class SupportsIotlbSyncMap(Protocol):
    def iotlb_sync_map(self, domain: IommuDomain, iova: int, size: int) -> None: ...


@runtime_checkable
class SupportsFlushIotlbAll(Protocol):
    def flush_iotlb_all(self, domain: IommuDomain) -> None: ...


@runtime_checkable
class SupportsSeedPasid(Protocol):
    """The seed-v3 domain ops (patch 1/4 on Baolu's refactoring v5)."""

    def attach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None: ...
    def detach_dev_pasid(self, domain: IommuDomain, dev: Device, pasid: int) -> None: ...


def has_optional_op(ops: object, name: str) -> bool:
    """Whether ``ops`` provides the optional op ``name`` (C: the pointer is non-NULL).
    Same rule as ``isinstance`` against a runtime-checkable protocol: the attribute
    exists and is not None."""
    return getattr(ops, name, None) is not None


def pasid_ops(domain: IommuDomain) -> SupportsSetDevPasid | None:
    """The domain's ``set_dev_pasid`` op holder, or None (a NULL op in C)."""
    ops = domain.ops
    return cast(SupportsSetDevPasid, ops) if has_optional_op(ops, "set_dev_pasid") else None


def seed_pasid_ops(domain: IommuDomain) -> SupportsSeedPasid | None:
    """The seed-v3 op holder when the domain has both ``attach_dev_pasid`` and
    ``detach_dev_pasid``, else None."""
    ops = domain.ops
    if has_optional_op(ops, "attach_dev_pasid") and has_optional_op(ops, "detach_dev_pasid"):
        return cast(SupportsSeedPasid, ops)
    return None


def flush_all_ops(domain: IommuDomain) -> SupportsFlushIotlbAll | None:
    ops = domain.ops
    return cast(SupportsFlushIotlbAll, ops) if has_optional_op(ops, "flush_iotlb_all") else None


class IommuOps(Protocol):
    """``struct iommu_ops`` (required members; see this module's docstring)."""

    pgsize_bitmap: int
    identity_domain: IommuDomain | None
    blocked_domain: IommuDomain | None
    default_domain_ops: IommuPagingDomainOps

    def probe_device(self, dev: Device) -> IommuDevice: ...
    def release_device(self, dev: Device) -> None: ...
    def device_group(self, dev: Device) -> IommuGroup: ...
    def domain_alloc_paging(self, dev: Device) -> IommuDomain: ...
    def def_domain_type(self, dev: Device) -> int: ...
    def capable(self, dev: Device, cap: int) -> bool: ...


@runtime_checkable
class SupportsProbeFinalize(Protocol):
    def probe_finalize(self, dev: Device) -> None: ...


@runtime_checkable
class SupportsPageResponse(Protocol):
    """``ops->page_response``: send a page group response to the device."""

    def page_response(self, dev: Device, evt: Any, msg: Any) -> None: ...


@runtime_checkable
class SupportsDevFeature(Protocol):
    """``ops->dev_enable_feat``/``dev_disable_feat`` (removed upstream after 6.14)."""

    def dev_enable_feat(self, dev: Device, feat: int) -> None: ...
    def dev_disable_feat(self, dev: Device, feat: int) -> None: ...


@runtime_checkable
class SupportsDomainAllocSva(Protocol):
    def domain_alloc_sva(self, dev: Device, mm: Any) -> IommuDomain: ...


# --------------------------------------------------------------------------- IOTLB sync
# (static inlines of iommu.h: every caller, the core's unmap and the drivers' gathers, uses them)


def iommu_iotlb_sync(domain: IommuDomain, gather: IommuIotlbGather) -> None:
    """``iommu_iotlb_sync``: the domain's ``iotlb_sync`` op on the gather, then reset it."""
    ops: Any = domain.ops
    try:
        iotlb_sync = ops.iotlb_sync  # has_optional_op, read once per unmap
    except AttributeError:
        iotlb_sync = None
    if iotlb_sync is not None:
        iotlb_sync(domain, gather)
    iommu_iotlb_gather_init(gather)


def iommu_flush_iotlb_all(domain: IommuDomain) -> None:
    """``iommu_flush_iotlb_all``: the domain's ``flush_iotlb_all`` op, if it has one."""
    ops = flush_all_ops(domain)
    if ops is not None:
        ops.flush_iotlb_all(domain)
