"""The ``iommulab`` command line (argparse; plugins add subcommands through the
``iommulab_add_subcommands`` hook)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hw.machine import Machine, MachineSpec
from iommulab import demo
from iommulab.presets import PRESETS, load_machine_file, preset
from kernel.boot import Kernel, boot
from kernel.plugin import make_plugin_manager


def machine_spec(args: argparse.Namespace) -> MachineSpec:
    if getattr(args, "machine_file", None):
        return load_machine_file(args.machine_file)
    return preset(args.machine)


def boot_from_args(args: argparse.Namespace) -> Kernel:
    modules = args.modules.split(",") if getattr(args, "modules", None) else None
    return boot(Machine(machine_spec(args)), args.cmdline, modules)


def _add_machine_args(p: argparse.ArgumentParser, default: str = "default") -> None:
    p.add_argument("--machine", default=default, choices=sorted(PRESETS), help="machine preset")
    p.add_argument("--machine-file", help="machine description (.toml or .json)")
    p.add_argument("--cmdline", default="", help="kernel command line")
    p.add_argument("--modules", help="comma-separated kernel modules to load (default: all)")


def cmd_boot(args: argparse.Namespace) -> int:
    k = boot_from_args(args)
    print(k.dmesg())
    k.shutdown()
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    pm = make_plugin_manager()
    print(f"{'module':<20} {'origin':<12} distribution")
    for p in pm.report.loaded:
        dist = f"{p.distribution} {p.version}".strip() or "-"
        print(f"{p.name:<20} {p.origin:<12} {dist}")
    for name, err in pm.report.failed:
        print(f"{name:<20} {'FAILED':<12} {err}")
    for name in pm.report.blocked:
        print(f"{name:<20} {'blocked':<12} -")
    drivers = pm.hooks.iommu_drivers()
    for d in drivers:
        print(f"iommu driver {d.name!r} claims firmware table {d.table}")
    mods = pm.hooks.modules()
    for m in mods:
        print(f"kernel module {m.name!r} (init level {m.level.name}): {m.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iommulab",
        description="Linux IOMMU/DMA layering over register-accurate VT-d and DSA models",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("boot", help="boot a machine and print the kernel log")
    _add_machine_args(p)
    p.set_defaults(func=cmd_boot)
    p = sub.add_parser("plugins", help="list kernel modules and where they come from")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("demo", help="run the founding scenario")
    _add_machine_args(p)
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)
    make_plugin_manager().hooks.add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except ValueError as exc:
        print(f"iommulab: error: {exc}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
