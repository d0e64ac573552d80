"""The narrow interface between the kernel and the machine (DESIGN §2).

The kernel imports nothing else from ``hw``: it sees RAM, MMIO, PCI config space,
MSI delivery, the CPU's device-facing instructions, virtual time and the firmware
tables through the :class:`Platform` protocol. Device and IOMMU models use the DMA
types below to talk to each other through the machine.

This module must stay free of imports from the rest of ``hw``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from attrs import field, frozen

# --------------------------------------------------------------------------- PCI addressing


@frozen(order=True)
class PciAddr:
    """Segment/bus/device/function. ``rid`` is the 16-bit requester ID (bus:devfn)."""

    segment: int
    bus: int
    dev: int
    fn: int

    def __attrs_post_init__(self) -> None:
        if not (0 <= self.segment <= 0xFFFF and 0 <= self.bus <= 0xFF):
            raise ValueError(f"bad PCI segment/bus {self.segment:#x}/{self.bus:#x}")
        if not (0 <= self.dev <= 31 and 0 <= self.fn <= 7):
            raise ValueError(f"bad PCI device/function {self.dev}.{self.fn}")

    @property
    def devfn(self) -> int:
        return (self.dev << 3) | self.fn

    @property
    def rid(self) -> int:
        return (self.bus << 8) | self.devfn

    @classmethod
    def parse(cls, text: str) -> PciAddr:
        """Parse ``SSSS:BB:DD.F`` or ``BB:DD.F`` (hex, as ``lspci`` prints)."""
        try:
            parts = text.split(":")
            seg = int(parts[0], 16) if len(parts) == 3 else 0
            bus = int(parts[-2], 16)
            dev_s, fn_s = parts[-1].split(".")
            return cls(seg, bus, int(dev_s, 16), int(fn_s, 16))
        except (ValueError, IndexError) as exc:
            raise ValueError(f"bad PCI address {text!r}: expected SSSS:BB:DD.F") from exc

    def __str__(self) -> str:
        return f"{self.segment:04x}:{self.bus:02x}:{self.dev:02x}.{self.fn:x}"


# --------------------------------------------------------------------------- firmware tables


@frozen
class IommuUnitInfo:
    """One IOMMU unit as firmware describes it (a DMAR DRHD, an IORT SMMUv3 node).

    ``table`` names the firmware table that lists it (``"DMAR"``, ``"IORT"``);
    vendor drivers claim units by that name. ``device_scope`` lists the PCI
    functions behind the unit unless ``include_pci_all`` is set.
    """

    table: str
    name: str
    register_base: int
    register_size: int
    segment: int = 0
    include_pci_all: bool = False
    device_scope: tuple[PciAddr, ...] = ()

    def covers(self, addr: PciAddr) -> bool:
        if addr.segment != self.segment:
            return False
        return self.include_pci_all or addr in self.device_scope


@frozen
class DmarRmrr:
    """A DMAR Reserved Memory Region Reporting structure: memory ``[base, end]`` the
    listed devices keep using across the OS hand-over (their identity mapping)."""

    base: int
    end: int
    device_scope: tuple[PciAddr, ...] = ()
    segment: int = 0


@frozen
class DmarAtsr:
    """A DMAR Root Port ATS Capability Reporting structure (``ALL_PORTS`` flag or the
    listed root ports support ATS)."""

    all_ports: bool = False
    device_scope: tuple[PciAddr, ...] = ()
    segment: int = 0


@frozen
class DmarSatc:
    """A DMAR SoC Integrated Address Translation Cache structure (``ATC_REQUIRED``
    flag: the listed devices must use their ATC)."""

    atc_required: bool = False
    device_scope: tuple[PciAddr, ...] = ()
    segment: int = 0


@frozen
class FirmwareTables:
    """What the kernel learns from firmware: RAM, PCI host bridges, IOMMU units."""

    ram_size: int
    """Bytes of RAM (holes excluded)."""
    pci_buses: tuple[tuple[int, int], ...] = ((0, 0),)
    """(segment, bus) pairs the host bridges decode; the kernel scans these."""
    iommus: tuple[IommuUnitInfo, ...] = ()
    host_address_width: int = 46
    tables: tuple[str, ...] = field(default=())
    """Firmware table signatures present (``DMAR`` when VT-d units exist ...)."""
    external_facing: tuple[PciAddr, ...] = ()
    """PCI functions behind a port firmware marks external-facing (ACPI
    ``ExternalFacingPort``): the kernel treats them as untrusted."""
    pci_windows: tuple[tuple[int, int, int], ...] = ()
    """(segment, first, last): the memory windows the PCI host bridges decode (the
    ACPI ``_CRS`` of each root bridge); CPU addresses equal bus addresses."""
    rmrrs: tuple[DmarRmrr, ...] = ()
    atsrs: tuple[DmarAtsr, ...] = ()
    satcs: tuple[DmarSatc, ...] = ()
    reserved_memory: tuple[tuple[int, int], ...] = ()
    """(first, last): RAM the firmware keeps for itself (E820 reserved); the kernel's
    page allocator never hands it out."""
    ram_ranges: tuple[tuple[int, int], ...] = ()
    """The e820 map's usable entries, (base, size) ascending; empty = ``[0, ram_size)``."""

    @property
    def e820_ram(self) -> tuple[tuple[int, int], ...]:
        """Usable RAM ranges, whichever way firmware described them."""
        return self.ram_ranges or ((0, self.ram_size),)


