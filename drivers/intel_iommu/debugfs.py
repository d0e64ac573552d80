"""Debug views (drivers/iommu/intel/debugfs.c): ``iommulab dump vtd``.

``text`` renders ``dmar_translation_struct`` (one line per present PASID entry, or per
context entry in legacy mode: B.D.F, root entry, context entry, PASID, PASID entry
words 2:1:0). ``--device BDF`` keeps one device and adds its page tables in the
layout of the per-device ``domain_translation_struct`` file; ``--pasid N`` keeps one
PASID. ``dot`` renders the same structures as a Graphviz graph: root table ->
context entries -> PASID directory -> PASID entries -> page tables -> pages, with
tables shared by several entries drawn once (a domain attached at the RID and at a
PASID shows as two edges into one page table).

Everything is read from RAM through the kernel's direct map, as the debugfs code
reads it through ``phys_to_virt``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from attrs import frozen

from drivers.intel_iommu import iommu_regs as ir
from drivers.intel_iommu.dmar import dmar_state
from drivers.intel_iommu.irq_remapping import ir_translation_struct
from drivers.intel_iommu.pasid import (
    PASID_ENTRY_PGTT_FL_ONLY,
    PASID_ENTRY_PGTT_PT,
    PASID_PDE_SHIFT,
    PASID_TBL_ENTRIES,
    pasid_entry_read,
    pasid_pte_get_pgtt,
)
from drivers.intel_iommu.structs import IntelIommu
from kernel.debugfs import DumpTarget
from kernel.mm import phys_to_virt, read64
from kernel.pci import pci_get_domain_bus_and_slot


@frozen
class TblWalk:
    """``struct tbl_walk``: one row of ``dmar_translation_struct``."""

    bus: int
    devfn: int
    root: tuple[int, int]
    context: tuple[int, int]
    pasid: int
    entry: tuple[int, ...]

    @property
    def bdf(self) -> str:
        return f"{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7:x}"


def _r64(phys: int) -> int:
    return read64(phys_to_virt(phys))


def _parse_bdf(text: str) -> tuple[int, int]:
    parts = text.split(":")
    try:
        bus = int(parts[-2], 16)
        dev_s, fn_s = parts[-1].split(".")
        return bus, (int(dev_s, 16) << 3) | int(fn_s, 16)
    except (ValueError, IndexError):
        raise ValueError(f"bad device {text!r}: expected [SSSS:]BB:DD.F") from None


def _translation_enabled(iommu: IntelIommu) -> bool:
    return bool(iommu.regs.readl(ir.DMAR_GSTS_REG) & ir.DMA_GSTS_TES)


def tbl_walk(iommu: IntelIommu) -> Iterator[TblWalk]:
    """``root_tbl_walk``/``ctx_tbl_walk``/``pasid_dir_walk``: every present entry."""
    sm = bool(iommu.regs.readq(ir.DMAR_RTADDR_REG) & ir.DMA_RTADDR_SMT)
    root_phys = iommu.root_entry - phys_to_virt(0)
    for bus in range(256):
        rlo = _r64(root_phys + 16 * bus)
        rhi = _r64(root_phys + 16 * bus + 8)
        for devfn in range(256):
            half = rhi if sm and devfn >= 0x80 else rlo
            if not half & 1:
                continue
            stride = 32 if sm else 16
            ctx = (half & ir.VTD_PAGE_MASK) + ((devfn & 0x7F) if sm else devfn) * stride
            clo, chi = _r64(ctx), _r64(ctx + 8)
            if not clo & 1:
                continue
            if not sm:
                yield TblWalk(bus, devfn, (rhi, rlo), (chi, clo), -1, (0, 0, 0))
                continue
            dir_phys = clo & ir.VTD_PAGE_MASK
            dir_size = 1 << (((clo >> 9) & 7) + 7)
            for dir_idx in range(dir_size):
                dent = _r64(dir_phys + 8 * dir_idx)
                if not dent & 1:
                    continue
                table = dent & ir.VTD_PAGE_MASK
                for i in range(PASID_TBL_ENTRIES):
                    val = pasid_entry_read(phys_to_virt(table + 64 * i))
                    if val[0] & 1:
                        pasid = (dir_idx << PASID_PDE_SHIFT) + i
                        yield TblWalk(bus, devfn, (rhi, rlo), (chi, clo), pasid, tuple(val))


def _rows(iommu: IntelIommu, device: str | None, pasid: int | None) -> list[TblWalk]:
    want = _parse_bdf(device) if device else None
    return [
        w
        for w in tbl_walk(iommu)
        if (want is None or (w.bus, w.devfn) == want) and (pasid is None or w.pasid == pasid)
    ]


def _pgtable_root(w: TblWalk) -> tuple[int, int] | None:
    """(table address, levels) of a row's page table; None for pass-through."""
    if w.pasid < 0:
        lo, hi = w.context[1], w.context[0]
        if (lo >> 2) & 3 == ir.CONTEXT_TT_PASS_THROUGH:
            return None
        return lo & ir.VTD_PAGE_MASK, ir.agaw_to_level(hi & 7)
    pgtt = pasid_pte_get_pgtt(w.entry[0])
    if pgtt == PASID_ENTRY_PGTT_PT:
        return None
    if pgtt == PASID_ENTRY_PGTT_FL_ONLY:
        return w.entry[2] & ir.VTD_PAGE_MASK, 5 if w.entry[2] & (1 << 2) else 4
    return w.entry[0] & ir.VTD_PAGE_MASK, ir.agaw_to_level((w.entry[0] >> 2) & 7)


