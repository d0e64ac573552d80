"""Intel VT-d IOMMU driver (drivers/iommu/intel/): the plugin.

Registers the ``intel_iommu`` vendor driver for firmware ``DMAR`` units, the
``intel_iommu`` kernel module (its ``intel_iommu=`` parameter and the DMAR table
detection lines), and the ``vtd`` debug view (``iommulab dump vtd``, like debugfs
``iommu/intel/dmar_translation_struct``).

Modules: :mod:`.iommu_regs` (register and entry bits), :mod:`.structs`,
:mod:`.dmar` (unit registers, queued invalidation, faults), :mod:`.irq_remapping`
(interrupt remapping, the ``ir_translation_struct`` view as ``dump vtd --irq``),
:mod:`.context`,
:mod:`.pasid`, :mod:`.cache` (cache tags, seed-v3 flushes), :mod:`.pgtable`,
:mod:`.domain`, :mod:`.iommu` (bring-up, probe, attach, map), :mod:`.svm`,
:mod:`.ops`, :mod:`.debugfs`.
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers.intel_iommu.debugfs import DUMP_TARGET
from drivers.intel_iommu.dmar import dmar_free_units, dmar_state
from drivers.intel_iommu.dmar_units import dmar_table_init
from drivers.intel_iommu.init_dmars import intel_iommu_init_unit, intel_iommu_shutdown_unit
from drivers.intel_iommu.irq_remapping import intel_irq_remap_ops
from drivers.intel_iommu.ops import IntelIommuOps
from drivers.intel_iommu.structs import DmarState, DrhdUnit
from kernel.debugfs import DumpTarget
from kernel.hookspecs import hookimpl
from kernel.irq_remapping import irq_remap_register_ops
from kernel.module import InitLevel, IommuDriverInfo, KernelModule
from kernel.params import Param, parse_str
from kernel.printk import pr_info, pr_notice, pr_warn

PARAM_HELP = "on | off | sm_on | sm_off | igfx_off | sp_off (comma-separated)"


def intel_iommu_setup(st: DmarState, text: str) -> None:
    """``intel_iommu_setup`` (the ``intel_iommu=`` handler): each option and its line."""
    for opt in filter(None, text.split(",")):
        if opt == "on":
            st.dmar_disabled = False
            pr_info("DMAR: IOMMU enabled")
        elif opt == "off":
            st.dmar_disabled = True
            pr_info("DMAR: IOMMU disabled")
        elif opt == "igfx_off":
            st.igfx_off = True
            pr_info("DMAR: Disable GFX device mapping")
        elif opt == "sp_off":
            st.superpage = False
            pr_info("DMAR: Disable supported super page")
        elif opt == "sm_on":
            st.intel_iommu_sm = True
            pr_info("DMAR: Enable scalable mode if hardware supports")
        elif opt == "sm_off":
            st.intel_iommu_sm = False
            pr_info("DMAR: Scalable mode is disallowed")
        elif opt == "strict":
            pr_warn("DMAR: intel_iommu=strict deprecated; use iommu.strict=1 instead")
        else:
            pr_notice(f"DMAR: Unknown option - '{opt}'")


def _state() -> DmarState:
    st = dmar_state()
    if st.ops is None:
        st.ops = IntelIommuOps()
    return st


def intel_iommu_module_init(param: Param[object]) -> None:
    """Module init at CORE level, standing for what Linux does before any initcall:
    the ``intel_iommu=`` early parameter, ``detect_intel_iommu`` and the DMAR table
    parse (``dmar_table_init``: every DRHD's unit allocated, RMRR/ATSR/SATC), and the
    offer of :data:`.irq_remapping.intel_irq_remap_ops` to the x86 APIC step that
    turns interrupt remapping on over all units (:mod:`kernel.irq_remapping`, at
    POSTCORE). DMA remapping comes per unit at ROOTFS (``intel_iommu_init``)."""
    st = _state()
    intel_iommu_setup(st, str(param.value))
    if dmar_table_init() == 0:
        irq_remap_register_ops(intel_irq_remap_ops)


def intel_iommu_probe(unit: DrhdUnit) -> None:
    """The core binds a DMAR unit: bring it up and register it."""
    _state()
    intel_iommu_init_unit(unit)


def intel_iommu_shutdown() -> None:
    """Shut every unit down (the core released their devices first)."""
    st = dmar_state()
    for iommu in reversed(list(st.units)):
        intel_iommu_shutdown_unit(iommu)
    if not st.table_parsed:  # no early parse: nothing else frees the units
        dmar_free_units()


INTEL_IOMMU_DRIVER = IommuDriverInfo(
    "intel_iommu", "DMAR", intel_iommu_probe, intel_iommu_shutdown, "Intel VT-d DMA remapping"
)


@hookimpl
def iommulab_iommu_drivers() -> Sequence[IommuDriverInfo]:
    return [INTEL_IOMMU_DRIVER]


@hookimpl
def iommulab_modules() -> Sequence[KernelModule]:
    """A fresh module (and parameter) for every boot."""
    param: Param[object] = Param("intel_iommu", "", parse_str, PARAM_HELP)
    return [
        KernelModule(
            "intel_iommu",
            lambda: intel_iommu_module_init(param),
            None,
            InitLevel.CORE,
            "Intel VT-d IOMMU driver",
            (param,),
        )
    ]


@hookimpl
def iommulab_dump_targets() -> Sequence[DumpTarget]:
    return [DUMP_TARGET]
