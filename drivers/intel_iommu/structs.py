"""The driver's structures (drivers/iommu/intel/iommu.h, pasid.h): ``struct intel_iommu``,
``struct q_inval``, ``struct dmar_domain``, ``struct device_domain_info``,
``struct dev_pasid_info``, ``struct cache_tag``, ``struct pasid_table``, and the
per-kernel driver state (the C file-scope globals of iommu.c/dmar.c).

Each structure that C allocates with ``kzalloc`` carries the ``kmem`` address of an
allocation of its size, so leaks show in :meth:`kernel.mm.MemoryManager.live` and
fault injection can fail it. Tables the hardware reads (root, context, PASID
directory and tables, page tables, the invalidation ring) live in RAM at kernel
virtual addresses (``int`` fields ending in the C field name).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from attrs import define, field

from drivers.intel_iommu.iommu_regs import QI_LENGTH
from kernel.delay import Completion
from kernel.idr import IDA
from kernel.io import IoMem
from kernel.iommu.generic_pt.iommu_pt import PtIommu
from kernel.iommu.iommu_h import IommuDevice, IommuDomain
from kernel.mmu_notifier import MmuNotifier
from kernel.pci import PciDev
from kernel.printk import RateLimit

if TYPE_CHECKING:
    from drivers.intel_iommu.cache import QiBatch


class DrhdUnit(Protocol):
    """What the driver reads from a firmware DMAR DRHD entry (the kernel's
    ``IommuUnitInfo``): register base, segment, and the device scope."""

    @property
    def name(self) -> str: ...
    @property
    def register_base(self) -> int: ...
    @property
    def register_size(self) -> int: ...
    @property
    def segment(self) -> int: ...
    @property
    def include_pci_all(self) -> bool: ...
    @property
    def device_scope(self) -> Sequence[Any]: ...
    def covers(self, addr: Any) -> bool: ...


PASID_MAX = 0x100000
"""``PASID_MAX``: 20-bit PASIDs."""

VTD_FLAG_TRANS_PRE_ENABLED = 1 << 0
VTD_FLAG_IRQ_REMAP_PRE_ENABLED = 1 << 1
VTD_FLAG_SVM_CAPABLE = 1 << 2

CACHE_TAG_IOTLB = 0
CACHE_TAG_DEVTLB = 1
CACHE_TAG_NESTING_IOTLB = 2
"""On a nesting parent: the IOTLB of a nested domain built on it (nested DID)."""
CACHE_TAG_NESTING_DEVTLB = 3

FlushContext = Callable[["IntelIommu", int, int, int, int], None]
"""``iommu->flush.flush_context(iommu, did, source_id, function_mask, type)``."""
FlushIotlb = Callable[["IntelIommu", int, int, int, int], None]
"""``iommu->flush.flush_iotlb(iommu, did, addr, size_order, type)``."""


def _unset_flush(iommu: IntelIommu, a: int, b: int, c: int, d: int) -> None:
    raise AssertionError(f"{iommu.name}: invalidation used before intel_iommu_init_qi")


@define(eq=False)
class QInval:
    """``struct q_inval``: the invalidation ring (``desc``), the status words the wait
    descriptors write (``desc_status``, one 32-bit word per slot) and the free ring."""

    desc: int
    desc_order: int
    desc_status: int
    free_head: int = 0
    free_tail: int = 0
    free_cnt: int = QI_LENGTH
    kmem: int = 0


@define(eq=False)
class IntelIommu(IommuDevice):
    """``struct intel_iommu`` (embeds ``struct iommu_device``)."""

    drhd: DrhdUnit | None = None
    reg: IoMem | None = None
    reg_phys: int = 0
    reg_size: int = 0
    seq_id: int = -1
    cap: int = 0
    ecap: int = 0
    gcmd: int = 0
    agaw: int = 0
    msagaw: int = 0
    segment: int = 0
    flags: int = 0
    sm: bool = False
    """``sm_supported(iommu)``: ``intel_iommu_sm && ecap_smts``, fixed at alloc_iommu."""
    root_entry: int = 0
    qi: QInval | None = None
    flush_context: FlushContext = _unset_flush
    flush_iotlb: FlushIotlb = _unset_flush
    domain_ida: IDA = field(factory=lambda: IDA("dmar_domain_ida"))
    irq: int = 0
    kmem: int = 0
    ir_table: Any = None
    """``iommu->ir_table`` (drivers/intel_iommu/irq_remapping.py ``IrTable``)."""
    ir_domain: Any = None
    """``iommu->ir_domain``: the unit's MSI parent domain."""
    prq: int = 0
    """The page request queue (``PRQ_ORDER`` pages, kernel virtual address)."""
    pr_irq: int = 0
    iopf_queue: Any = None
    """The unit's :class:`kernel.iommu.io_pgfault.IopfQueue` (``dmar<N>-iopfq``)."""
    prq_seq_number: int = 0
    prq_complete: Completion = field(factory=Completion)

    @property
    def regs(self) -> IoMem:
        reg = self.reg
        assert reg is not None, f"{self.name}: registers not mapped"
        return reg


@define(eq=False)
class PasidTable:
    """``struct pasid_table``: the directory (``table``, ``2**order`` pages) and the
    number of PASIDs it can address."""

    table: int
    order: int
    max_pasid: int
    kmem: int = 0