# --------------------------------------------------------------------------- what the CPU sees


class PhysMemory(Protocol):
    """RAM as the CPU sees it: physical addresses, little-endian."""

    @property
    def size(self) -> int: ...
    def read(self, addr: int, size: int) -> bytes: ...
    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None: ...
    def fill(self, addr: int, size: int, byte: int = 0) -> None: ...
    def read_u32(self, addr: int) -> int: ...
    def read_u64(self, addr: int) -> int: ...
    def write_u32(self, addr: int, value: int) -> None: ...
    def write_u64(self, addr: int, value: int) -> None: ...
    def write_u64s(self, addr: int, values: Sequence[int]) -> None: ...


class TimerHandle(Protocol):
    @property
    def when(self) -> int: ...


class VirtualClock(Protocol):
    """Deterministic virtual time (ns). Advancing it runs due device events."""

    @property
    def now(self) -> int: ...
    def advance(self, delta_ns: int) -> None: ...
    def run_until(self, when: int) -> None: ...
    def run_pending(self) -> None: ...
    def next_event_time(self) -> int | None: ...
    def schedule(
        self, delay_ns: int, callback: Callable[[], None], name: str = ""
    ) -> TimerHandle: ...
    def cancel(self, event: TimerHandle) -> None: ...


HwTraceSink = Callable[[str, int, dict[str, object]], None]
"""``sink(name, timestamp_ns, fields)``: a hardware event such as ``hw_vtd:fault``."""

MsiSink = Callable[[int, int], None]
"""``sink(address, data)``: a message-signalled interrupt written by a device."""


@frozen
class MasterAbort:
    """An MMIO access that no device decoded (reads returned all-ones)."""

    addr: int
    size: int
    write: bool
    value: int


class Platform(Protocol):
    """Everything the kernel may touch on the machine."""

    @property
    def memory(self) -> PhysMemory: ...
    @property
    def clock(self) -> VirtualClock: ...
    @property
    def firmware(self) -> FirmwareTables: ...
    @property
    def master_aborts(self) -> Sequence[MasterAbort]: ...

    def mmio_read(self, addr: int, size: int) -> int: ...
    def mmio_write(self, addr: int, size: int, value: int) -> None: ...

    def pci_config_read(self, addr: PciAddr, offset: int, size: int) -> int: ...
    def pci_config_write(self, addr: PciAddr, offset: int, size: int, value: int) -> None: ...

    def set_msi_sink(self, sink: MsiSink) -> None: ...
    def set_hw_trace_sink(self, sink: HwTraceSink | None) -> None: ...

    def movdir64b(self, addr: int, data: bytes) -> None:
        """MOVDIR64B: posted 64-byte store; no status comes back."""
        ...

    def enqcmds(self, addr: int, data: bytes) -> bool:
        """ENQCMDS (supervisor): PASID and privilege come from the descriptor.

        Returns True when the device accepted the command (ZF clear), False for retry.
        """
        ...

    def enqcmd(self, addr: int, data: bytes, pasid: int) -> bool:
        """ENQCMD (user): the CPU replaces the descriptor's PASID with the task's
        IA32_PASID value and clears its privilege bit. Returns True when accepted."""
        ...


# --------------------------------------------------------------------------- device-side DMA

Run = tuple[int, int]
"""(physical address, length): a stretch of a DMA access that is contiguous in RAM."""


@frozen
class DmaFault:
    """Why a DMA access stopped at ``addr`` (the device-visible address).

    ``reason`` is the translating agent's own code (VT-d fault reason, SMMU event
    id, or ``DMA_FAULT_BUS`` for an untranslated access outside RAM). ``no_access``
    marks an ATS Translation Completion with R=W=0 (not present or no permission):
    not a recorded fault, and what a function with PRI may send a page request for.
    """

    addr: int
    reason: int
    write: bool
    detail: str = ""
    no_access: bool = False


DMA_FAULT_BUS = -1
"""Reason code for an untranslated access that left RAM (no IOMMU in the path)."""


@frozen
class DmaResult:
    """The translated prefix of a DMA access, and the fault that ended it, if any."""

    runs: tuple[Run, ...]
    fault: DmaFault | None = None

    @property
    def length(self) -> int:
        return sum(n for _, n in self.runs)


class DmaTranslator(Protocol):
    """An agent between a requester and RAM (an IOMMU unit)."""

    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult: ...
