"""The narrow interface between the kernel and the machine (DESIGN §2).

The kernel imports nothing else from ``hw``: it sees RAM, MMIO, PCI config space,
MSI delivery, the CPU's device-facing instructions, virtual time and the firmware
tables through the :class:`Platform` protocol. Device and IOMMU models use the DMA
types below to talk to each other through the machine.

This module must stay free of imports from the rest of ``hw``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MethodType
from typing import Any, NamedTuple, Protocol

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
    """The DMAR table header's host address width (HAW) as Linux prints it."""
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
    def run_next(self, deadline: int) -> bool: ...
    def schedule(
        self, delay_ns: int, callback: Callable[[], None], name: str = ""
    ) -> TimerHandle: ...
    def cancel(self, event: TimerHandle) -> None: ...


HwTraceSink = Callable[[str, int, dict[str, object]], None]
"""``sink(name, timestamp_ns, fields)``: a hardware event such as ``hw_vtd:fault``."""

FindingSink = Callable[["Finding"], None]
"""``sink(finding)``: a hardware model's report of a stale use or a fault."""

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
    def set_finding_sink(self, sink: FindingSink | None) -> None:
        """Where hardware models report :class:`Finding` records (stale uses, faults)."""
        ...

    def set_write_origin(self, origin: Callable[[], CallChain] | None) -> None:
        """What a model calls to blame a RAM write (the kernel's call-chain capture)."""
        ...

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


class DmaResult(NamedTuple):
    """The translated prefix of a DMA access, and the fault that ended it, if any.

    A named tuple (immutable, compared and hashed by its fields) so a hot path can
    build one with no Python-level call: :func:`dma_result`."""

    runs: tuple[Run, ...]
    fault: DmaFault | None = None

    @property
    def length(self) -> int:
        return sum(n for _, n in self.runs)


dma_result: Callable[[tuple[tuple[Run, ...], DmaFault | None]], DmaResult] = MethodType(
    tuple.__new__, DmaResult
)
"""``dma_result((runs, fault))`` is ``DmaResult(runs, fault)`` built in C (the class
call goes through the named tuple's Python ``__new__``): ``tuple.__new__`` bound to
the class as a method, whose call passes the class on without building an argument
tuple (a :func:`functools.partial` costs a layer more)."""


class DmaTranslator(Protocol):
    """An agent between a requester and RAM (an IOMMU unit)."""

    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult: ...


# --------------------------------------------------------------------------- findings
#
# A *finding* is one record of something that went wrong, carrying its cause (DESIGN
# §7): a stale cached translation used by a device, a DMA fault, a DMA-API misuse, a
# page-table write into memory that is not a page-table page. Whoever notices it fills
# in what it knows: a hardware model the hardware facts (unit, requester, PASID,
# address, domain tag, which cache, the cached and the current entry decoded, the RAM
# writes that made a cached entry wrong, the invalidation that would have removed it
# in the vendor's terms, the decoded fault record and the walk up to where it
# stopped); the kernel the software facts (the call chain of a table write, captured
# through :attr:`hw.memory.Memory.write_origin` when the write hit a granule a cached
# entry was built from; the call chain of a DMA-API misuse or a page-table store).
# Hardware knows no software: a model stores what ``write_origin`` returned and only
# asks it for :meth:`CallChain.lines`. One rendering for every audience:
# :meth:`Finding.report` (dmesg, a pytest failure), :meth:`Finding.to_json` (the CLI's
# JSON, the trace event).


class CallChain(Protocol):
    """Who performed a RAM write or a kernel operation, as the kernel captured it."""

    def lines(self) -> list[str]:
        """The frames, innermost first, one per line (``func (file:line)``)."""
        ...


def bdf(rid: int) -> str:
    """A requester ID as ``BB:DD.F``."""
    return f"{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


