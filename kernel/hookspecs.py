"""Hook specifications of iommulab (DESIGN §4): the control plane only.

Every hook name starts with ``iommulab_``; call them with keyword arguments only,
through the typed facade :class:`kernel.plugin.Hooks`. The CLI's hooks live here
too so that one plugin manager serves the whole tool.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

PROJECT = "iommulab"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

if TYPE_CHECKING:
    from kernel.debugfs import DumpTarget
    from kernel.module import IommuDriverInfo, KernelModule


class KernelSpecs:
    """The hook namespace registered with the plugin manager."""

    @hookspec
    def iommulab_modules(self) -> Sequence[KernelModule]:
        """Return the kernel modules this plugin provides (``module_init``/``module_exit``).

        **Example:** ``return [KernelModule("idxd", init=idxd_init_module, exit=...)]``
        """
        return ()

    @hookspec
    def iommulab_iommu_drivers(self) -> Sequence[IommuDriverInfo]:
        """Return the vendor IOMMU drivers this plugin provides; each names the
        firmware table whose units it claims (``DMAR`` for VT-d, ``IORT`` for SMMUv3)."""
        return ()

    @hookspec
    def iommulab_add_subcommands(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        """Add ``iommulab`` CLI subcommands (``subparsers.add_parser(...)``); each parser
        sets ``func`` to a callable taking the parsed namespace and returning an exit code."""

    @hookspec
    def iommulab_dump_targets(self) -> Sequence[DumpTarget]:
        """Return debug views (``iommulab dump NAME``) this plugin provides, each
        rendering kernel or driver state like the debugfs file it mirrors."""
        return ()
