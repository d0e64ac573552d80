"""The founding scenario under fail_nth: probe → system PASID → WQs → memcpy on each
WQ → remove, on a booted machine whose idxd driver is not bound yet.

:func:`run_point` fails the ``nth`` allocation of the scenario and checks that the
failure unwinds cleanly: no leaked pages, IOVAs, PASIDs, IRQs or DMA mappings, no
WARN, no stale cached translation.

Each point boots its own machine. Booting is ~8 ms of a ~20 ms point; a copy-on-write
snapshot (``os.fork`` of a booted parent per point, the child reporting through a
pipe) measured no faster (13.8 vs 11.8 ms per point in a small process, and slower in
a pytest worker, whose larger heap the child's reference counting dirties), so the
snapshot was not kept.
"""

from __future__ import annotations

from attrs import frozen

from drivers.idxd.init import idxd_devices, idxd_exit_module, idxd_init_module
from hw.machine import Machine
from iommulab import checks
from iommulab.demo import memcpy_checked
from iommulab.presets import preset
from kernel.boot import Kernel, boot
from kernel.delay import msleep
from kernel.dma.debug import dma_debug_state
from kernel.dma.dmaengine import dma_release_channel, dma_request_chan
from kernel.errno import KernelError
from kernel.fault_inject import count_points, injector
from kernel.idr import ida_is_empty
from kernel.iommu.dma_iommu import IOVA_DEFAULT_FQ_TIMEOUT, iommu_dma_live_iovas
from kernel.iommu.iommu import iommu_state
from kernel.irq import irq_controller
from kernel.pci import pci_get_devices

COPY_SIZE = 8192


SCENARIOS = {"strict": "iommu.strict=1", "lazy": "iommu.strict=0"}
"""The scenario's variants: unmaps flushed at once, or through the flush queue."""
VENDORS = {"vtd": "default", "smmuv3": "smmuv3"}
"""IOMMU vendor -> the machine preset that has it in front of the DSA."""
APIS = ("upstream", "seed-v3")
"""PASID API generations (``iommu.pasid_api=``)."""


@frozen
class Combo:
    """One cell of the matrix: scenario variant x IOMMU vendor x PASID API generation."""

    scenario: str
    vendor: str
    api: str

    @property
    def id(self) -> str:
        return f"{self.scenario}-{self.vendor}-{self.api}"

    @property
    def machine(self) -> str:
        return VENDORS[self.vendor]

    @property
    def cmdline(self) -> str:
        return f"{SCENARIOS[self.scenario]} iommu.pasid_api={self.api}"


FOUNDING = Combo("strict", "vtd", "upstream")
"""The founding scenario as the series ran it: VT-d, strict, upstream PASID API."""
MATRIX = tuple(Combo(s, v, a) for s in SCENARIOS for v in VENDORS for a in APIS)


def _quiesce() -> None:
    """Let deferred frees happen: the flush queue's 10 ms timer returns lazily
    unmapped IOVAs (strict mode has nothing pending)."""
    msleep(2 * IOVA_DEFAULT_FQ_TIMEOUT)


def boot_before_probe(combo: Combo) -> Kernel:
    """Boot ``combo``'s machine, then unbind idxd: the scenario starts at probe."""
    k = boot(Machine(preset(combo.machine)), combo.cmdline, entry_points=False)
    idxd_exit_module()
    _quiesce()
    return k


def scenario() -> list[bool]:
    """probe → system PASID → WQs (``idxd_init_module``), a memcpy on every enabled
    WQ, remove. Returns whether each copy's bytes arrived."""
    results: list[bool] = []
    idxd_init_module()
    for d in idxd_devices():
        for i, wq in enumerate(d.wqs):
            if wq.dma_chan is None:
                continue
            chan = dma_request_chan(None, wq.dma_chan.name)
            try:
                results.append(memcpy_checked(chan, COPY_SIZE, i))
            finally:
                dma_release_channel(chan)
    idxd_exit_module()
    return results


def _live_iovas() -> int:
    return sum(iommu_dma_live_iovas(p) for p in pci_get_devices())


def _dma_debug_entries() -> int:
    return sum(len(v) for v in dma_debug_state().entries.values())


@frozen
class Outcome:
    copies: tuple[bool, ...]
    """Whether each memcpy's bytes arrived (empty when the scenario stopped early)."""
    problems: tuple[str, ...]
    """Every sign of an unclean unwind (empty = clean)."""


def run_point(k: Kernel, nth: int) -> Outcome:
    """Fail the ``nth`` allocation of :func:`scenario` on ``k`` (0: fail none) and
    check the unwind. ``k`` is shut down at the end."""
    k.activate()
    base = checks.baseline(k)
    irqs = set(irq_controller().descs)
    iovas, mappings = _live_iovas(), _dma_debug_entries()
    problems: list[str] = []
    copies: list[bool] = []
    injector().arm(nth)
    try:
        copies = scenario()
    except KernelError:
        pass
    finally:
        site = injector().injected_at
        injector().disarm()
    idxd_exit_module()
    _quiesce()
    if nth and site is None:
        problems.append(f"allocation {nth} of the scenario was not reached")
    if set(irq_controller().descs) != irqs:
        problems.append(f"IRQs left: {sorted(set(irq_controller().descs) - irqs)}")
    if not ida_is_empty(iommu_state().global_pasid_ida):
        problems.append("a global PASID is still allocated")
    if _live_iovas() != iovas:
        problems.append(f"live IOVA ranges {iovas} -> {_live_iovas()}")
    if _dma_debug_entries() != mappings:
        problems.append(f"DMA-API mappings {mappings} -> {_dma_debug_entries()}")
    k.shutdown()
    problems += [str(f) for f in checks.findings(base)]
    return Outcome(tuple(copies), tuple(f"failing {site}: {p}" for p in problems))


def points(combo: Combo) -> list[str]:
    """The allocation sites the scenario passes, in order (fail_nth counts these)."""
    k = boot_before_probe(combo)
    try:
        return count_points(scenario)
    finally:
        k.shutdown()
