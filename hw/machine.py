"""A machine: RAM + IOMMU units + PCI functions + firmware tables.

Built from a declarative :class:`MachineSpec` (what a TOML/JSON machine file or a
preset says). The :class:`Machine` is the :class:`hw.bus.Platform` the kernel runs
on; it routes MMIO by address, config cycles by PCI address, DMA from a requester
through the IOMMU unit whose firmware scope covers it (or straight to RAM), MSI
writes to the interrupt sink, and the CPU's MOVDIR64B/ENQCMD(S) to device portals.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from attrs import define, field, frozen

from hw.bus import (
    DMA_FAULT_BUS,
    CallChain,
    DmaFault,
    DmaResult,
    Finding,
    FindingSink,
    FirmwareTables,
    HwTraceSink,
    IommuUnitInfo,
    MasterAbort,
    MsiSink,
    PciAddr,
)
from hw.clock import Clock
from hw.dmar_tables import DmarSpec, parse_dmar
from hw.kinds import DEVICE_KINDS as DEVICE_KINDS
from hw.kinds import IOMMU_KINDS as IOMMU_KINDS
from hw.kinds import HwKinds, discover
from hw.memory import PAGE_SIZE, Memory, RamRanges, ram_ranges
from hw.pci import PciFunction

MMIO_WINDOW_BASE = 0xC000_0000
MMIO_WINDOW_END = 0xFE00_0000
IOMMU_WINDOW_BASE = 0xFED9_0000
INTERRUPT_WINDOW_BASE = 0xFEE0_0000
INTERRUPT_WINDOW_END = 0xFEF0_0000
FOUR_GIB = 1 << 32
HOST_ADDRESS_WIDTH = 46
"""Physical address bits of the modelled host (DMAR's HAW field, minus one)."""

PCI_HOLE: tuple[tuple[int, int, str], ...] = (
    (MMIO_WINDOW_BASE, MMIO_WINDOW_END, "the device BAR window"),
    (MMIO_WINDOW_END, IOMMU_WINDOW_BASE, "the PCI hole below 4 GiB"),
    (IOMMU_WINDOW_BASE, INTERRUPT_WINDOW_BASE, "the IOMMU register window"),
    (INTERRUPT_WINDOW_BASE, INTERRUPT_WINDOW_END, "the interrupt window 0xfee00000"),
    (INTERRUPT_WINDOW_END, FOUR_GIB, "the PCI hole below 4 GiB"),
)
"""What lives between the top of low RAM and 4 GiB; RAM may not overlap any of it."""


class IommuModel(Protocol):
    """What the machine needs from an IOMMU unit model."""

    table: str
    register_size: int

    def attach(self, machine: Machine, base: int) -> None: ...
    def mmio_read(self, offset: int, size: int) -> int: ...
    def mmio_write(self, offset: int, size: int, value: int) -> None: ...
    def translate(
        self, rid: int, pasid: int | None, priv: bool, addr: int, size: int, write: bool
    ) -> DmaResult: ...


DeviceFactory = Callable[[PciAddr, Mapping[str, Any]], PciFunction]
IommuFactory = Callable[[str, Mapping[str, Any]], IommuModel]

# --------------------------------------------------------------------------- description


def _size(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        try:
            if text and text[-1] in units:
                return int(text[:-1], 0) * units[text[-1]]
            return int(text, 0)
        except ValueError:
            pass
    raise ValueError(f"{where}: expected a size like 512M or an integer, got {value!r}")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a table/object, got {type(value).__name__}")
    return value


def _check_keys(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")


@frozen
class DeviceSpec:
    kind: str
    bdf: PciAddr
    config: Mapping[str, Any] = field(factory=dict)
    external: bool = False
    """Behind an external-facing port (Thunderbolt): firmware says so."""


@frozen
class IommuSpec:
    kind: str
    name: str
    scope: tuple[PciAddr, ...] | None
    """PCI functions behind the unit; ``None`` means INCLUDE_PCI_ALL."""
    base: int | None = None
    config: Mapping[str, Any] = field(factory=dict)


def host_address_limit() -> tuple[int, str]:
    """The highest top of RAM this host can model, and what sets it.

    RAM is one host mapping as large as the top of RAM, so it is bounded by the
    modelled physical address width and by the process's address-space limit.
    """
    limit, why = 1 << HOST_ADDRESS_WIDTH, f"the {HOST_ADDRESS_WIDTH}-bit physical address width"
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError):  # pragma: no cover - a host without RLIMIT_AS
        soft = -1
    if 0 <= soft < limit:
        limit, why = soft, f"this process's address-space limit (RLIMIT_AS {soft:#x})"
    return limit, why


def _ram_layout(d: Mapping[str, Any]) -> RamRanges:
    """``ram`` (+ ``tolud``) -> RAM ranges, checked against the PCI hole and the host.

    ``ram = "64G"`` is laid out as firmware does: low RAM up to ``tolud`` (top of
    low usable DRAM, default the start of the BAR window), the rest from 4 GiB.
    ``ram = [{base = 0, size = "2G"}, {base = "4G", size = "14G"}]`` gives the
    ranges explicitly.
    """
    if "ram" not in d:
        raise ValueError('machine.ram: missing (e.g. ram = "256M")')
    raw = d["ram"]
    where = "machine.ram"
    tolud = _size(d.get("tolud", MMIO_WINDOW_BASE), "machine.tolud")
    if tolud <= 0 or tolud % PAGE_SIZE:
        raise ValueError(f"machine.tolud: {tolud:#x} is not a positive multiple of 4 KiB")
    if tolud > MMIO_WINDOW_BASE:
        raise ValueError(
            f"machine.tolud: {tolud:#x} overlaps the device BAR window at {MMIO_WINDOW_BASE:#x}"
        )
    pairs: list[tuple[int, int]] = []
    if isinstance(raw, list | tuple):
        if "tolud" in d:
            raise ValueError("machine.tolud: only with ram given as one size")
        if not raw:
            raise ValueError(f"{where}: an empty list of RAM ranges")
        for i, item in enumerate(raw):
            w = f"{where}[{i}]"
            r = _mapping(item, w)
            _check_keys(r, {"base", "size"}, w)
            base = _size(r.get("base", 0), f"{w}.base")
            if "size" not in r:
                raise ValueError(f"{w}.size: missing")
            size = _size(r["size"], f"{w}.size")
            if base < 0 or base % PAGE_SIZE:
                raise ValueError(f"{w}.base: {base:#x} is not a multiple of 4 KiB")
            if size <= 0 or size % PAGE_SIZE:
                raise ValueError(f"{w}.size: {size:#x} is not a positive multiple of 4 KiB")
            if pairs and base < sum(pairs[-1]):
                raise ValueError(f"{w}.base: {base:#x} overlaps or precedes {where}[{i - 1}]")
            pairs.append((base, size))
    else:
        total = _size(raw, where)
        if total <= 0 or total % PAGE_SIZE:
            raise ValueError(f"{where}: {total:#x} is not a positive multiple of 4 KiB")
        low = min(total, tolud)
        pairs.append((0, low))
        if total > low:
            pairs.append((FOUR_GIB, total - low))
    for i, (base, size) in enumerate(pairs):
        w = f"{where}[{i}]" if isinstance(raw, list | tuple) else where
        for lo, hi, what in PCI_HOLE:
            if base < hi and lo < base + size:
                raise ValueError(
                    f"{w}: RAM [{base:#x}, {base + size:#x}) overlaps {what} [{lo:#x}, {hi:#x})"
                )
    top = sum(pairs[-1])
    limit, why = host_address_limit()
    if top > limit:
        raise ValueError(
            f"{where}: top of RAM {top:#x} is beyond what this host can address ({limit:#x}, {why})"
        )
    return ram_ranges(pairs)


@frozen
class MachineSpec:
    name: str
    ram_size: int
    """Bytes of RAM (the sum of ``ram_ranges``)."""
    devices: tuple[DeviceSpec, ...] = ()
    iommus: tuple[IommuSpec, ...] = ()
    doc: str = ""
    ram_ranges: RamRanges = ()
    """(base, size) of each RAM range; empty = one range ``[0, ram_size)``."""
    dmar: DmarSpec = field(factory=DmarSpec)

    @property
    def ram_layout(self) -> RamRanges:
        return self.ram_ranges or ((0, self.ram_size),)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], kinds: HwKinds | None = None) -> MachineSpec:
        """Validate a machine description; errors name the offending field.

        Everything is checked here, before any RAM is mapped or model built. The
        kinds are ``kinds`` (default: :func:`hw.kinds.discover`, the built-ins plus
        the installed ``iommulab.hw`` entry points).
        """
        known = discover() if kinds is None else kinds
        d = _mapping(data, "machine")
        _check_keys(d, {"name", "ram", "tolud", "devices", "iommus", "doc", "dmar"}, "machine")
        ranges = _ram_layout(d)
        ram = sum(n for _, n in ranges)
        devices: list[DeviceSpec] = []
        seen: set[PciAddr] = set()
        for i, raw in enumerate(d.get("devices", ())):
            where = f"machine.devices[{i}]"
            dd = _mapping(raw, where)
            _check_keys(dd, {"kind", "bdf", "config", "external"}, where)
            for key in ("kind", "bdf"):
                if not isinstance(dd.get(key), str):
                    raise ValueError(f"{where}.{key}: missing or not a string")
            try:
                bdf = PciAddr.parse(dd["bdf"])
            except ValueError as exc:
                raise ValueError(f"{where}.bdf: {exc}") from exc
            if bdf in seen:
                raise ValueError(f"{where}.bdf: {bdf} used twice")
            seen.add(bdf)
            if dd["kind"] not in known.devices:
                raise ValueError(
                    f"{where}.kind: unknown device kind {dd['kind']!r} "
                    f"(known: {', '.join(sorted(known.devices))})"
                )
            if not isinstance(dd.get("external", False), bool):
                raise ValueError(f"{where}.external: expected true or false")
            devices.append(
                DeviceSpec(
                    dd["kind"],
                    bdf,
                    dict(_mapping(dd.get("config", {}), f"{where}.config")),
                    bool(dd.get("external", False)),
                )
            )
        iommus: list[IommuSpec] = []
        for i, raw in enumerate(d.get("iommus", ())):
            where = f"machine.iommus[{i}]"
            dd = _mapping(raw, where)
            _check_keys(dd, {"kind", "name", "scope", "base", "config"}, where)
            kind = dd.get("kind")
            if not isinstance(kind, str) or kind not in known.iommus:
                raise ValueError(
                    f"{where}.kind: unknown IOMMU kind {kind!r} "
                    f"(known: {', '.join(sorted(known.iommus))})"
                )
            scope_raw = dd.get("scope", "all")
            scope: tuple[PciAddr, ...] | None
            if scope_raw == "all":
                scope = None
            elif isinstance(scope_raw, list | tuple):
                try:
                    scope = tuple(PciAddr.parse(s) for s in scope_raw)
                except (ValueError, AttributeError) as exc:
                    raise ValueError(f"{where}.scope: {exc}") from exc
            else:
                raise ValueError(f'{where}.scope: expected "all" or a list of BDFs')
            base = dd.get("base")
            if base is not None and not isinstance(base, int):
                raise ValueError(f"{where}.base: expected an integer address")
            if base is not None:
                for r_base, r_size in ranges:
                    if base < r_base + r_size and r_base < base + PAGE_SIZE:
                        raise ValueError(
                            f"{where}.base: registers at {base:#x} overlap RAM "
                            f"[{r_base:#x}, {r_base + r_size:#x})"
                        )
            name = dd.get("name", f"{kind}{i}")
            if not isinstance(name, str):
                raise ValueError(f"{where}.name: expected a string")
            iommus.append(
                IommuSpec(
                    kind, name, scope, base, dict(_mapping(dd.get("config", {}), f"{where}.config"))
                )
            )
        if sum(1 for u in iommus if u.scope is None) > 1:
            raise ValueError('machine.iommus: only one unit may have scope "all"')
        name = d.get("name", "custom")
        if not isinstance(name, str):
            raise ValueError("machine.name: expected a string")
        dmar = parse_dmar(d.get("dmar"))
        return cls(name, ram, tuple(devices), tuple(iommus), str(d.get("doc", "")), ranges, dmar)


