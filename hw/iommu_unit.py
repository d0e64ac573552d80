"""What every IOMMU unit model shares: its register window as the MMIO target, its
attachment to a machine, the log of programming errors the hardware ignored, hardware
trace events, work scheduled on the machine's clock, and DMA that reaches RAM
untranslated.

Vendor models (``hw.vtd.VtdUnit``, ``hw.smmuv3.Smmuv3Unit``,
``hw.mock_iommu.MockIommuUnit``) subclass it and build ``self.regs`` and their walkers
and caches in ``attach``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from hw.bus import DMA_FAULT_BUS, DmaFault, DmaResult, Finding

if TYPE_CHECKING:
    from hw.machine import Machine
    from hw.regs import RegisterFile

T = TypeVar("T")
MAX_FINDINGS = 256
"""Findings a unit keeps for dumps (the kernel's sink keeps them all)."""


class AttachedPart(Generic[T]):
    """A part of a unit that ``attach`` builds (walker, caches, pipeline), as a class
    attribute: read before ``attach`` it raises as :meth:`IommuUnitModel.attached`
    does; ``attach`` stores the part in the instance (:meth:`IommuUnitModel.set_part`),
    which shadows this descriptor (it has no ``__set__``), so a read after is a plain
    attribute lookup, no call (a property costs two on every read)."""

    name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> AttachedPart[T]: ...
    @overload
    def __get__(self, obj: IommuUnitModel, owner: type) -> T: ...
    def __get__(self, obj: IommuUnitModel | None, owner: type) -> AttachedPart[T] | T:
        if obj is None:
            return self
        raise RuntimeError(f"{obj.name}: not attached to a machine")


class IommuUnitModel:
    """Base of IOMMU unit models (see the module docstring)."""

    regs: RegisterFile

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[str] = []
        """Programming errors the hardware ignored, for tests and dumps."""
        self.machine: Machine | None = None
        self.base = 0
        self.findings: deque[Finding] = deque(maxlen=MAX_FINDINGS)
        """The unit's latest findings (stale uses, faults), newest last."""

    def attached(self, part: T | None) -> T:
        """``part`` once ``attach`` built it; RuntimeError before (a wiring bug)."""
        if part is None:
            raise RuntimeError(f"{self.name}: not attached to a machine")
        return part

    def set_part(self, name: str, part: Any) -> None:
        """Store a part built at ``attach`` under the name of its :class:`AttachedPart`."""
        assert isinstance(getattr(type(self), name, None), AttachedPart), name
        setattr(self, name, part)  # not through vars(): that would materialise the dict

    @property
    def m(self) -> Machine:
        return self.attached(self.machine)

    def emit(self, event: str, **fields: object) -> None:
        """A hardware trace event, built only when the machine's tracing is on."""
        m = self.machine
        if m is not None and m.hw_trace is not None:
            m.emit(event, unit=self.name, **fields)

    def report(self, finding: Finding) -> None:
        """Keep ``finding`` and hand it to the platform's finding sink (the kernel)."""
        self.findings.append(finding)
        m = self.machine
        if m is not None:
            m.report_finding(finding)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def _untranslated(self, addr: int, size: int, write: bool) -> DmaResult:
        """DMA that reaches RAM untranslated (translation off, pass-through): cut at
        the first byte outside RAM with a bus fault (:data:`hw.bus.DMA_FAULT_BUS`),
        as the machine cuts DMA no IOMMU translates."""
        ram = self.m.memory.size
        if 0 <= addr and addr + size <= ram:
            return DmaResult(((addr, size),))
        good = max(0, min(size, ram - addr)) if addr >= 0 else 0
        runs = ((addr, good),) if good else ()
        return DmaResult(runs, DmaFault(addr + good, DMA_FAULT_BUS, write, "outside RAM"))

    def mmio_read(self, offset: int, size: int) -> int:
        return self.regs.read(offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.regs.write(offset, size, value)

    def _schedule(self, delay: int, cb: Callable[[], None], what: str) -> None:
        self.m.clock.schedule(delay, cb, f"{self.name}:{what}")
