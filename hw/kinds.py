"""Hardware kinds: the models a machine description names (``kind = "vtd"`` ...).

The built-in kinds are listed here as ``"module:attribute"`` and imported on first
use. Installed distributions add theirs through the ``iommulab.hw`` entry-point
group, with the kind as the entry point's name::

    [project.entry-points."iommulab.hw"]
    toy = "toy_iommu_hw:ToyIommu"

What the entry point loads says what it is: a :class:`hw.pci.PciFunction`
subclass is a device kind, a class with the IOMMU model methods (``attach``,
``mmio_read``, ``mmio_write``, ``translate``; see :class:`hw.machine.IommuModel`)
an IOMMU kind. :func:`discover` runs each time a machine is described or built:
the entry-point listing is reused only while no directory on ``sys.path``
changed, so a distribution installed after start-up is seen by the next machine.
A broken entry point — it fails to import, loads an object of neither shape, or
takes a kind that already exists — is skipped and reported in
:attr:`HwKinds.problems` with its distribution's name; the other kinds still work.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import frozen

from hw.pci import PciFunction

ENTRY_POINT_GROUP = "iommulab.hw"

DEVICE_KINDS: dict[str, Any] = {
    "edu": "hw.edu:EduDevice",
    "dsa": "hw.dsa:DsaDevice",
}
"""Built-in device kinds (kind -> ``"module:attribute"`` or the factory itself)."""
IOMMU_KINDS: dict[str, Any] = {
    "vtd": "hw.vtd:VtdUnit",
    "smmuv3": "hw.smmuv3:Smmuv3Unit",
    "mock": "hw.mock_iommu:MockIommuUnit",
}
"""Built-in IOMMU kinds (kind -> ``"module:attribute"`` or the factory itself)."""

_IOMMU_METHODS = ("attach", "mmio_read", "mmio_write", "translate")


@frozen
class HwKinds:
    """Every kind a machine may use: the built-ins plus the installed entry points."""

    devices: Mapping[str, Any]
    iommus: Mapping[str, Any]
    origins: Mapping[str, str]
    """Kind -> ``"distribution version"`` for the kinds entry points added."""
    problems: tuple[str, ...] = ()
    """One line per entry point that was skipped, naming its distribution."""

    def device_factory(self, kind: str) -> Any:
        return _load(kind, self.devices, "device")

    def iommu_factory(self, kind: str) -> Any:
        return _load(kind, self.iommus, "iommu")


def _load(kind: str, table: Mapping[str, Any], what: str) -> Any:
    target = table.get(kind)
    if target is None:
        raise ValueError(f"{what}.kind: unknown kind {kind!r} (known: {', '.join(sorted(table))})")
    if not isinstance(target, str):
        return target
    mod, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what}.kind: model {kind!r} is not available ({exc})") from exc


def _shape(obj: object) -> str | None:
    """``"device"``, ``"iommu"`` or None for an object of neither shape."""
    if not isinstance(obj, type):
        return None
    if issubclass(obj, PciFunction):
        return "device"
    if all(callable(getattr(obj, m, None)) for m in _IOMMU_METHODS):
        return "iommu"
    return None


_listing: tuple[tuple[tuple[str, float], ...], tuple[md.EntryPoint, ...]] | None = None
_loaded: dict[tuple[str, str, str], tuple[object, str]] = {}
"""(distribution, name, value) -> (the loaded object, or the reason it failed)."""


def _path_key() -> tuple[tuple[str, float], ...]:
    key = []
    for p in sys.path:
        try:
            key.append((p, os.stat(p or ".").st_mtime))
        except OSError:
            key.append((p, -1.0))
    return tuple(key)


def installed_entry_points() -> tuple[md.EntryPoint, ...]:
    """The ``iommulab.hw`` entry points of the installed distributions."""
    global _listing
    key = _path_key()
    if _listing is None or _listing[0] != key:
        eps = md.entry_points(group=ENTRY_POINT_GROUP)
        _listing = (key, tuple(sorted(eps, key=lambda e: (_dist(e), e.name))))
    return _listing[1]


def _dist(ep: md.EntryPoint) -> str:
    d = ep.dist
    return f"{d.name} {d.version}" if d is not None else "an unnamed distribution"


def _load_entry_point(ep: md.EntryPoint) -> tuple[object, str]:
    key = (_dist(ep), ep.name, ep.value)
    if key not in _loaded:
        try:
            _loaded[key] = (ep.load(), "")
        except Exception as exc:  # third-party code: report it, never break the machine
            _loaded[key] = (None, f"cannot load {ep.value} ({type(exc).__name__}: {exc})")
    return _loaded[key]


def discover(entry_points: Iterable[md.EntryPoint] | None = None) -> HwKinds:
    """The built-in kinds plus those of ``entry_points`` (default: the installed
    ``iommulab.hw`` entry points); broken ones are skipped and reported."""
    eps = installed_entry_points() if entry_points is None else tuple(entry_points)
    devices: dict[str, Any] = dict(DEVICE_KINDS)
    iommus: dict[str, Any] = dict(IOMMU_KINDS)
    origins: dict[str, str] = {}
    problems: list[str] = []
    for ep in eps:
        where = f"{ENTRY_POINT_GROUP} entry point {ep.name!r} of {_dist(ep)}"
        if ep.name in devices or ep.name in iommus:
            taken = origins.get(ep.name, "a built-in model")
            problems.append(f"{where}: kind {ep.name!r} is already {taken}'s; skipped")
            continue
        obj, failure = _load_entry_point(ep)
        shape = _shape(obj) if not failure else None
        if failure or shape is None:
            reason = failure or (
                f"{ep.value} is {obj!r}, neither a PciFunction subclass nor an IOMMU model "
                f"class ({', '.join(_IOMMU_METHODS)})"
            )
            problems.append(f"{where}: {reason}; skipped")
            continue
        (devices if shape == "device" else iommus)[ep.name] = obj
        origins[ep.name] = _dist(ep)
    return HwKinds(devices, iommus, origins, tuple(problems))
