"""The SMMUv3 driver's structures (the ``struct``s of
drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h): ``struct arm_smmu_device``,
``struct arm_smmu_strtab_cfg``, ``struct arm_smmu_ctx_desc_cfg``, ``struct
arm_smmu_master``, and the coherent memory the SMMU's own tables and queues live in.

The domain's structures (``struct arm_smmu_domain``, ``arm_smmu_master_domain``,
``arm_smmu_attach_state``) are in :mod:`drivers.arm_smmu_v3.domain`, next to the
flush operations a domain carries; register and table field definitions are in
:mod:`drivers.arm_smmu_v3.registers`.

Differences from Linux: the SMMU has no ``struct device`` here (it prints as
``arm-smmu-v3 <unit>``) and allocates its tables from the page allocator, naturally
aligned, where Linux uses ``dmam_alloc_coherent``.
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import define, field

from drivers.arm_smmu_v3 import registers as r
from drivers.arm_smmu_v3.cmdq import ArmSmmuEvent, ArmSmmuLlQueue, ArmSmmuQueue
from kernel.device import Device
from kernel.errno import ENODEV
from kernel.idr import IDA
from kernel.io import IoMem
from kernel.iommu.iommu_h import IommuDevice
from kernel.mm import (
    __GFP_ZERO,
    GFP_KERNEL,
    PAGE_SIZE,
    __get_free_pages,
    free_pages,
    get_order,
    virt_to_phys,
)
from kernel.pci import PciDev

# =========================================================================== structures


class IortSmmuNode(Protocol):
    """What the driver reads from the firmware's IORT SMMUv3 node (the kernel's
    ``IommuUnitInfo``, which drivers do not name)."""

    @property
    def name(self) -> str: ...
    @property
    def register_base(self) -> int: ...
    @property
    def register_size(self) -> int: ...
    @property
    def include_pci_all(self) -> bool: ...
    def covers(self, addr: Any) -> bool: ...


@define(eq=False)
class ArmSmmuStrtabCfg:
    """``struct arm_smmu_strtab_cfg``: a linear table or an L1 table with lazy L2s."""

    two_level: bool = False
    base: int = 0
    base_dma: int = 0
    num_ents: int = 0
    """STEs of a linear table, or L1 descriptors of a 2-level one."""
    l2: dict[int, int] = field(factory=dict)
    """L1 index -> kernel address of its L2 table of STRTAB_NUM_L2_STES STEs."""
    strtab_base: int = 0
    strtab_base_cfg: int = 0


def _placeholder_queue() -> ArmSmmuQueue:
    return ArmSmmuQueue(ArmSmmuLlQueue(0), 0, 0, 0, 2, 0, 0)


@define(eq=False)
class ArmSmmuDevice(IommuDevice):
    """``struct arm_smmu_device`` (it embeds ``struct iommu_device``)."""

    base: IoMem = field(factory=lambda: IoMem(0, 0))
    features: int = 0
    msipoll: bool = False
    """``ARM_SMMU_OPT_MSIPOLL``: CMD_SYNC completion by MSI write-back."""
    ias: int = 0
    oas: int = 0
    asid_bits: int = 0
    vmid_bits: int = 0
    vmid_map: IDA = field(factory=lambda: IDA("arm_smmu_vmid"))
    """``smmu->vmid_map``: the VMIDs of stage-2 domains (1 .. 2^vmid_bits - 1)."""
    sid_bits: int = 0
    ssid_bits: int = 0
    pgsize_bitmap: int = 0
    cmdq: ArmSmmuQueue = field(factory=_placeholder_queue)
    evtq: ArmSmmuQueue = field(factory=_placeholder_queue)
    priq: ArmSmmuQueue = field(factory=_placeholder_queue)
    strtab_cfg: ArmSmmuStrtabCfg = field(factory=ArmSmmuStrtabCfg)
    streams: dict[int, ArmSmmuMaster] = field(factory=dict)
    """StreamID -> master (Linux's ``smmu->streams`` rb-tree)."""
    evtq_irq: int = 0
    gerr_irq: int = 0
    priq_irq: int = 0
    events: list[ArmSmmuEvent] = field(factory=list)
    """Every event record the event thread decoded (for tests and dumps)."""
    cmds_issued: int = 0
    ppr_seen: int = 0
    """Page requests ``arm_smmu_handle_ppr`` reported (and, when last, denied)."""
    syncs_issued: int = 0
    cmdq_errors_skipped: int = 0
    coherent_allocs: dict[int, int] = field(factory=dict)
    """Kernel address -> order of the table/queue memory this SMMU owns."""
    kmem: int = 0

    def dev_prefix(self) -> str:
        return f"arm-smmu-v3 {self.name}"


@define(eq=False)
class ArmSmmuCdTable:
    """``struct arm_smmu_ctx_desc_cfg``: a linear CD table or an L1CD table with
    1024-CD leaves allocated on first use."""

    cdtab: int = 0
    cdtab_dma: int = 0
    s1fmt: int = r.STRTAB_STE_0_S1FMT_LINEAR
    s1cdmax: int = 0
    num_ents: int = 0
    """CDs of a linear table, or L1 descriptors of a 2-level one."""
    l2ptrs: list[int] = field(factory=list)
    l2ptrs_kmem: int = 0
    used_ssids: int = 0
    in_ste: bool = False


@define(eq=False)
class ArmSmmuMaster:
    """``struct arm_smmu_master``."""

    smmu: ArmSmmuDevice
    dev: PciDev
    sids: list[int] = field(factory=list)
    ssid_bits: int = 0
    cd_table: ArmSmmuCdTable = field(factory=ArmSmmuCdTable)
    kmem: int = 0
    streams_kmem: int = 0


def dev_iommu_priv_get(dev: Device) -> ArmSmmuMaster:
    """``dev_iommu_priv_get``: the master the driver attached to ``dev`` at probe."""
    master = dev.iommu.priv if dev.iommu is not None else None
    if not isinstance(master, ArmSmmuMaster):
        raise ENODEV(f"{dev.init_name}: not an arm-smmu-v3 master")
    return master


# =========================================================================== memory


def arm_smmu_alloc_coherent(smmu: ArmSmmuDevice, size: int) -> tuple[int, int] | None:
    """``dmam_alloc_coherent`` for the SMMU's own structures: zeroed, naturally
    aligned to the power-of-two size (at least a page). (vaddr, dma) or None."""
    order = get_order(max(size, PAGE_SIZE))
    vaddr = __get_free_pages(GFP_KERNEL | __GFP_ZERO, order)
    if vaddr is None:
        return None
    smmu.coherent_allocs[vaddr] = order
    return vaddr, virt_to_phys(vaddr)


def arm_smmu_free_coherent(smmu: ArmSmmuDevice, vaddr: int) -> None:
    """Free what :func:`arm_smmu_alloc_coherent` returned (``dmam_free_coherent``)."""
    order = smmu.coherent_allocs.pop(vaddr, None)
    if order is not None:
        free_pages(vaddr, order)