@define(eq=False)
class DeviceDomainInfo:
    """``struct device_domain_info``: the driver's per-device state (``dev_iommu_priv``).

    ``pasid`` is the seed-v3 addition (patch 1/4, "DMA request with PASID"): the one
    extra PASID the DMA API attached for this device.
    """

    dev: PciDev
    iommu: IntelIommu
    bus: int
    devfn: int
    segment: int = 0
    domain: DmarDomain | None = None
    domain_attached: bool = False
    ats_supported: bool = False
    ats_enabled: bool = False
    ats_qdep: int = 0
    pfsid: int = 0
    pasid_supported: int = 0
    pasid_enabled: bool = False
    pasid_table: PasidTable | None = None
    pri_supported: bool = False
    pri_enabled: bool = False
    pasid: int = 0
    kmem: int = 0

    @property
    def sid(self) -> int:
        return (self.bus << 8) | self.devfn


@define(eq=False)
class IommuDomainInfo:
    """``struct iommu_domain_info``: a domain's ID on one unit, refcounted."""

    iommu: IntelIommu
    did: int
    refcnt: int = 1
    kmem: int = 0


@define(eq=False)
class DevPasidInfo:
    """``struct dev_pasid_info``: one (device, PASID) a domain is attached at."""

    dev: PciDev
    pasid: int
    kmem: int = 0


@define(eq=False)
class CacheTag:
    """``struct cache_tag`` (cache.c): what to invalidate when the domain's mappings
    change, one per (unit or device, DID, PASID) and type, refcounted by ``users``."""

    type: int
    iommu: IntelIommu
    domain_id: int
    pasid: int
    dev: PciDev | None
    users: int = 1
    kmem: int = 0


@define(eq=False)
class DmarDomain(IommuDomain):
    """``struct dmar_domain`` (embeds ``struct iommu_domain``).

    ``seed_v3`` is set at allocation when the kernel runs ``iommu.pasid_api=seed-v3``:
    the domain then flushes the way the v3 tree's ``iommu_flush_iotlb_psi`` did
    (RID2PASID and ``domain.pasid`` only) instead of walking its cache tags.
    """

    use_first_level: bool = False
    gaw: int = 0
    agaw: int = 0
    max_addr: int = 0
    pgd: int = 0
    iommu_superpage: int = 0
    iommu_coherency: bool = True
    iotlb_sync_map: bool = False
    has_mappings: bool = False
    devices: list[DeviceDomainInfo] = field(factory=list)
    dev_pasids: list[DevPasidInfo] = field(factory=list)
    cache_tags: list[CacheTag] = field(factory=list)
    iommu_array: dict[int, IommuDomainInfo] = field(factory=dict)
    deferred_free: list[int] = field(factory=list)
    """Table pages an unmap with a deferred flush (flush queue) emptied."""
    seed_v3: bool = False
    dirty_tracking: bool = False
    """Second-stage A/D tracking is on (``dmar_domain->dirty_tracking``): every PASID
    entry pointing at the domain has SSADE set."""
    kmem: int = 0
    pt: PtIommu | None = None
    """The generic page table (``fspt``/``sspt``) under ``iommu.pt=generic``; None for
    6.12's own tables."""
    notifier: MmuNotifier | None = None
    """An SVA domain's subscription to its mm (``dmar_domain->notifier``)."""
    nested_parent: bool = False
    """Allocated with IOMMU_HWPT_ALLOC_NEST_PARENT: may be the second stage of
    nested domains."""
    s1_domains: list[DmarDomain] = field(factory=list)
    """A nesting parent's nested domains (``s1_domains``)."""
    s2_domain: DmarDomain | None = None
    """A nested domain's parent (``s2_domain``)."""
    s1_cfg: Any = None
    """A nested domain's ``struct iommu_hwpt_vtd_s1`` (user space's stage-1 table)."""
    qi_batch: QiBatch | None = None
    """``domain->qi_batch``: the invalidation batch its flushes fill (made on first use)."""


def domain_id_iommu(domain: DmarDomain, iommu: IntelIommu) -> int:
    """``domain_id_iommu``: the domain's ID on ``iommu`` (it must be attached there)."""
    return domain.iommu_array[iommu.seq_id].did


@define(eq=False)
class DmarState:
    """The driver's globals for one booted kernel (``dmar_drhd_units``,
    ``intel_iommu_sm``, ``dmar_disabled``, ``intel_pasid_max_id`` ...)."""

    units: list[IntelIommu] = field(factory=list)
    dmar_disabled: bool = False
    intel_iommu_sm: bool = True
    superpage: bool = True
    igfx_off: bool = False
    pasid_max_id: int = PASID_MAX
    fault_rs: RateLimit = field(factory=RateLimit)
    ops: Any = None
    """The ``intel_iommu_ops`` instance of this kernel (:class:`IntelIommuOps`)."""
    announced: bool = False
    strict_forced: bool = False
    dmar_units: Any = None
    table_parsed: bool = False
    """``dmar_table_init`` succeeded (the DMAR table's header was valid)."""
    unit_errors: dict[str, Any] = field(factory=dict)
    """DRHD name -> the error ``dmar_parse_one_drhd`` met (the unit is then not set up)."""
    missing_printed: bool = False
    """RMRR/ATSR/SATC units (:class:`drivers.intel_iommu.dmar_units.DmarUnits`)."""
