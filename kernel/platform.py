"""The booted kernel's handle on the machine (the only module holding a Platform).

Subsystems reach the hardware through :func:`platform`: the current kernel's
machine (:data:`kernel.context.current`).
"""

from __future__ import annotations

from hw.bus import Platform
from kernel.context import current


def platform() -> Platform:
    """The machine the current kernel runs on; ``RuntimeError`` when none is booted."""
    return current.kernel.machine
