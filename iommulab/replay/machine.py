"""Replay a trace into a machine: drive the recorded DMA API calls through the model.

:func:`machine_spec_for` builds a machine from the devices the trace names — one VT-d
unit covering all PCI functions, and an ``edu`` device (the model's generic PCI DMA
master) at each traced BDF, since the model has no e1000 — or takes a machine file and
adds the traced devices it lacks. :func:`rebuild` boots the model on it and calls
``dma_map_page_attrs``, ``dma_unmap_page_attrs``, ``dma_alloc_attrs``, ``dma_free_attrs``
and the ``dma_sync_*`` calls in trace order, each with the trace's device, physical
address, size and direction, up to ``until``. The model then holds the page tables,
IOTLB and context caches those calls leave, for any ``iommulab dump`` target.

Every map compares the model's IOVA with the one Linux chose; the first difference is
reported with its line. Later calls use the model's own address for the trace's
(unmaps follow the mapping they undo, whatever its address).

Not driven (counted and reported): scatterlists (``dma_unmap_sg`` names no DMA
address), resources, and calls whose physical address lies outside the machine's RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import define, field

from hw.bus import PciAddr
from hw.machine import Machine, MachineSpec
from iommulab.replay.events import (
    PAGE_SIZE,
    DmaAlloc,
    DmaFree,
    DmaMap,
    DmaMapSg,
    DmaSync,
    DmaUnmap,
    DmaUnmapSg,
    Event,
)
from kernel.boot import Kernel, boot
from kernel.dma import mapping
from kernel.mm import GFP_KERNEL, Page
from kernel.pci import PciDev, pci_enable_device, pci_get_devices, pci_set_master

_DIRS = {"BIDIRECTIONAL": 0, "TO_DEVICE": 1, "FROM_DEVICE": 2}
MIN_RAM = 256 << 20
MAX_RAM = 1 << 30
"""RAM the rebuilt machine gets at most; traced pages above it are not driven."""


def _bdf(name: str) -> PciAddr | None:
    try:
        return PciAddr.parse(name)
    except (ValueError, AttributeError):
        return None


def traced_devices(events: Sequence[Event]) -> list[str]:
    """PCI device names the ``dma:*`` events use, in first-use order."""
    seen: dict[str, None] = {}
    for e in events:
        dev = getattr(e, "device", None)
        traced = isinstance(e, DmaMap | DmaUnmap | DmaAlloc | DmaFree | DmaSync)
        if traced and dev and _bdf(dev) is not None:
            seen.setdefault(dev, None)
    return list(seen)


def machine_spec_for(events: Sequence[Event], base: MachineSpec | None = None) -> MachineSpec:
    """The machine to replay into: ``base`` (or one VT-d unit over all PCI functions)
    with an ``edu`` device at every traced BDF it lacks, and RAM covering every traced
    physical address."""
    top = max([e.phys_addr + e.size for e in events if isinstance(e, DmaMap)] + [MIN_RAM])
    ram = min(-(-top // (64 << 20)) * (64 << 20), MAX_RAM)
    doc: dict[str, Any] = {
        "name": base.name if base else "replay",
        "ram": max(ram, base.ram_size if base else 0),
        "iommus": [{"kind": "vtd", "name": "dmar0", "scope": "all"}],
        "devices": [],
    }
    if base is not None:
        doc["iommus"] = [
            {
                "kind": u.kind,
                "name": u.name,
                "scope": "all" if u.scope is None else [str(a) for a in u.scope],
                "config": dict(u.config),
            }
            for u in base.iommus
        ]
        doc["devices"] = [
            {"kind": d.kind, "bdf": str(d.bdf), "config": dict(d.config)} for d in base.devices
        ]
    have = {str(PciAddr.parse(d["bdf"])) for d in doc["devices"]}
    for name in traced_devices(events):
        addr = _bdf(name)
        if addr is not None and str(addr) not in have:
            doc["devices"].append({"kind": "edu", "bdf": str(addr)})
            have.add(str(addr))
    return MachineSpec.from_dict(doc)


@define
class Rebuild:
    """What driving the trace through the model did."""

    kernel: Kernel
    spec: MachineSpec
    driven: int = 0
    maps: int = 0
    same_iova: int = 0
    first_divergence: tuple[int, int, int] | None = None
    """(line, the trace's IOVA, the model's) of the first map where they differ."""
    skipped: dict[str, int] = field(factory=dict)
    failed: list[tuple[int, str]] = field(factory=list)
    until_line: int = 0

    def summary(self) -> str:
        share = f"{100 * self.same_iova / self.maps:.1f}%" if self.maps else "-"
        out = [
            f"rebuild: {self.driven} DMA API calls driven through the model on machine "
            f"{self.spec.name!r} ({len(self.spec.devices)} devices) to line {self.until_line}",
            f"rebuild: the model chose the trace's IOVA for {self.same_iova} of {self.maps} "
            f"maps ({share})",
        ]
        if self.first_divergence is not None:
            line, want, got = self.first_divergence
            out.append(f"rebuild: first divergence at line {line}: Linux {want:#x}, model {got:#x}")
        for what, n in sorted(self.skipped.items()):
            out.append(f"rebuild: not driven: {n} {what}")
        for line, why in self.failed:
            out.append(f"rebuild: line {line}: {why}")
        return "\n".join(out) + "\n"


def _pdev(devs: dict[str, PciDev], name: str) -> PciDev | None:
    dev = devs.get(name)
    if dev is not None and not dev.enable_cnt:
        pci_enable_device(dev)
        pci_set_master(dev)
    return dev


def rebuild(
    events: Sequence[Event],
    spec: MachineSpec,
    cmdline: str = "iommu.strict=1",
    until: int | None = None,
    extra_plugins: Sequence[tuple[str, object]] = (),
) -> Rebuild:
    """Boot the model on ``spec`` and drive the trace's DMA API calls (to ``until``)."""
    k = boot(Machine(spec), cmdline, extra_plugins=extra_plugins)
    r = Rebuild(k, spec)
    devs = {str(d.addr): d for d in pci_get_devices()}
    live: dict[tuple[str, int], tuple[int, int | None, int]] = {}
    ram = spec.ram_size

    def skip(what: str) -> None:
        r.skipped[what] = r.skipped.get(what, 0) + 1

    for e in events:
        if until is not None and e.line > until:
            break
        r.until_line = e.line
        if not isinstance(e, DmaMap | DmaUnmap | DmaAlloc | DmaFree | DmaSync):
            if isinstance(e, DmaMapSg | DmaUnmapSg):
                skip("scatterlist calls")
            continue
        dev = _pdev(devs, str(_bdf(e.device))) if _bdf(e.device) else None
        if dev is None:
            skip("calls for devices not on the machine")
            continue
        d = _DIRS.get(e.dir, 0)
        if isinstance(e, DmaMap):
            if e.event != "dma_map_page":
                skip("dma_map_resource calls")
                continue
            if e.phys_addr + e.size > ram:
                skip("maps outside the machine's RAM")
                continue
            got = mapping.dma_map_page_attrs(
                dev, Page(e.phys_addr // PAGE_SIZE), e.phys_addr % PAGE_SIZE, e.size, d
            )
            r.driven += 1
            # Whether the driver checked is not traced (an undecidable check): assume so.
            if mapping.dma_mapping_error(dev, got):
                r.failed.append((e.line, "the model's dma_map_page failed"))
                continue
            _compare(r, e.line, e.dma_addr, got)
            live[(e.device, e.dma_addr)] = (got, None, e.size)
        elif isinstance(e, DmaAlloc):
            if e.failed or e.event != "dma_alloc":
                skip(f"{e.event} calls")
                continue
            vaddr, handle = mapping.dma_alloc_attrs(dev, e.size, GFP_KERNEL)
            r.driven += 1
            if vaddr is None:
                r.failed.append((e.line, "the model's dma_alloc failed"))
                continue
            _compare(r, e.line, e.dma_addr, handle)
            live[(e.device, e.dma_addr)] = (handle, vaddr, e.size)
        elif isinstance(e, DmaSync):
            for addr, size in zip(e.dma_addrs, e.sizes, strict=False):
                base = _translate(live, e.device, addr)
                if base is None:
                    skip("syncs of addresses the model never mapped")
                    continue
                sync = (
                    mapping.dma_sync_single_for_cpu
                    if e.for_cpu
                    else mapping.dma_sync_single_for_device
                )
                sync(dev, base, size, d)
                r.driven += 1
        else:
            held = live.pop((e.device, e.dma_addr), None)
            if held is None:
                skip("unmaps of addresses the model never mapped")
                continue
            handle, vaddr, _ = held
            if isinstance(e, DmaFree):
                mapping.dma_free_attrs(dev, e.size, vaddr, handle)
            else:
                mapping.dma_unmap_page_attrs(dev, handle, e.size, d)
            r.driven += 1
    return r


def _compare(r: Rebuild, line: int, want: int, got: int) -> None:
    r.maps += 1
    if want == got:
        r.same_iova += 1
    elif r.first_divergence is None:
        r.first_divergence = (line, want, got)


def _translate(
    live: dict[tuple[str, int], tuple[int, int | None, int]], dev: str, addr: int
) -> int | None:
    """The model's address for the trace's ``addr`` inside one of ``dev``'s mappings."""
    for (d, start), (handle, _, size) in live.items():
        if d == dev and start <= addr < start + size:
            return handle + (addr - start)
    return None
