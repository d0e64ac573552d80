"""Hardware-model dumps: the CLI's fallbacks, the cache dumps, text-tree → DOT.

``iommulab dump vtd`` and ``dump dsa`` are the drivers' views (the Intel VT-d and
idxd drivers contribute them through ``iommulab_dump_targets``). When the booted
plugins provide no such target, the CLI uses the hardware model's own decode
instead — ``hw.vtd`` ``VtdUnit.dump()`` (the structures reachable from the latched
root pointer) and the DSA model's registers and WQ state — and says so on stderr.

``dump vtd --caches`` and ``dump smmuv3 --caches`` show what no driver can see: the
entries the units' caches hold, with their tags (:func:`hw.vtd.dump.dump_caches`,
:func:`hw.smmuv3.dump.dump_caches`); ``--caches iotlb`` picks one cache and
``--unit dmar0`` one unit. :func:`cache_dumps` is what the pytest plugin attaches
to a failure.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import attrs

from hw.dsa import registers as dsa_regs
from hw.dsa.device import DsaDevice
from hw.smmuv3 import dump as smmuv3_dump
from hw.smmuv3.unit import Smmuv3Unit
from hw.vtd import dump as vtd_dump
from hw.vtd.unit import VtdUnit
from kernel.boot import Kernel
from kernel.debugfs import DumpTarget

_STATES = {
    dsa_regs.GENSTS_DISABLED: "disabled",
    dsa_regs.GENSTS_ENABLED: "enabled",
    dsa_regs.GENSTS_DRAIN: "drain",
    dsa_regs.GENSTS_HALTED: "halted",
}


def _kernel(args: argparse.Namespace) -> Kernel:
    k: Kernel = args.kernel
    return k


def _machine(args: argparse.Namespace) -> Any:
    return _kernel(args).machine


def vtd_units(args: argparse.Namespace) -> list[VtdUnit]:
    units = getattr(_machine(args), "iommus", {}).values()
    return [u for u in units if isinstance(u, VtdUnit)]


def render_vtd_model(args: argparse.Namespace) -> str:
    units = vtd_units(args)
    if not units:
        return "no VT-d unit on this machine\n"
    if args.format == "dot":
        return tree_to_dot("\n".join(u.dump() for u in units), "vtd")
    out: list[str] = []
    for u in units:
        out.append(u.dump())
        stats = " ".join(f"{k}={v}" for k, v in attrs.asdict(u.stats).items())
        out.append(f"  stats: {stats}")
        out.extend(f"  programming error: {e}" for e in u.errors)
    return "\n".join(out) + "\n"


CACHE_DUMPS: dict[str, tuple[type, tuple[str, ...], Any]] = {
    "vtd": (VtdUnit, vtd_dump.CACHES, vtd_dump.dump_caches),
    "smmuv3": (Smmuv3Unit, smmuv3_dump.CACHES, smmuv3_dump.dump_caches),
}
"""Dump target -> (unit model class, its caches, the model's cache dump)."""


def render_caches(target: str, machine: Any, unit: str | None, cache: str | None) -> str:
    """The cache dump of ``target``'s units on ``machine`` (``unit`` only that one;
    ``cache`` None or ``all``: every cache). A unit or cache that does not exist is
    a ValueError naming the ones that do."""
    kind, caches, dump = CACHE_DUMPS[target]
    units = {n: u for n, u in getattr(machine, "iommus", {}).items() if isinstance(u, kind)}
    if cache not in (None, "all") and cache not in caches:
        raise ValueError(f"--caches {cache}: no such {target} cache (caches: {', '.join(caches)})")
    if unit is not None:
        if unit not in units:
            known = ", ".join(sorted(units)) or "none"
            raise ValueError(f"--unit {unit}: no such {target} unit (units: {known})")
        units = {unit: units[unit]}
    if not units:
        raise ValueError(f"no {target} unit on this machine")
    which = None if cache in (None, "all") else cache
    return "\n".join(dump(u, which) for _, u in sorted(units.items())) + "\n"


def cache_dumps(machine: Any) -> str:
    """Every IOMMU unit's caches, for a failure report (empty without such units)."""
    out = [
        render_caches(target, machine, None, None)
        for target, (kind, _, _) in CACHE_DUMPS.items()
        if any(isinstance(u, kind) for u in getattr(machine, "iommus", {}).values())
    ]
    return "".join(out)


def render_dsa_model(args: argparse.Namespace) -> str:
    functions = getattr(_machine(args), "functions", {})
    devices = [(a, f) for a, f in sorted(functions.items(), key=lambda i: str(i[0]))]
    dsas = [(a, f) for a, f in devices if isinstance(f, DsaDevice)]
    if not dsas:
        return "no DSA device on this machine\n"
    out: list[str] = []
    for addr, dev in dsas:
        out.append(
            f"{addr} dsa: state={_STATES.get(dev.state, dev.state)} "
            f"wqs={len(dev.wqs)} engines={dev.cfg.num_engines} swerr_count={dev.swerr_count}"
        )
        for name in ("GENCAP", "WQCAP", "GRPCAP", "ENGCAP", "GENCFG", "GENCTRL", "GENSTS"):
            out.append(f"  {name:<8} {dev.regs[name]:#018x}")
        out.append(f"  SWERR    {dev.regs['SWERR0']:#018x} {dev.regs['SWERR1']:#018x}")
        for wq in dev.wqs:
            if not wq.enabled:
                continue
            mode = "dedicated" if wq.dedicated else "shared"
            pasid = f"pasid={wq.pasid}" if wq.pasid_en else "no-pasid"
            out.append(
                f"  wq{wq.index}: {mode} size={wq.size} group={wq.group} {pasid} "
                f"priv={int(wq.priv)} pending={wq.occupancy}"
            )
        for g, engines in sorted(dev.group_engines.items()):
            out.append(f"  group{g}: engines {engines}")
    return "\n".join(out) + "\n"


VTD_MODEL = DumpTarget(
    "vtd",
    "VT-d translation structures (hardware model decode until the driver provides its view)",
    render_vtd_model,
    formats=("text", "dot"),
)
DSA_MODEL = DumpTarget(
    "dsa",
    "DSA registers, WQs and groups (hardware model state until the driver provides its view)",
    render_dsa_model,
)
FALLBACKS: dict[str, tuple[DumpTarget, str]] = {
    "vtd": (
        VTD_MODEL,
        "note: no plugin provides the 'vtd' dump target (drivers/intel_iommu does once it "
        "lands); showing the VT-d hardware model's own decode (hw.vtd VtdUnit.dump)",
    ),
    "dsa": (
        DSA_MODEL,
        "note: no plugin provides the 'dsa' dump target (drivers/idxd does once it lands); "
        "showing the DSA hardware model's registers and WQ state",
    ),
}

_LEAF = re.compile(r"^(?P<iova>0x[0-9a-f]+) -> (?P<phys>0x[0-9a-f]+) (?P<rest>.*)$")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tree_to_dot(text: str, name: str) -> str:
    """An indented text tree (each level indented deeper than its parent) as a
    left-to-right DOT digraph; ``IOVA -> PHYS SIZE PERMS`` leaves become edges to
    physical-page nodes labelled with the IOVA."""
    lines = [
        f"digraph {_quote(name)} {{",
        "  rankdir=LR;",
        "  node [shape=box, fontname=monospace];",
    ]
    stack: list[tuple[int, str]] = []
    pages: dict[str, str] = {}
    for i, raw in enumerate(text.splitlines()):
        if not raw.strip():
            continue
        depth = len(raw) - len(raw.lstrip())
        body = raw.strip()
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else None
        leaf = _LEAF.match(body)
        if leaf and parent is not None:
            phys = leaf["phys"]
            if phys not in pages:
                pages[phys] = f"p{len(pages)}"
                lines.append(f"  {pages[phys]} [shape=ellipse, label={_quote('page ' + phys)}];")
            label = f"{leaf['iova']} {leaf['rest']}"
            lines.append(f"  {parent} -> {pages[phys]} [label={_quote(label)}];")
            continue
        node = f"n{i}"
        lines.append(f"  {node} [label={_quote(body)}];")
        if parent is not None:
            lines.append(f"  {parent} -> {node};")
        stack.append((depth, node))
    lines.append("}")
    return "\n".join(lines) + "\n"