def size_text(size: int) -> str:
    """``4KiB``, ``2MiB``, ``1GiB`` (bytes otherwise)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and not size & ((1 << shift) - 1):
            return f"{size >> shift}{unit}"
    return f"{size:#x}"


@frozen
class Entry:
    """A translation decoded: the page at ``iova`` maps ``size`` bytes at ``phys``
    with ``perms`` from a leaf at ``level`` (1: 4 KiB), or does not translate
    (``phys`` None) for the reason ``fault``."""

    iova: int
    phys: int | None
    size: int = 0
    level: int = 0
    perms: str = ""
    fault: str = ""

    def text(self) -> str:
        if self.phys is None:
            return f"iova {self.iova:#x}: no translation ({self.fault})"
        return (
            f"iova {self.iova:#x} -> {self.phys:#x} {size_text(self.size)} "
            f"level {self.level} {self.perms}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "iova": hex(self.iova),
            "phys": None if self.phys is None else hex(self.phys),
            "size": hex(self.size),
            "level": self.level,
            "perms": self.perms,
            "fault": self.fault,
        }


@frozen
class TableWrite:
    """A RAM write that changed the 8-byte entry at ``addr`` from ``old`` to ``new``
    at virtual time ``time_ns``; ``origin`` is the call chain the kernel captured."""

    addr: int
    old: int
    new: int
    time_ns: int
    origin: CallChain | None = field(default=None, eq=False)

    def chain(self) -> list[str]:
        return [] if self.origin is None else self.origin.lines()

    def text(self) -> list[str]:
        out = [
            f"table write at {self.time_ns} ns: qword {self.addr:#x} "
            f"{self.old:#018x} -> {self.new:#018x}"
        ]
        chain = self.chain()
        if chain:
            out.append("  Call Trace:")
            out.extend(f"   {line}" for line in chain)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "addr": hex(self.addr),
            "old": hex(self.old),
            "new": hex(self.new),
            "time_ns": self.time_ns,
            "call_chain": self.chain(),
        }


@frozen
class Invalidation:
    """An invalidation in the vendor's terms: ``name`` (``PASID-based IOTLB
    invalidation (p_iotlb_inv_dsc, type 0x6)``, ``CMD_TLBI_NH_VA``) and its fields
    in order, already formatted (``("DID", "1"), ("PASID", "2")``)."""

    name: str
    fields: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.fields)
        return f"{self.name}: {args}" if args else self.name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "fields": dict(self.fields)}


@frozen
class WalkStep:
    """One structure a walk read: ``what`` (``root``, ``context``, ``PASID entry``,
    ``level 4`` ...) at ``addr`` holding ``value``, and what the walk made of it."""

    what: str
    addr: int
    value: int
    note: str = ""

    def text(self) -> str:
        note = f"  {self.note}" if self.note else ""
        return f"{self.what:<12} @ {self.addr:#x} = {self.value:#018x}{note}"

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "addr": hex(self.addr),
            "value": hex(self.value),
            "note": self.note,
        }


def _opt_hex(v: int | None) -> str | None:
    return None if v is None else hex(v)


@frozen
class Finding:
    """One finding with its cause (see the module docstring). ``check`` names the
    kind: ``stale``, ``fault``, ``dma-debug``, ``pt-owner`` (hardware and kernel
    findings), ``warn`` and ``leak`` (the teardown checker's)."""

    check: str
    message: str
    unit: str = ""
    requester: str = ""
    """The requester's PCI address (``BB:DD.F``), or the device's name."""
    pasid: int | None = None
    iova: int | None = None
    domain: str = ""
    """The cache tag of the address space: ``DID 1``, ``VMID 0 ASID 3``."""
    cache: str = ""
    """Which cache answered: ``IOTLB``, ``device TLB``, ``context cache``, ..."""
    cached: Entry | None = None
    current: Entry | None = None
    writes: tuple[TableWrite, ...] = ()
    """The RAM writes that made the cached entry wrong, oldest first."""
    missing: tuple[Invalidation, ...] = ()
    """The invalidation(s) that would have removed the cached entry."""
    record: tuple[tuple[str, str], ...] = ()
    """A decoded hardware record (fault recording register, event queue entry)."""
    walk: tuple[WalkStep, ...] = ()
    """The structures a walk read, up to where it stopped."""
    chain: tuple[str, ...] = ()
    """The kernel call chain of the operation (innermost first)."""
    detail: str = ""
    """Free text the reporter adds (a DMA-API report, a WARN's stack)."""
    time_ns: int = 0

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"

    def facts(self) -> list[str]:
        """``device``, ``PASID`` ... as ``name: value`` lines (what is known)."""
        out: list[str] = []
        if self.unit:
            out.append(f"unit: {self.unit}")
        if self.requester:
            out.append(f"device: {self.requester}")
        if self.pasid is not None:
            out.append(f"PASID: {self.pasid}")
        if self.iova is not None:
            out.append(f"IOVA: {self.iova:#x}")
        if self.domain:
            out.append(f"domain: {self.domain}")
        if self.cache:
            out.append(f"cache: {self.cache}")
        return out

    def report(self) -> str:
        """The whole finding as text, the first line :meth:`__str__`."""
        out = [str(self)]
        out.extend(f"  {line}" for line in self.facts())
        if self.cached is not None:
            out.append(f"  cached entry:  {self.cached.text()}")
        if self.current is not None:
            out.append(f"  current entry: {self.current.text()}")
        for w in self.writes:
            lines = w.text()
            out.append(f"  made stale by {lines[0]}")
            out.extend(f"  {line}" for line in lines[1:])
        for inv in self.missing:
            out.append(f"  missing invalidation: {inv.text()}")
        if self.record:
            out.append("  record: " + " ".join(f"{k}={v}" for k, v in self.record))
        if self.walk:
            out.append("  walk:")
            out.extend(f"    {step.text()}" for step in self.walk)
        if self.chain:
            out.append("  Call Trace:")
            out.extend(f"   {line}" for line in self.chain)
        if self.detail:
            out.extend(f"  {line}" for line in self.detail.splitlines())
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "message": self.message,
            "unit": self.unit,
            "device": self.requester,
            "pasid": self.pasid,
            "iova": _opt_hex(self.iova),
            "domain": self.domain,
            "cache": self.cache,
            "cached": None if self.cached is None else self.cached.to_json(),
            "current": None if self.current is None else self.current.to_json(),
            "writes": [w.to_json() for w in self.writes],
            "missing": [i.to_json() for i in self.missing],
            "record": dict(self.record),
            "walk": [s.to_json() for s in self.walk],
            "call_chain": list(self.chain),
            "detail": self.detail,
            "time_ns": self.time_ns,
        }


def perms_text(bits: Sequence[tuple[int, str]], perms: int) -> str:
    """Rights as letters: ``bits`` pairs a bit with its letter (``-`` when clear)."""
    return "".join(letter if perms & bit else "-" for bit, letter in bits)
