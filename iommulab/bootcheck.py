"""What the command line checks around a boot: ``--modules`` names that exist, and
on stderr the kernel's complaints about its command line and the hardware kinds
the machine skipped.

Linux only logs an unknown parameter or a tracepoint pattern that matched nothing;
a user at a terminal reading the demo's report would miss it, so every command
that boots also says it on stderr (the dmesg text stays as Linux prints it).
"""

from __future__ import annotations

import sys

from kernel.boot import Kernel
from kernel.plugin import make_plugin_manager


def known_modules() -> list[str]:
    """Names ``--modules`` accepts: every kernel module the plugins offer."""
    return sorted({m.name for m in make_plugin_manager().hooks.modules()})


def modules_arg(text: str | None) -> list[str] | None:
    """``--modules a,b`` as a list (None = all); an unknown name is a ``ValueError``
    that lists the known ones."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = known_modules()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"--modules: unknown kernel module(s) {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return names


def warn_cmdline(k: Kernel) -> None:
    """Repeat what boot said about the command line on stderr, after the hardware
    kinds the machine had to skip (broken ``iommulab.hw`` entry points)."""
    problems: tuple[str, ...] = getattr(k.machine, "hw_problems", ())
    for problem in (*problems, *k.cmdline_problems):
        print(f"iommulab: warning: {problem}", file=sys.stderr)
