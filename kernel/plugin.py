"""The plugin manager (pluggy): built-in kernel modules, third-party modules from the
``iommulab.modules`` entry-point group, blocking by name, and a typed facade.

A plugin is a kernel module package (``drivers.idxd``). Loading is forgiving the
way conda's is: an entry point that fails to import is reported and skipped, not
fatal. ``check_pending`` runs after loading so a misspelled hook implementation
is an error. Set ``IOMMULAB_TRACE_HOOKS=1`` to print every hook call.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import os
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any, TypeVar

import pluggy
from attrs import define, field

from kernel.debugfs import DumpTarget
from kernel.hookspecs import PROJECT, KernelSpecs
from kernel.module import IommuDriverInfo, KernelModule

T = TypeVar("T")

ENTRY_POINT_GROUP = "iommulab.modules"
BUILTIN_MODULES: tuple[str, ...] = ("drivers.intel_iommu", "drivers.idxd", "drivers.arm_smmu_v3")


@define
class LoadedPlugin:
    name: str
    origin: str
    """``builtin``, ``entry-point``, or ``explicit``."""
    distribution: str = ""
    version: str = ""


@define
class LoadReport:
    loaded: list[LoadedPlugin] = field(factory=list)
    failed: list[tuple[str, str]] = field(factory=list)
    blocked: list[str] = field(factory=list)


class PluginManager(pluggy.PluginManager):
    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(KernelSpecs)
        self.report = LoadReport()
        self.hooks = Hooks(self)
        if os.environ.get("IOMMULAB_TRACE_HOOKS"):
            self.trace.root.setwriter(lambda s: print(s, end="", file=sys.stderr))
            self.enable_tracing()

    def load_builtin(self, names: Iterable[str] = BUILTIN_MODULES) -> None:
        for modname in names:
            short = modname.rsplit(".", 1)[-1]
            if self.is_blocked(short):
                self.report.blocked.append(short)
                continue
            try:
                mod = importlib.import_module(modname)
            except Exception as exc:  # a broken built-in is reported like any module
                self.report.failed.append((short, f"{type(exc).__name__}: {exc}"))
                continue
            self.register(mod, name=short)
            self.report.loaded.append(LoadedPlugin(short, "builtin", "iommulab"))

    def load_entry_points(self, eps: Iterable[md.EntryPoint] | None = None) -> None:
        """Load ``iommulab.modules`` entry points. One that fails to import, loads an
        object with no ``iommulab_*`` hook implementation, or takes a module name
        already registered (a built-in's or another distribution's) is reported in
        ``report.failed`` with its distribution's name and skipped; the rest load."""
        if eps is None:
            eps = md.entry_points(group=ENTRY_POINT_GROUP)
        for ep in eps:
            if self.is_blocked(ep.name):
                self.report.blocked.append(ep.name)
                continue
            dist = ep.dist.name if ep.dist is not None else ""
            version = ep.dist.version if ep.dist is not None else ""
            try:
                plugin = ep.load()
            except Exception as exc:  # third-party code: report, never crash the boot
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if self.get_plugin(ep.name) is plugin:
                    continue  # already registered (a test's marker named the same module)
                problem = self._register_entry_point(ep, plugin)
            if problem:
                named = f"{dist} {version}".strip() or "an unnamed distribution"
                where = f"{ENTRY_POINT_GROUP} entry point of {named}"
                self.report.failed.append((ep.name, f"{problem} ({where}); skipped"))
                continue
            self.report.loaded.append(LoadedPlugin(ep.name, "entry-point", dist, version))

    def _register_entry_point(self, ep: md.EntryPoint, plugin: object) -> str:
        """Register ``ep``'s loaded plugin; what is wrong with it, or ``""``."""
        if self.get_plugin(ep.name) is not None:
            taken = next((p for p in self.report.loaded if p.name == ep.name), None)
            owner = f"{taken.distribution} {taken.version}".strip() if taken else ""
            return f"module name {ep.name!r} is already {owner or 'another module'}'s"
        if not any(self.parse_hookimpl_opts(plugin, n) is not None for n in dir(plugin)):
            return f"{ep.value} is {plugin!r}, which implements no iommulab_* hook"
        try:
            self.register(plugin, name=ep.name)
        except Exception as exc:  # third-party code: report, never crash the boot
            return f"{type(exc).__name__}: {exc}"
        return ""

    def load_explicit(self, plugin: ModuleType | object, name: str) -> None:
        if self.is_blocked(name):
            self.report.blocked.append(name)
            return
        self.register(plugin, name=name)
        self.report.loaded.append(LoadedPlugin(name, "explicit"))


class Hooks:
    """Typed facade over ``pm.hook`` (tox style): mypy --strict holds at call sites."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm

    def modules(self) -> list[KernelModule]:
        return _collect(self._pm.hook.iommulab_modules(), KernelModule, "iommulab_modules")

    def iommu_drivers(self) -> list[IommuDriverInfo]:
        return _collect(
            self._pm.hook.iommulab_iommu_drivers(), IommuDriverInfo, "iommulab_iommu_drivers"
        )

    def dump_targets(self) -> list[DumpTarget]:
        return _collect(self._pm.hook.iommulab_dump_targets(), DumpTarget, "iommulab_dump_targets")

    def add_subcommands(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        self._pm.hook.iommulab_add_subcommands(subparsers=subparsers)


def _collect(batches: Any, kind: type[T], hook: str) -> list[T]:
    """Flatten a list-returning hook's results, checking types and unique ``name``s."""
    out: list[T] = []
    for batch in batches:
        if not isinstance(batch, list | tuple):
            raise TypeError(
                f"{hook} must return a list of {kind.__name__}, got {type(batch).__name__}"
            )
        for item in batch:
            if not isinstance(item, kind):
                raise TypeError(f"{hook} returned {item!r}, not a {kind.__name__}")
            out.append(item)
    names = [getattr(item, "name", None) for item in out]
    dups = {str(n) for n in names if names.count(n) > 1}
    if dups:
        raise ValueError(f"{hook}: name(s) provided twice: {', '.join(sorted(dups))}")
    return out


def make_plugin_manager(
    blocked: Iterable[str] = (),
    builtins: Iterable[str] = BUILTIN_MODULES,
    entry_points: bool | Iterable[md.EntryPoint] = True,
    extra: Iterable[tuple[str, object]] = (),
) -> PluginManager:
    """Build a fresh manager: block, built-ins, explicit extras, entry points, check."""
    pm = PluginManager()
    for name in blocked:
        pm.set_blocked(name)
    pm.load_builtin(builtins)
    for name, plugin in extra:
        pm.load_explicit(plugin, name)
    if entry_points is True:
        pm.load_entry_points()
    elif entry_points is not False:
        pm.load_entry_points(entry_points)
    pm.check_pending()
    return pm