def pgtable_walk_level(table: int, level: int, start: int, path: list[int], out: list[str]) -> None:
    """``pgtable_walk_level``: one line per leaf with the entries on its path."""
    size = 1 << (ir.VTD_PAGE_SHIFT + 9 * (level - 1))
    for i in range(512):
        pte = _r64(table + 8 * i)
        if not pte & 3:
            continue
        path[level] = pte
        iova = start + i * size
        if pte & ir.DMA_PTE_LARGE_PAGE or level == 1:
            out.append(
                f"0x{iova >> ir.VTD_PAGE_SHIFT:013x} |\t0x{path[5]:016x}\t0x{path[4]:016x}\t"
                f"0x{path[3]:016x}\t0x{path[2]:016x}\t0x{path[1]:016x}"
            )
        else:
            pgtable_walk_level(pte & ir.DMA_PTE_ADDR_MASK, level - 1, iova, path, out)
        path[level] = 0


def dmar_translation_struct(device: str | None = None, pasid: int | None = None) -> str:
    """``dmar_translation_struct_show``, filtered; with ``device`` also the page tables."""
    out: list[str] = []
    for iommu in dmar_state().units:
        if not _translation_enabled(iommu):
            out.append(f"DMA Remapping is not enabled on {iommu.name}")
            continue
        root_phys = iommu.root_entry - phys_to_virt(0)
        out.append(f"IOMMU {iommu.name}: Root Table Address: {root_phys:#x}")
        out.append("B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry")
        rows = _rows(iommu, device, pasid)
        for w in rows:
            e = w.entry
            out.append(
                f"{w.bdf}\t0x{w.root[0]:016x}:0x{w.root[1]:016x}\t"
                f"0x{w.context[0]:016x}:0x{w.context[1]:016x}\t"
                f"{w.pasid:<6d}\t0x{e[2]:016x}:0x{e[1]:016x}:0x{e[0]:016x}"
            )
        if device:
            for w in rows:
                out.append("")
                where = f"PASID {w.pasid}" if w.pasid >= 0 else "RID"
                root = _pgtable_root(w)
                if root is None:
                    out.append(f"Device {w.bdf} {where}: pass-through")
                    continue
                table, levels = root
                out.append(f"Device {w.bdf} {where} @{table:#x}")
                out.append("IOVA_PFN\t\tPML5E\t\t\tPML4E\t\t\tPDPE\t\t\tPDE\t\t\tPTE")
                pgtable_walk_level(table, levels, 0, [0] * 6, out)
        out.append("")
    return "\n".join(out)


def _dot_tables(
    table: int, level: int, edges: list[str], nodes: dict[str, str], seen: set[int]
) -> str:
    name = f"pt_{table:x}"
    if table in seen:
        return name
    seen.add(table)
    present = 0
    for i in range(512):
        pte = _r64(table + 8 * i)
        if not pte & 3:
            continue
        present += 1
        if pte & ir.DMA_PTE_LARGE_PAGE or level == 1:
            size = {1: "4K", 2: "2M", 3: "1G"}.get(level, "?")
            page = f"page_{pte & ir.DMA_PTE_ADDR_MASK:x}"
            nodes[page] = f"page {pte & ir.DMA_PTE_ADDR_MASK:#x} ({size})"
            edges.append(f'  {name} -> {page} [label="{i}"];')
        else:
            child = _dot_tables(pte & ir.DMA_PTE_ADDR_MASK, level - 1, edges, nodes, seen)
            edges.append(f'  {name} -> {child} [label="{i}"];')
    nodes[name] = f"L{level} table {table:#x}|{present} present"
    return name


