"""Debug views of the IOMMU core: ``iommulab dump iommu-groups`` and ``dump pasid``.

``iommu-groups`` is what ``/sys/kernel/iommu_groups/*/{type,reserved_regions,devices}``
show, one group per block; ``pasid`` lists the PASIDs attached to each device through the
IOMMU core, for the PASID API generation the kernel booted with (upstream:
``group->pasid_array``; seed-v3: the DMA domain's one PASID and its user count).
Both render the current kernel (:func:`kernel.boot.current_kernel`). Contributed
through the ``iommulab_dump_targets`` hook; the CLI and the pytest plugin register
this module as a plugin (it is part of the kernel core, not of a driver).
"""

from __future__ import annotations

import argparse

from kernel.debugfs import DumpTarget
from kernel.device import dev_name
from kernel.hookspecs import hookimpl
from kernel.iommu.iommu import PASID_API_SEED_V3, iommu_state
from kernel.iommu.iommu_h import (
    IOMMU_DOMAIN_BLOCKED,
    IOMMU_DOMAIN_DMA,
    IOMMU_DOMAIN_DMA_FQ,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_DOMAIN_SVA,
    IOMMU_DOMAIN_UNMANAGED,
    IommuDomain,
    IommuGroup,
)
from kernel.iommu.iommu_resv import iommu_group_show_resv_regions
from kernel.iommu.pasid import iommu_get_domain_for_dev_pasid
from kernel.pci import PciDev, pci_get_devices

SYSFS_TYPE = {
    IOMMU_DOMAIN_BLOCKED: "blocked",
    IOMMU_DOMAIN_IDENTITY: "identity",
    IOMMU_DOMAIN_UNMANAGED: "unmanaged",
    IOMMU_DOMAIN_DMA: "DMA",
    IOMMU_DOMAIN_DMA_FQ: "DMA-FQ",
    IOMMU_DOMAIN_SVA: "SVA",
}
"""``iommu_group_show_type``'s names."""


def domain_label(dom: IommuDomain | None) -> str:
    """A domain as the dumps name it: sysfs type plus the driver's name for it."""
    if dom is None:
        return "none"
    kind = SYSFS_TYPE.get(dom.type, "unknown")
    return f"{kind}({dom.name})" if dom.name else kind


def _groups() -> tuple[list[IommuGroup], list[PciDev]]:
    groups: dict[int, IommuGroup] = {}
    loose: list[PciDev] = []
    for pdev in pci_get_devices():
        group = pdev.iommu_group
        if isinstance(group, IommuGroup):
            groups.setdefault(group.id, group)
        else:
            loose.append(pdev)
    return [groups[i] for i in sorted(groups)], loose


def render_iommu_groups(args: argparse.Namespace) -> str:
    """``/sys/kernel/iommu_groups``: per group its type, current domain and devices."""
    st = iommu_state()
    groups, loose = _groups()
    mode = "strict" if st.strict else "lazy"
    out = [f"iommu_groups: {len(groups)} (default domain {SYSFS_TYPE[st.def_domain_type]}, {mode})"]
    for g in groups:
        kind = "none" if g.default_domain is None else SYSFS_TYPE.get(g.default_domain.type, "?")
        out.append(f"/sys/kernel/iommu_groups/{g.id}/type: {kind}")
        owner = " (claimed for user DMA)" if g.owner is not None else ""
        out.append(f"  domain: {domain_label(g.domain)}{owner}")
        out.append(f"/sys/kernel/iommu_groups/{g.id}/reserved_regions:")
        out.extend(f"  {line}" for line in iommu_group_show_resv_regions(g).splitlines())
        for dev in g.devices:
            drv = dev.driver.name if dev.driver is not None else "-"
            unit = dev.iommu.iommu_dev.name if dev.iommu and dev.iommu.iommu_dev else "-"
            out.append(f"  devices/{dev_name(dev)}  driver={drv} iommu={unit}")
    if loose:
        out.append("devices without an IOMMU group (DMA goes to RAM untranslated):")
        out.extend(f"  {dev_name(d)}" for d in loose)
    return "\n".join(out) + "\n"


def render_pasid(args: argparse.Namespace) -> str:
    """Attached PASIDs per device, as the IOMMU core records them."""
    st = iommu_state()
    used = list(st.global_pasid_ida.ids)
    out = [
        f"pasid_api: {st.pasid_api}",
        f"global PASIDs allocated: {', '.join(map(str, used)) if used else 'none'}",
        f"{'device':<14} {'max_pasids':>10} {'pasid':>7}  domain",
    ]
    rows = 0
    for pdev in pci_get_devices():
        group = pdev.iommu_group
        if not isinstance(group, IommuGroup) or pdev.iommu is None:
            continue
        max_pasids = pdev.iommu.max_pasids
        if st.pasid_api == PASID_API_SEED_V3:
            dom = group.domain
            if dom is not None and dom.pasid:
                label = f"{domain_label(dom)} users={dom.pasid_users}"
                out.append(f"{dev_name(pdev):<14} {max_pasids:>10} {dom.pasid:>7}  {label}")
                rows += 1
            continue
        for pasid in sorted(group.pasid_array):
            attached = iommu_get_domain_for_dev_pasid(pdev, pasid)
            label = domain_label(attached) if attached is not None else "(attach in progress)"
            out.append(f"{dev_name(pdev):<14} {max_pasids:>10} {pasid:>7}  {label}")
            rows += 1
    if not rows:
        out.append("(no PASID attached)")
    return "\n".join(out) + "\n"


IOMMU_GROUPS = DumpTarget(
    "iommu-groups",
    "IOMMU groups, their domains and devices (sysfs iommu_groups)",
    render_iommu_groups,
)
PASID = DumpTarget("pasid", "PASIDs attached per device (IOMMU core view)", render_pasid)


@hookimpl
def iommulab_dump_targets() -> list[DumpTarget]:
    return [IOMMU_GROUPS, PASID]
