"""The generic IOMMU core (drivers/iommu/iommu.c): groups, domains, attach, DMA
ownership, default domains, device probe/release, map/unmap, and the subsystem's
per-kernel state and ``iommu.*`` parameters.

The types, constants and vendor protocols it works on are in :mod:`kernel.iommu.iommu_h`
(include/linux/iommu.h, with the vendor interface documented there); unit
registration and the firmware-unit to driver binding in :mod:`kernel.iommu.iommu_device`;
device fault reporting in :mod:`kernel.iommu.io_pgfault`; PASID attach in
:mod:`kernel.iommu.pasid`.

Differences from Linux: one thread, so ``group->mutex`` is a re-entrant lock that
documents the serialisation rather than enforcing it; the device/fwnode match is
by the firmware unit (:class:`hw.bus.IommuUnitInfo`) that covers the PCI address;
PCI grouping is simplified to "functions of one slot share a group unless each is
ACS-isolated (or a root-complex integrated endpoint)".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

from attrs import define, field

from hw.bus import IommuUnitInfo
from kernel.bug import WARN, WARN_ON
from kernel.context import KernelSlot
from kernel.device import BusType, Device, dev_name
from kernel.errno import EBUSY, EINVAL, ENODEV, ENOMEM, EOPNOTSUPP, EPERM, KernelError
from kernel.idr import IDA, ida_alloc, ida_free
from kernel.init import initcall
from kernel.iommu.iommu_h import (
    __IOMMU_DOMAIN_DMA_API,
    __IOMMU_DOMAIN_PAGING,
    DOMAIN_TYPES,
    IOMMU_CAP_DEFERRED_FLUSH,
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_DMA,
    IOMMU_DOMAIN_DMA_FQ,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_DOMAIN_NESTED,
    IOMMU_DOMAIN_SVA,
    IOMMU_DOMAIN_UNMANAGED,
    DevIommu,
    IommuDevice,
    IommuDomain,
    IommuGroup,
    IommuOps,
    SupportsDevFeature,
    SupportsFree,
    SupportsProbeFinalize,
    has_optional_op,
)
from kernel.iommu.iommu_resv import (
    iommu_check_require_direct,
    iommu_create_device_direct_mappings,
)
from kernel.mm import GFP_KERNEL, kfree, kzalloc
from kernel.module import InitLevel
from kernel.params import Param, parse_bool, parse_str
from kernel.pci import (
    PCI_ACS_CR,
    PCI_ACS_RR,
    PCI_ACS_SV,
    PCI_ACS_UF,
    PciDev,
    pci_acs_enabled,
    pci_get_devices,
    pci_max_pasids,
)
from kernel.printk import dev_info, dev_warn, pr_info
from kernel.trace import (
    trace_add_device_to_group,
    trace_attach_device_to_domain,
    trace_remove_device_from_group,
)

if TYPE_CHECKING:
    from kernel.boot import Kernel

REQ_ACS_FLAGS = PCI_ACS_SV | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF

PASID_API_UPSTREAM = "upstream"
PASID_API_SEED_V3 = "seed-v3"
PASID_API_KERNEL_SVA = "kernel-sva"
PASID_APIS = (PASID_API_UPSTREAM, PASID_API_SEED_V3, PASID_API_KERNEL_SVA)
"""``iommu.pasid_api=`` values: today's API, the 2022 series, and the 5.15-era
supervisor SVA the series replaced (kernel/iommu/kernel_sva.py)."""

_TYPE_NAMES = {
    IOMMU_DOMAIN_BLOCKED: "Blocked",
    IOMMU_DOMAIN_IDENTITY: "Passthrough",
    IOMMU_DOMAIN_UNMANAGED: "Unmanaged",
    IOMMU_DOMAIN_DMA: "Translated",
    IOMMU_DOMAIN_DMA_FQ: "Translated",
    IOMMU_DOMAIN_SVA: "SVA",
}


def _type_ok(t: int) -> bool:
    return t in DOMAIN_TYPES


def _free_ops(domain: IommuDomain) -> SupportsFree | None:
    ops = domain.ops
    return cast(SupportsFree, ops) if has_optional_op(ops, "free") else None


# --------------------------------------------------------------------------- per-kernel state


@define(eq=False)
class IommuState:
    """The core's globals (``iommu_device_list``, the group IDA, the global PASID IDA)."""

    iommus: list[IommuDevice] = field(factory=list)
    group_ida: IDA = field(factory=lambda: IDA("iommu_group"))
    global_pasid_ida: IDA = field(factory=lambda: IDA("iommu_global_pasid"))
    def_domain_type: int = IOMMU_DOMAIN_DMA
    strict: bool = True
    pasid_api: str = PASID_API_UPSTREAM
    bound: dict[str, str] = field(factory=dict)
    """Firmware unit name -> driver name."""
    bind_errors: list[str] = field(factory=list)
    notifier: Callable[[int, Device], None] | None = None
    drivers_up: list[Callable[[], None]] = field(factory=list)
    faults: list[tuple[str, int, int]] = field(factory=list)