def dmar_translation_dot(device: str | None = None, pasid: int | None = None) -> str:
    """The structures as a Graphviz DOT digraph."""
    nodes: dict[str, str] = {}
    edges: list[str] = []
    seen: set[int] = set()
    for iommu in dmar_state().units:
        root = f"{iommu.name}_root"
        root_phys = iommu.root_entry - phys_to_virt(0)
        nodes[root] = f"{iommu.name} root table|{root_phys:#x}"
        for w in _rows(iommu, device, pasid):
            ctx = f"ctx_{iommu.name}_{w.bus:02x}_{w.devfn:02x}"
            nodes[ctx] = f"context {w.bdf}|lo {w.context[1]:#x}|hi {w.context[0]:#x}"
            edges.append(f'  {root} -> {ctx} [label="bus {w.bus:02x}"];')
            src = ctx
            if w.pasid >= 0:
                pdir = f"pdir_{w.context[1] & ir.VTD_PAGE_MASK:x}"
                nodes[pdir] = f"PASID directory|{w.context[1] & ir.VTD_PAGE_MASK:#x}"
                edges.append(f"  {ctx} -> {pdir};")
                pe = f"pasid_{iommu.name}_{w.bus:02x}_{w.devfn:02x}_{w.pasid}"
                did = w.entry[1] & 0xFFFF
                pgtt = pasid_pte_get_pgtt(w.entry[0])
                nodes[pe] = f"PASID {w.pasid}|PGTT {pgtt}|DID {did}"
                edges.append(f'  {pdir} -> {pe} [label="dir[{w.pasid >> PASID_PDE_SHIFT}]"];')
                src = pe
            pt = _pgtable_root(w)
            if pt is None:
                nodes["passthrough"] = "pass-through"
                edges.append(f"  {src} -> passthrough;")
                continue
            top = _dot_tables(pt[0], pt[1], edges, nodes, seen)
            edges.append(f"  {src} -> {top};")
    lines = ["digraph vtd {", "  rankdir=LR;", '  node [shape=record, fontname="monospace"];']
    lines += [f'  {n} [label="{label}"];' for n, label in nodes.items()]
    lines += list(dict.fromkeys(edges))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _check_selection(device: str | None, pasid: int | None) -> None:
    """A ``--device``/``--pasid`` that selects nothing is an error, as opening the
    per-device debugfs file of a device that does not exist fails with -ENOENT
    (Linux creates ``<bdf>/domain_translation_struct`` only for probed devices)."""
    if device is None and pasid is None:
        return
    for iommu in dmar_state().units:
        if _translation_enabled(iommu) and _rows(iommu, device, pasid):
            return
    if device is not None:
        bus, devfn = _parse_bdf(device)
        if pci_get_domain_bus_and_slot(0, bus, devfn) is None:
            raise ValueError(f"--device {device}: no such PCI device")
        if pasid is None:
            raise ValueError(f"--device {device}: no context entry (not translated by VT-d)")
    on = f" of device {device}" if device is not None else ""
    raise ValueError(f"--pasid {pasid}: no PASID table entry{on}")


def ir_translation_struct_show() -> str:
    """debugfs ``ir_translation_struct``: every unit's remapped interrupt entries
    (``intel_iommu`` has no posted-interrupt entries to list after them)."""
    lines: list[str] = []
    for iommu in dmar_state().units:
        lines += ir_translation_struct(iommu)
    return "\n".join(lines) + "\n" if lines else "no interrupt remapping unit\n"


def render(args: argparse.Namespace) -> str:
    if getattr(args, "irq", False):
        return ir_translation_struct_show()
    device = getattr(args, "device", None)
    pasid = getattr(args, "pasid", None)
    _check_selection(device, pasid)
    if getattr(args, "format", "text") == "dot":
        return dmar_translation_dot(device, pasid)
    return dmar_translation_struct(device, pasid)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pasid", type=int, help="only this PASID")
    p.add_argument("--device", help="only this device (BB:DD.F); adds its page tables")
    p.add_argument(
        "--irq",
        action="store_true",
        help="the interrupt remapping table instead (debugfs ir_translation_struct)",
    )


DUMP_TARGET = DumpTarget(
    "vtd",
    "VT-d root/context/PASID tables and page tables (debugfs dmar_translation_struct)",
    render,
    add_arguments,
    ("text", "dot"),
)
