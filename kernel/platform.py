"""The booted kernel's handle on the machine (the only module holding a Platform).

Subsystems reach the hardware through :func:`platform`; it is set by ``boot``.
"""

from __future__ import annotations

from hw.bus import Platform

_platform: Platform | None = None


def set_platform(p: Platform | None) -> None:
    global _platform
    _platform = p


def platform() -> Platform:
    if _platform is None:
        raise RuntimeError("no kernel is booted (kernel.boot.boot() first)")
    return _platform