_STATE: KernelSlot[IommuState] = KernelSlot("iommu", IommuState)


def iommu_state() -> IommuState:
    """The current kernel's IOMMU core state (``iommu_subsys_init`` makes it; a call
    before that gets the kernel's own empty state, never one shared between kernels)."""
    return _STATE.get()


# --------------------------------------------------------------------------- device -> unit


def _fwnode_for(dev: Device) -> IommuUnitInfo | None:
    """The firmware unit whose scope covers ``dev`` (explicit scope before INCLUDE_PCI_ALL)."""
    if not isinstance(dev, PciDev):
        return None
    from kernel.platform import platform

    units = sorted(platform().firmware.iommus, key=lambda u: u.include_pci_all)
    return next((u for u in units if u.covers(dev.addr)), None)


def _iommu_for(dev: Device) -> IommuDevice | None:
    fw = _fwnode_for(dev)
    if fw is None:
        return None
    return next((i for i in iommu_state().iommus if i.fwnode is fw), None)


def dev_iommu_ops(dev: Device) -> IommuOps:
    """``dev_iommu_ops``: the ops of the unit ``dev`` was probed against."""
    param = dev.iommu
    if param is None or param.iommu_dev is None or param.iommu_dev.ops is None:
        raise ENODEV(f"{dev_name(dev)}: not behind an IOMMU")
    ops: IommuOps = param.iommu_dev.ops
    return ops


def device_iommu_mapped(dev: Device) -> bool:
    return dev.iommu_group is not None


IOMMU_DEV_FEAT_SVA = 0
IOMMU_DEV_FEAT_IOPF = 1
"""``enum iommu_dev_features`` (6.12; removed upstream in 6.15)."""


def iommu_dev_enable_feature(dev: Device, feat: int) -> None:
    """``iommu_dev_enable_feature``: the driver's ``dev_enable_feat``; ENODEV without
    an IOMMU or the op (raises the driver's errno on failure)."""
    if dev.iommu is not None and dev.iommu.iommu_dev is not None:
        ops = dev_iommu_ops(dev)
        if has_optional_op(ops, "dev_enable_feat"):
            cast(SupportsDevFeature, ops).dev_enable_feat(dev, feat)
            return
    raise ENODEV(f"{dev_name(dev)}: no IOMMU device feature {feat}")


def iommu_dev_disable_feature(dev: Device, feat: int) -> None:
    """``iommu_dev_disable_feature``."""
    if dev.iommu is not None and dev.iommu.iommu_dev is not None:
        ops = dev_iommu_ops(dev)
        if has_optional_op(ops, "dev_disable_feat"):
            cast(SupportsDevFeature, ops).dev_disable_feat(dev, feat)
            return
    raise ENODEV(f"{dev_name(dev)}: no IOMMU device feature {feat}")


