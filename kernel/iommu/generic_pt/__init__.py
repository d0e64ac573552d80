"""The generic IOMMU page table (drivers/iommu/generic_pt/), selectable at boot.

``iommu.pt=driver`` (default) keeps 6.12: every IOMMU driver builds its paging
domains with its own page-table code. ``iommu.pt=generic`` makes the drivers that
support it (intel_iommu first and second stage, arm_smmu_v3 stage 1) build them on
this library instead - the design upstream merged after 6.12 ("iommu/vt-d: Use the
generic iommu page table", "iommu/amd: Use the generic iommu page table").

:mod:`.pt_common` (what a format supplies), :mod:`.iommu_pt` (the one algorithm),
:mod:`.fmt` (x86_64, vtdss, armv8, amdv1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernel.context import current
from kernel.errno import EINVAL
from kernel.init import initcall
from kernel.module import InitLevel
from kernel.params import Param, parse_str
from kernel.printk import pr_info

if TYPE_CHECKING:
    from kernel.boot import Kernel

IOMMU_PT_DRIVER = "driver"
IOMMU_PT_GENERIC = "generic"
_SUBSYS_KEY = "iommu_pt"


def _parse_iommu_pt(text: str | None) -> str:
    value = parse_str(text)
    if value not in (IOMMU_PT_DRIVER, IOMMU_PT_GENERIC):
        raise EINVAL(f"iommu.pt: expected driver or generic, got {value!r}")
    return value


def _iommu_pt_teardown(k: Kernel) -> None:
    k.subsys.pop(_SUBSYS_KEY, None)


@initcall(InitLevel.SUBSYS, "iommu_pt_init", _iommu_pt_teardown)
def iommu_pt_init(k: Kernel) -> None:
    """Registers ``iommu.pt=driver|generic`` and records the choice."""
    param = k.cmdline.register(
        Param("iommu.pt", IOMMU_PT_DRIVER, _parse_iommu_pt, "driver | generic page tables")
    )
    k.subsys[_SUBSYS_KEY] = str(param.value)
    if param.value == IOMMU_PT_GENERIC:
        pr_info("iommu: page tables: generic_pt")


def iommu_pt_generic() -> bool:
    """Whether the running kernel booted with ``iommu.pt=generic``."""
    return current.kernel.subsys.get(_SUBSYS_KEY) == IOMMU_PT_GENERIC
