"""``iommulab demo`` / ``make demo``: the founding scenario.

Until the idxd driver runs the scenario (issue 7) the demo boots the machine and
prints what the kernel found. ``add_arguments`` and ``run`` are what the CLI calls.
"""

from __future__ import annotations

import argparse

from hw.machine import Machine
from iommulab.presets import load_machine_file, preset
from kernel.boot import boot


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Demo-specific options (the CLI adds --machine/--machine-file/--cmdline)."""


def run(args: argparse.Namespace) -> int:
    spec = load_machine_file(args.machine_file) if args.machine_file else preset(args.machine)
    k = boot(Machine(spec), args.cmdline)
    print(k.dmesg())
    k.shutdown()
    return 0