# --------------------------------------------------------------------------- groups


def iommu_group_alloc() -> IommuGroup:
    """``iommu_group_alloc``."""
    st = iommu_state()
    kmem = kzalloc(256, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("iommu_group_alloc")
    try:
        gid = ida_alloc(st.group_ida)
    except KernelError:
        kfree(kmem)
        raise
    return IommuGroup(gid, kmem=kmem)


def iommu_group_get(dev: Device) -> IommuGroup | None:
    """``iommu_group_get`` (a reference in C; groups here live while they have devices)."""
    group: IommuGroup | None = dev.iommu_group
    return group


def iommu_group_id(group: IommuGroup) -> int:
    return group.id


def generic_device_group(dev: Device) -> IommuGroup:
    """``generic_device_group``: one group per device."""
    return iommu_group_alloc()


def pci_device_group(dev: Device) -> IommuGroup:
    """``pci_device_group``: functions of one slot share a group unless ACS isolates them."""
    if not isinstance(dev, PciDev):
        raise EINVAL(f"{dev_name(dev)}: pci_device_group on a non-PCI device")
    if not pci_acs_enabled(dev, REQ_ACS_FLAGS):
        for other in pci_get_devices():
            if (
                other is not dev
                and other.addr.segment == dev.addr.segment
                and other.addr.bus == dev.addr.bus
                and other.addr.dev == dev.addr.dev
                and other.iommu_group is not None
                and not pci_acs_enabled(other, REQ_ACS_FLAGS)
            ):
                group: IommuGroup = other.iommu_group
                return group
    return iommu_group_alloc()


def _group_free(group: IommuGroup) -> None:
    for dom in (group.default_domain, group.blocking_domain):
        if dom is not None:
            iommu_domain_free(dom)
    group.default_domain = group.blocking_domain = group.domain = None
    ida_free(iommu_state().group_ida, group.id)
    kfree(group.kmem)
    group.kmem = 0


def _group_devices_with_pasid(group: IommuGroup) -> Iterator[Device]:
    for d in group.devices:
        if d.iommu is not None and d.iommu.max_pasids > 0:
            yield d


# --------------------------------------------------------------------------- domains


def __iommu_domain_alloc(ops: IommuOps, dev: Device, type: int) -> IommuDomain:
    """``__iommu_domain_alloc``: identity/blocked are the driver's static domains;
    paging types come from ``domain_alloc_paging``; DMA types get a dma-iommu cookie."""
    if not _type_ok(type):
        raise EINVAL(f"unknown IOMMU domain type {type:#x}")
    if type == IOMMU_DOMAIN_IDENTITY:
        if ops.identity_domain is None:
            raise EOPNOTSUPP("driver has no identity domain")
        return ops.identity_domain
    if type == IOMMU_DOMAIN_BLOCKED:
        if ops.blocked_domain is not None:
            return ops.blocked_domain
        dom = ops.domain_alloc_paging(dev)
        _domain_init(dom, ops, IOMMU_DOMAIN_UNMANAGED)
        return dom
    if type == IOMMU_DOMAIN_SVA:
        raise EINVAL("SVA domains are allocated by iommu_sva_domain_alloc")
    dom = ops.domain_alloc_paging(dev)
    _domain_init(dom, ops, type)
    if type & __IOMMU_DOMAIN_DMA_API:
        from kernel.iommu.dma_iommu import iommu_dma_init_domain, iommu_get_dma_cookie

        try:
            iommu_get_dma_cookie(dom)
            iommu_dma_init_domain(dom, dev)
        except KernelError:
            iommu_domain_free(dom)
            raise
    return dom


def _domain_init(dom: IommuDomain, ops: IommuOps, type: int) -> None:
    dom.type = type
    dom.owner = ops
    if not dom.pgsize_bitmap:
        dom.pgsize_bitmap = ops.pgsize_bitmap
    if dom.ops is None:
        dom.ops = ops.default_domain_ops


def iommu_paging_domain_alloc(dev: Device) -> IommuDomain:
    """``iommu_paging_domain_alloc``: an UNMANAGED paging domain for ``dev``'s IOMMU."""
    return __iommu_domain_alloc(dev_iommu_ops(dev), dev, IOMMU_DOMAIN_UNMANAGED)


def iommu_domain_alloc(bus: BusType) -> IommuDomain:
    """``iommu_domain_alloc(bus)`` (legacy): an UNMANAGED domain from the first
    device on ``bus`` that sits behind an IOMMU."""
    for dev in bus.devices:
        if dev.iommu is not None:
            return iommu_paging_domain_alloc(dev)
    raise ENODEV(f"no IOMMU behind bus {bus.name}")


def iommu_domain_free(domain: IommuDomain) -> None:
    """``iommu_domain_free``: static identity/blocked domains are never freed."""
    owner = domain.owner
    if owner is not None and domain in (owner.identity_domain, owner.blocked_domain):
        return
    if domain.type == IOMMU_DOMAIN_SVA and domain.mm is not None:
        domain.mm = None
    if domain.iova_cookie is not None:
        from kernel.iommu.dma_iommu import iommu_put_dma_cookie

        iommu_put_dma_cookie(domain)
    ops = _free_ops(domain)
    if ops is not None:
        ops.free(domain)


def iommu_is_dma_domain(domain: IommuDomain) -> bool:
    return bool(domain.type & __IOMMU_DOMAIN_DMA_API)


def iommu_set_fault_handler(
    domain: IommuDomain, handler: Callable[[IommuDomain, Device, int, int], int] | None
) -> None:
    """``iommu_set_fault_handler`` (the token is the closure)."""
    domain.handler = handler


def iommu_get_domain_for_dev(dev: Device) -> IommuDomain | None:
    """``iommu_get_domain_for_dev``: the group's current domain."""
    group: IommuGroup | None = dev.iommu_group
    return None if group is None else group.domain


def iommu_get_dma_domain(dev: Device) -> IommuDomain | None:
    """``iommu_get_dma_domain``: the default domain, used by dma-iommu."""
    group: IommuGroup | None = dev.iommu_group
    return None if group is None else group.default_domain


# --------------------------------------------------------------------------- attach


def __iommu_device_set_domain(
    group: IommuGroup, dev: Device, new: IommuDomain, old: IommuDomain | None
) -> None:
    iommu_check_require_direct(group, dev, new)
    if new.owner is not None and new.owner is not dev_iommu_ops(dev):
        raise EINVAL(f"{dev_name(dev)}: domain belongs to another IOMMU driver")
    assert new.ops is not None  # every allocator sets the domain's ops
    new.ops.attach_dev(new, dev, old)
    if trace_attach_device_to_domain.enabled:
        trace_attach_device_to_domain(device=dev_name(dev))


def __iommu_group_set_domain(group: IommuGroup, new: IommuDomain) -> None:
    """Attach every device of the group; on failure revert the ones already moved."""
    old = group.domain
    if old is new:
        return
    done: list[Device] = []
    for dev in group.devices:
        try:
            __iommu_device_set_domain(group, dev, new, old)
        except KernelError:
            # old is None only for the first device's default domain at probe.
            if old is not None:
                for d in reversed(done):
                    try:
                        __iommu_device_set_domain(group, d, old, new)
                    except KernelError:
                        WARN(True, f"iommu: failed to restore domain of {dev_name(d)}")
            raise
        done.append(dev)
    group.domain = new


def iommu_attach_device(domain: IommuDomain, dev: Device) -> None:
    """``iommu_attach_device``: singleton groups only; EBUSY unless the group is on
    its default (or blocking) domain."""
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        raise ENODEV(f"{dev_name(dev)}: no iommu group")
    with group.mutex:
        if len(group.devices) != 1:
            raise EINVAL(f"{dev_name(dev)}: group {group.id} is not a singleton")
        if group.domain not in (None, group.default_domain, group.blocking_domain):
            raise EBUSY(f"{dev_name(dev)}: group already attached to a non-default domain")
        if domain.type == IOMMU_DOMAIN_SVA or not (
            domain.type & __IOMMU_DOMAIN_PAGING or domain.type == IOMMU_DOMAIN_BLOCKED
        ):
            raise EINVAL(f"{dev_name(dev)}: cannot attach a {domain.type:#x} domain to the RID")
        __iommu_group_set_domain(group, domain)


def __iommu_group_set_core_domain(group: IommuGroup) -> None:
    """Back to the blocking domain while a user owns the group, else the default
    domain. Detach and ownership release cannot fail: a driver that refuses is
    WARNed about (the group stays where the unwind left it), as in Linux."""
    target = group.blocking_domain if group.owner is not None else group.default_domain
    assert target is not None  # probe set the default domain; a claim, the blocking one
    try:
        __iommu_group_set_domain(group, target)
    except KernelError:
        WARN(True, "iommu driver failed to attach the default/blocking domain")


def iommu_detach_device(domain: IommuDomain, dev: Device) -> None:
    """``iommu_detach_device``: back to the default (or blocking) domain."""
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        return
    with group.mutex:
        if WARN_ON(domain is not group.domain) or WARN_ON(len(group.devices) != 1):
            return
        __iommu_group_set_core_domain(group)


def iommu_attach_group(domain: IommuDomain, group: IommuGroup) -> None:
    """``iommu_attach_group``: the whole group to ``domain``; EBUSY unless the group
    is on its default or blocking domain, EINVAL for a domain of another driver or
    a type that cannot be attached to the RID."""
    with group.mutex:
        if group.domain not in (None, group.default_domain, group.blocking_domain):
            raise EBUSY(f"group {group.id} already attached to a non-default domain")
        if not group.devices or domain.owner is not dev_iommu_ops(group.devices[0]):
            raise EINVAL(f"domain does not belong to group {group.id}'s IOMMU driver")
        if domain.type == IOMMU_DOMAIN_SVA or not (
            domain.type & __IOMMU_DOMAIN_PAGING
            or domain.type in (IOMMU_DOMAIN_BLOCKED, IOMMU_DOMAIN_NESTED)
        ):
            raise EINVAL(f"cannot attach a {domain.type:#x} domain to group {group.id}")
        __iommu_group_set_domain(group, domain)


def iommu_detach_group(domain: IommuDomain, group: IommuGroup) -> None:
    """``iommu_detach_group``: back to the blocking (owned) or default domain."""
    with group.mutex:
        if WARN_ON(domain is not group.domain):
            return
        __iommu_group_set_core_domain(group)


def iommu_group_replace_domain(group: IommuGroup, new_domain: IommuDomain) -> None:
    """``iommu_group_replace_domain`` (for iommufd): move an owned group from one
    domain to another without passing through the blocking domain; on failure the
    group stays on its old domain."""
    if new_domain.type == IOMMU_DOMAIN_SVA:
        raise EINVAL("cannot replace with an SVA domain")
    with group.mutex:
        if not group.devices or new_domain.owner is not dev_iommu_ops(group.devices[0]):
            raise EINVAL(f"domain does not belong to group {group.id}'s IOMMU driver")
        __iommu_group_set_domain(group, new_domain)


# --------------------------------------------------------------------------- DMA ownership


def __iommu_group_alloc_blocking_domain(group: IommuGroup) -> None:
    if group.blocking_domain is not None:
        return
    dev = group.devices[0]
    group.blocking_domain = __iommu_domain_alloc(dev_iommu_ops(dev), dev, IOMMU_DOMAIN_BLOCKED)


def iommu_group_claim_dma_owner(group: IommuGroup, owner: object) -> None:
    """``iommu_group_claim_dma_owner``: a user (VFIO/iommufd) takes the group over;
    the group moves to the blocking domain."""
    if WARN_ON(owner is None):
        raise EINVAL("no owner")
    with group.mutex:
        if group.owner_cnt:
            raise EPERM(f"group {group.id} is already owned")
        if group.domain not in (None, group.default_domain) or group.pasid_array:
            raise EBUSY(f"group {group.id} is in use")
        __iommu_group_alloc_blocking_domain(group)
        assert group.blocking_domain is not None
        __iommu_group_set_domain(group, group.blocking_domain)
        group.owner = owner
        group.owner_cnt = 1


def iommu_group_release_dma_owner(group: IommuGroup) -> None:
    """``iommu_group_release_dma_owner``: back to the default domain."""
    with group.mutex:
        if WARN_ON(not group.owner_cnt or group.owner is None or group.pasid_array):
            return
        group.owner_cnt = 0
        group.owner = None
        __iommu_group_set_core_domain(group)


def iommu_device_claim_dma_owner(dev: Device, owner: object) -> None:
    """``iommu_device_claim_dma_owner``: as the group call, but a second claim by the
    same owner only counts."""
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        raise ENODEV(f"{dev_name(dev)}: no iommu group")
    with group.mutex:
        if group.owner_cnt:
            if group.owner is not owner:
                raise EPERM(f"group {group.id} owned by someone else")
            group.owner_cnt += 1
            return
    iommu_group_claim_dma_owner(group, owner)


def iommu_device_release_dma_owner(dev: Device) -> None:
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        return
    with group.mutex:
        if group.owner_cnt > 1:
            group.owner_cnt -= 1
            return
    iommu_group_release_dma_owner(group)


def iommu_device_use_default_domain(dev: Device) -> None:
    """``iommu_device_use_default_domain``: a kernel driver binds; refused (EBUSY)
    while a user owns the group or the group is off its default domain."""
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        return
    with group.mutex:
        if group.owner_cnt and group.owner is not None:
            raise EBUSY(f"group {group.id} is owned by a user")
        if group.domain is not group.default_domain and group.owner_cnt == 0:
            raise EBUSY(f"group {group.id} is not on its default domain")
        group.owner_cnt += 1


def iommu_device_unuse_default_domain(dev: Device) -> None:
    group: IommuGroup | None = dev.iommu_group
    if group is None:
        return
    with group.mutex:
        if not WARN_ON(not group.owner_cnt or group.owner is not None):
            group.owner_cnt -= 1


# --------------------------------------------------------------------------- default domains


def iommu_get_def_domain_type(group: IommuGroup, dev: Device) -> int:
    """Driver preference (``def_domain_type``) over the command-line default."""
    ops = dev_iommu_ops(dev)
    want = ops.def_domain_type(dev)
    if want and not _type_ok(want):
        raise EINVAL(f"{dev_name(dev)}: driver asked for unknown domain type {want:#x}")
    return want


def _default_domain_type(group: IommuGroup, dev: Device) -> int:
    st = iommu_state()
    want = iommu_get_def_domain_type(group, dev)
    t = want or st.def_domain_type
    ops = dev_iommu_ops(dev)
    if t == IOMMU_DOMAIN_IDENTITY and ops.identity_domain is None:
        dev_warn(dev, "Device cannot be in identity domain; using a translated domain")
        t = IOMMU_DOMAIN_DMA_FQ if not st.strict else IOMMU_DOMAIN_DMA
    if t == IOMMU_DOMAIN_DMA_FQ and not ops.capable(dev, IOMMU_CAP_DEFERRED_FLUSH):
        t = IOMMU_DOMAIN_DMA
    return t


def iommu_setup_default_domain(group: IommuGroup, dev: Device) -> None:
    """Allocate the group's default domain, install every device's direct (RMRR)
    mappings in it, and attach the group to it. As in 6.12, a direct mapping that
    fails before the attach is retried once after it; unlike 6.12 a second failure
    is only warned about (the group stays attached: nothing to restore at probe)."""
    ops = dev_iommu_ops(dev)
    t = _default_domain_type(group, dev)
    dom = __iommu_domain_alloc(ops, dev, t)
    failed: list[Device] = []
    for gdev in group.devices:
        try:
            iommu_create_device_direct_mappings(dom, gdev)
        except KernelError:
            failed.append(gdev)
            dev_warn(gdev, "IOMMU driver was not able to establish FW requested direct mapping.")
    try:
        __iommu_group_set_domain(group, dom)
    except KernelError:
        iommu_domain_free(dom)
        raise
    for gdev in failed:
        try:
            iommu_create_device_direct_mappings(dom, gdev)
        except KernelError as err:
            dev_warn(gdev, f"direct mapping failed again after attach: {err}")
    group.default_domain = dom


def iommu_default_passthrough() -> bool:
    return iommu_state().def_domain_type == IOMMU_DOMAIN_IDENTITY


# --------------------------------------------------------------------------- probe / release


def dev_iommu_get_max_pasids(dev: Device) -> int:
    """``dev_iommu_get_max_pasids``: min(device PASID width, unit max_pasids)."""
    param: DevIommu = dev.iommu
    assert param.iommu_dev is not None
    unit_max = param.iommu_dev.max_pasids
    if not unit_max:
        return 0
    assert isinstance(dev, PciDev)  # only PCI devices are matched to a unit (_fwnode_for)
    n = pci_max_pasids(dev)
    return min(n, unit_max) if n > 0 else 0


def iommu_probe_device(dev: Device) -> None:
    """``__iommu_probe_device`` + ``iommu_setup_dma_ops``: probe against the unit that
    owns ``dev``, join a group, attach the default domain. ENODEV if no unit owns it.
    Every failure unwinds to the unprobed state."""
    if dev.iommu_group is not None:
        return
    iommu = _iommu_for(dev)
    if iommu is None or iommu.ops is None:
        raise ENODEV(f"{dev_name(dev)}: no IOMMU owns this device")
    ops = iommu.ops
    kmem = kzalloc(128, GFP_KERNEL)
    if kmem is None:
        raise ENOMEM("dev_iommu_get")
    dev.iommu = DevIommu(kmem=kmem)
    try:
        got = ops.probe_device(dev)
    except KernelError:
        _dev_iommu_free(dev)
        raise
    dev.iommu.iommu_dev = got
    dev.iommu.max_pasids = dev_iommu_get_max_pasids(dev)
    try:
        group = ops.device_group(dev)
    except KernelError:
        ops.release_device(dev)
        _dev_iommu_free(dev)
        raise
    fresh = not group.devices
    gdev = kzalloc(64, GFP_KERNEL)
    if gdev is None:
        if fresh:
            _group_free(group)
        ops.release_device(dev)
        _dev_iommu_free(dev)
        raise ENOMEM("iommu_group_add_device")
    with group.mutex:
        group.devices.append(dev)
        dev.iommu_group = group
        try:
            if group.default_domain is None:
                iommu_setup_default_domain(group, dev)
            else:
                assert group.domain is not None  # a group with a default domain is attached
                iommu_create_device_direct_mappings(group.default_domain, dev)
                __iommu_device_set_domain(group, dev, group.domain, None)
        except KernelError:
            group.devices.remove(dev)
            dev.iommu_group = None
            kfree(gdev)
            if not group.devices:
                _group_free(group)
            ops.release_device(dev)
            _dev_iommu_free(dev)
            raise
    dev.iommu.group_kmem = gdev
    if has_optional_op(ops, "probe_finalize"):
        cast(SupportsProbeFinalize, ops).probe_finalize(dev)
    dom = group.default_domain
    dev.dma_iommu = dom is not None and iommu_is_dma_domain(dom)
    if trace_add_device_to_group.enabled:
        trace_add_device_to_group(group_id=group.id, device=dev_name(dev))
    dev_info(dev, f"Adding to iommu group {group.id}")


def _dev_iommu_free(dev: Device) -> None:
    param: DevIommu = dev.iommu
    kfree(param.kmem)
    dev.iommu = None


def iommu_release_device(dev: Device) -> None:
    """``iommu_release_device``: block the device, let the driver release it, leave
    the group (freeing it and its domains when it empties)."""
    from kernel.iommu.pasid import iommu_detach_device_pasid, iommu_remove_dev_pasid

    group: IommuGroup | None = dev.iommu_group
    if group is None:
        return
    ops = dev_iommu_ops(dev)
    with group.mutex:
        for pasid, domain in list(group.pasid_array.items()):
            if len(group.devices) == 1:
                WARN(True, f"iommu: {dev_name(dev)} released with PASID {pasid} attached")
                iommu_detach_device_pasid(domain, dev, pasid)
            elif dev.iommu.max_pasids:
                # The rest of the group keeps the PASID; this device stops using it.
                iommu_remove_dev_pasid(dev, pasid, domain)
        blocked = ops.blocked_domain
        if blocked is not None and group.domain is not blocked:
            assert blocked.ops is not None
            try:
                blocked.ops.attach_dev(blocked, dev, group.domain)
            except KernelError as err:
                WARN(True, f"iommu: blocking {dev_name(dev)} failed: {err}")
        ops.release_device(dev)
        group.devices.remove(dev)
        dev.iommu_group = None
        dev.dma_iommu = False
        kfree(dev.iommu.group_kmem)
        if trace_remove_device_from_group.enabled:
            trace_remove_device_from_group(group_id=group.id, device=dev_name(dev))
        if not group.devices:
            _group_free(group)
    _dev_iommu_free(dev)


# --------------------------------------------------------------------------- subsystem init


def _parse_pasid_api(text: str | None) -> str:
    value = parse_str(text)
    if value not in PASID_APIS:
        raise EINVAL(f"iommu.pasid_api: expected one of {', '.join(PASID_APIS)}, got {value!r}")
    return value


def _iommu_subsys_teardown(k: Kernel) -> None:
    from kernel.init_mm import free_kernel_tables

    free_kernel_tables()
    k.subsys.pop("iommu", None)


@initcall(InitLevel.SUBSYS, "iommu_subsys_init", _iommu_subsys_teardown)
def iommu_subsys_init(k: Kernel) -> None:
    """``iommu_subsys_init``: parameters and the default-domain policy lines."""
    cl = k.cmdline
    strict = cl.register(Param("iommu.strict", True, parse_bool, "synchronous IOTLB invalidation"))
    pt = cl.register(Param("iommu.passthrough", False, parse_bool, "identity default domain"))
    api = cl.register(
        Param("iommu.pasid_api", PASID_API_UPSTREAM, _parse_pasid_api, " | ".join(PASID_APIS))
    )
    st = IommuState()
    st.strict = bool(strict.value)
    st.pasid_api = str(api.value)
    if pt.value:
        st.def_domain_type = IOMMU_DOMAIN_IDENTITY
    else:
        st.def_domain_type = IOMMU_DOMAIN_DMA if st.strict else IOMMU_DOMAIN_DMA_FQ
    k.subsys["iommu"] = st
    how = "(set via kernel command line)" if pt.set_on_cmdline else ""
    pr_info(f"iommu: Default domain type: {_TYPE_NAMES[st.def_domain_type]} {how}".rstrip())
    if st.def_domain_type != IOMMU_DOMAIN_IDENTITY:
        mode = "strict mode" if st.strict else "lazy mode"
        pr_info(f"iommu: DMA domain TLB invalidation policy: {mode}")
    if st.pasid_api != PASID_API_UPSTREAM:
        pr_info(f"iommu: PASID API generation: {st.pasid_api}")
    if st.pasid_api == PASID_API_KERNEL_SVA:
        # Supervisor SVA walks the kernel's own page tables: only then are they built.
        from kernel.init_mm import paging_init_kernel_tables

        paging_init_kernel_tables()
