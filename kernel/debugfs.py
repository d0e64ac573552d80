"""Debug views of kernel state (what ``/sys/kernel/debug/...`` files show).

A subsystem or driver contributes :class:`DumpTarget` descriptors through the
``iommulab_dump_targets`` hook; ``iommulab dump NAME`` renders one against the
running kernel. ``render`` returns text in the layout of the kernel's debugfs
file it mirrors (e.g. ``iommu/intel/dmar_translation_struct``) and may offer
other formats (``dot``) when asked.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from attrs import frozen


@frozen
class DumpTarget:
    name: str
    """``vtd``, ``pasid``, ``iommu-groups`` ... (the CLI's ``dump`` argument)."""
    help: str
    render: Callable[[argparse.Namespace], str]
    """Render from the current kernel; ``args`` carries the options added below."""
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    formats: tuple[str, ...] = ("text",)