# --------------------------------------------------------------------------- the machine


_DECODED_MAX = 4096
"""Decoded addresses :class:`Machine` remembers before it starts over."""


@define(slots=True, eq=False)
class _Region:
    base: int
    end: int
    read: Callable[[int, int], int]
    write: Callable[[int, int, int], None]
    owner: object
    bar: int = -1


class Machine:
    """A built machine; satisfies :class:`hw.bus.Platform`."""

    def __init__(self, spec: MachineSpec, kinds: HwKinds | None = None) -> None:
        self.spec = spec
        self.kinds = discover() if kinds is None else kinds
        """The hardware kinds this machine was built from (:func:`hw.kinds.discover`)."""
        self.hw_problems: tuple[str, ...] = self.kinds.problems
        """Broken ``iommulab.hw`` entry points skipped while building (for the front door)."""
        self.memory = Memory(spec.ram_layout)
        self._holes = self.memory.holes
        self.clock = Clock()
        self._master_aborts: list[MasterAbort] = []
        self._msi_sink: MsiSink | None = None
        self.hw_trace: HwTraceSink | None = None
        self.finding_sink: FindingSink | None = None
        """Set by the kernel's tracing; models test it for None before building fields."""
        self.lost_msis: list[tuple[int, int]] = []
        self.functions: dict[PciAddr, PciFunction] = {}
        self.iommus: dict[str, IommuModel] = {}
        self._iommu_info: list[tuple[IommuUnitInfo, IommuModel]] = []
        self._static: list[_Region] = []
        self._regions: list[_Region] = []
        self._starts: list[int] = []
        self._decoded: dict[int, _Region] = {}
        """Addresses accessed before -> the region that decodes them (cleared whenever
        the decoder is rebuilt): a register written per invalidation is one dict read."""
        self._iommu_for: dict[PciAddr, IommuModel | None] = {}

        for dspec in spec.devices:
            factory: DeviceFactory = self.kinds.device_factory(dspec.kind)
            fn = factory(dspec.bdf, dspec.config)
            fn.machine = self
            self.functions[dspec.bdf] = fn
        self._assign_bars()

        infos: list[IommuUnitInfo] = []
        next_base = IOMMU_WINDOW_BASE
        for ispec in spec.iommus:
            ifactory: IommuFactory = self.kinds.iommu_factory(ispec.kind)
            unit = ifactory(ispec.name, ispec.config)
            base = ispec.base if ispec.base is not None else next_base
            next_base = max(next_base, base + max(unit.register_size, 0x1000))
            unit.attach(self, base)
            self.iommus[ispec.name] = unit
            info = IommuUnitInfo(
                table=unit.table,
                name=ispec.name,
                register_base=base,
                register_size=unit.register_size,
                include_pci_all=ispec.scope is None,
                device_scope=ispec.scope or (),
            )
            infos.append(info)
            self._iommu_info.append((info, unit))
            self._static.append(
                _Region(base, base + unit.register_size, unit.mmio_read, unit.mmio_write, unit)
            )
        # Units with explicit scope are matched before the INCLUDE_PCI_ALL unit (as DMAR).
        self._iommu_info.sort(key=lambda iu: iu[0].include_pci_all)
        buses = sorted({(a.segment, a.bus) for a in self.functions} | {(0, 0)})
        self.firmware = FirmwareTables(
            ram_size=spec.ram_size,
            pci_buses=tuple(buses),
            iommus=tuple(infos),
            host_address_width=spec.dmar.host_address_width,
            tables=tuple(sorted({i.table for i in infos})),
            external_facing=tuple(d.bdf for d in spec.devices if d.external),
            pci_windows=tuple(
                (seg, MMIO_WINDOW_BASE, MMIO_WINDOW_END - 1)
                for seg in sorted({s for s, _ in buses})
            ),
            rmrrs=spec.dmar.rmrrs,
            atsrs=spec.dmar.atsrs,
            satcs=spec.dmar.satcs,
            reserved_memory=spec.dmar.reserved_memory(spec.ram_layout),
            ram_ranges=self.memory.ranges,
        )
        self.remap_bars()

    # -- layout ---------------------------------------------------------------
    def _assign_bars(self) -> None:
        """What firmware does at boot: give every BAR an address in the MMIO window."""
        cursor = MMIO_WINDOW_BASE
        for addr in sorted(self.functions):
            fn = self.functions[addr]
            for bar in sorted(fn.bars.values(), key=lambda b: -b.size):
                cursor = (cursor + bar.size - 1) & ~(bar.size - 1)
                if cursor + bar.size > MMIO_WINDOW_END:
                    raise ValueError(f"machine.devices: BARs of {addr} do not fit the MMIO window")
                off = 0x10 + 4 * bar.index
                fn.config[off : off + 4] = (
                    (cursor & 0xFFFF_FFF0)
                    | (int.from_bytes(fn.config[off : off + 4], "little") & 0xF)
                ).to_bytes(4, "little")
                if bar.is64:
                    fn.config[off + 4 : off + 8] = (cursor >> 32).to_bytes(4, "little")
                cursor += bar.size

    def remap_bars(self) -> None:
        """Rebuild the address decoder after a BAR or command-register change."""
        regions = list(self._static)
        for fn in self.functions.values():
            if not fn.memory_enabled:
                continue
            for bar in fn.bars.values():
                base = fn.bar_base(bar.index)
                if base == 0:
                    continue
                regions.append(
                    _Region(
                        base,
                        base + bar.size,
                        _bar_reader(fn, bar.index, base),
                        _bar_writer(fn, bar.index, base),
                        fn,
                        bar.index,
                    )
                )
        regions.sort(key=lambda r: r.base)
        self._regions = regions
        self._starts = [r.base for r in regions]
        self._decoded = {}

    def _find(self, addr: int) -> _Region | None:
        """The region decoding ``addr`` (remembered in ``_decoded``), or None."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            r = self._regions[i]
            if addr < r.end:
                if len(self._decoded) >= _DECODED_MAX:
                    self._decoded.clear()
                self._decoded[addr] = r
                return r
        return None

    # -- Platform: MMIO -------------------------------------------------------
    @property
    def master_aborts(self) -> Sequence[MasterAbort]:
        return self._master_aborts

    def mmio_read(self, addr: int, size: int) -> int:
        r = self._decoded.get(addr) or self._find(addr)
        if r is None or addr + size > r.end:
            self._master_aborts.append(MasterAbort(addr, size, False, 0))
            return (1 << (8 * size)) - 1
        return r.read(addr - r.base, size)

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        r = self._decoded.get(addr) or self._find(addr)
        if r is None or addr + size > r.end:
            self._master_aborts.append(MasterAbort(addr, size, True, value))
            return
        r.write(addr - r.base, size, value & ((1 << (8 * size)) - 1))

    # -- Platform: config space -------------------------------------------------
    def pci_config_read(self, addr: PciAddr, offset: int, size: int) -> int:
        fn = self.functions.get(addr)
        if fn is None:
            return (1 << (8 * size)) - 1
        return fn.config_read(offset, size)

    def pci_config_write(self, addr: PciAddr, offset: int, size: int, value: int) -> None:
        fn = self.functions.get(addr)
        if fn is not None:
            fn.config_write(offset, size, value)

    # -- Platform: interrupts ----------------------------------------------------
    def set_msi_sink(self, sink: MsiSink) -> None:
        self._msi_sink = sink

    def set_hw_trace_sink(self, sink: HwTraceSink | None) -> None:
        self.hw_trace = sink

    def set_finding_sink(self, sink: FindingSink | None) -> None:
        self.finding_sink = sink

    def set_write_origin(self, origin: Callable[[], CallChain] | None) -> None:
        self.memory.write_origin = origin

    def report_finding(self, finding: Finding) -> None:
        """A model's finding goes to the kernel's sink (if one is set)."""
        if self.finding_sink is not None:
            self.finding_sink(finding)

    def emit(self, name: str, **fields: object) -> None:
        """Report a hardware event (``hw_vtd:fault`` ...). Callers on hot paths
        should check ``machine.hw_trace is not None`` first."""
        if self.hw_trace is not None:
            self.hw_trace(name, self.clock.now, fields)

    def msi(self, address: int, data: int) -> None:
        """The interrupt controller receives a compatibility-format message (from an
        IOMMU's own event registers, a remapping unit, or a device no IOMMU covers)."""
        if self._msi_sink is None:
            self.lost_msis.append((address, data))
            return
        self._msi_sink(address, data)

    # -- Platform: CPU instructions --------------------------------------------------
    def _portal(self, addr: int, data: bytes) -> tuple[PciFunction, int, int] | None:
        r = self._find(addr)
        if len(data) != 64 or addr % 64 or r is None or not isinstance(r.owner, PciFunction):
            self._master_aborts.append(MasterAbort(addr, len(data), True, 0))
            return None
        return r.owner, r.bar, addr - r.base

    def movdir64b(self, addr: int, data: bytes) -> None:
        target = self._portal(addr, data)
        if target is not None:
            fn, bar, off = target
            fn.portal_write(bar, off, bytes(data), False)

    def enqcmds(self, addr: int, data: bytes) -> bool:
        target = self._portal(addr, data)
        if target is None:
            return False
        fn, bar, off = target
        return fn.portal_write(bar, off, bytes(data), True)

    def enqcmd(self, addr: int, data: bytes, pasid: int) -> bool:
        if len(data) != 64:
            return self.enqcmds(addr, data)
        dw0 = int.from_bytes(data[0:4], "little")
        dw0 = (dw0 & 0x7FF0_0000 & ~(1 << 31)) | (pasid & 0xFFFFF)
        return self.enqcmds(addr, dw0.to_bytes(4, "little") + bytes(data[4:]))

    def interrupt_request(self, addr: PciAddr, msg_addr: int, data: int) -> DmaFault | None:
        """A naturally aligned DWORD write without PASID to the interrupt window from
        ``addr``: an interrupt request (VT-d spec 5.1), never memory. The IOMMU unit
        that owns the requester handles it when it models interrupt requests (VT-d:
        compatibility format or remapped, :mod:`hw.vtd.irq_remap`); otherwise the
        message goes to the interrupt controller as it is."""
        unit = self.iommu_for(addr)
        handler = getattr(unit, "interrupt_request", None)
        if handler is not None:
            result: DmaFault | None = handler(addr.rid, msg_addr, data)
            return result
        self.msi(msg_addr, data)
        return None

    def _interrupt_window(
        self, addr: PciAddr, unit: IommuModel | None, iova: int, size: int, write: bool
    ) -> DmaResult:
        """A request without PASID that reaches the interrupt window and is not an
        interrupt request (a read, or a write that is not an aligned DWORD): the part
        below the window is translated as usual; at the window the access stops with
        the unit's fault (VT-d: reason 0x29) or a master abort."""
        runs: tuple[tuple[int, int], ...] = ()
        if iova < INTERRUPT_WINDOW_BASE:
            head = self.dma_translate(addr, None, False, iova, INTERRUPT_WINDOW_BASE - iova, write)
            if head.fault is not None:
                return head
            runs = head.runs
        at = max(iova, INTERRUPT_WINDOW_BASE)
        handler = getattr(unit, "interrupt_window_fault", None)
        if handler is not None:
            fault: DmaFault = handler(addr.rid, at, write)
        else:
            fault = DmaFault(at, DMA_FAULT_BUS, write, "interrupt window")
        return DmaResult(runs, fault)

    # -- device-side DMA --------------------------------------------------------------
    def iommu_for(self, addr: PciAddr) -> IommuModel | None:
        try:
            return self._iommu_for[addr]
        except KeyError:
            unit = next((u for info, u in self._iommu_info if info.covers(addr)), None)
            self._iommu_for[addr] = unit
            return unit

    def dma_translate(
        self, addr: PciAddr, pasid: int | None, priv: bool, iova: int, size: int, write: bool
    ) -> DmaResult:
        unit = self.iommu_for(addr)
        if pasid is None and iova < INTERRUPT_WINDOW_END and iova + size > INTERRUPT_WINDOW_BASE:
            return self._interrupt_window(addr, unit, iova, size, write)
        if unit is not None:
            res = unit.translate(addr.rid, pasid, priv, iova, size, write)
            return clip_to_ram(self.memory, iova, res, write) if self._holes else res
        ram = self.memory.size
        if 0 <= iova and iova + size <= ram and not self._holes:
            return DmaResult(((iova, size),))
        good = self.memory.ram_run(iova, size)
        if good == size:
            return DmaResult(((iova, size),))
        runs = ((iova, good),) if good else ()
        return DmaResult(runs, DmaFault(iova + good, DMA_FAULT_BUS, write, "outside RAM"))


def clip_to_ram(memory: Memory, addr: int, res: DmaResult, write: bool) -> DmaResult:
    """Cut a translated access at its first byte that is not RAM (a hole, or above
    the top): the master abort the memory controller gives an access there."""
    done = 0
    for i, (pa, n) in enumerate(res.runs):
        good = memory.ram_run(pa, n)
        if good < n:
            kept = res.runs[:i] + (((pa, good),) if good else ())
            return DmaResult(
                kept, DmaFault(addr + done + good, DMA_FAULT_BUS, write, "outside RAM")
            )
        done += n
    return res


def _bar_reader(fn: PciFunction, bar: int, base: int) -> Callable[[int, int], int]:
    def read(offset: int, size: int) -> int:
        return fn.mmio_read(bar, offset, size)

    return read


def _bar_writer(fn: PciFunction, bar: int, base: int) -> Callable[[int, int, int], None]:
    def write(offset: int, size: int, value: int) -> None:
        fn.mmio_write(bar, offset, size, value)

    return write


def build_machine(
    description: MachineSpec | Mapping[str, Any], kinds: HwKinds | None = None
) -> Machine:
    """A machine from a spec or a description dict, with ``kinds`` (default: discovered)."""
    known = discover() if kinds is None else kinds
    spec = (
        description
        if isinstance(description, MachineSpec)
        else MachineSpec.from_dict(description, known)
    )
    return Machine(spec, known)
