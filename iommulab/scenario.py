"""User scenarios: ``iommulab scenario run FILE.py`` and the ``--scenario`` of ``dump``/``trace``.

A scenario file is a Python module that defines ``scenario(kernel)``, a function
taking the booted :class:`kernel.boot.Kernel` (it is the current kernel, so the
module-level kernel APIs — ``kzalloc``, ``dma_map_single``, ``pci_get_devices`` —
act on it). Two optional module constants choose how it boots when the command
line does not say: ``MACHINE`` (a preset name) and ``CMDLINE``::

    MACHINE = "default"
    CMDLINE = "iommu.strict=0"

    def scenario(kernel):
        ...

The scenario's directory is on ``sys.path`` while it loads, so it can import
helper modules next to it.

An exception out of the file (while it loads or while ``scenario`` runs) becomes a
:class:`ScenarioError` naming the user's own frame — the innermost one in the
scenario file — and the message; the original exception is its ``__cause__``, so
``--debug`` can still show the full traceback.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from attrs import frozen

from kernel.boot import Kernel

ScenarioFn = Callable[[Kernel], object]


class ScenarioError(Exception):
    """A scenario file raised: ``where`` is the user's frame (``File "x.py", line N, in
    fn`` and the source line), ``message`` the exception's type and text."""

    def __init__(self, path: Path, message: str, where: str) -> None:
        super().__init__(f"{path.name}: {message}")
        self.path = path
        self.message = message
        self.where = where


def _user_frame(path: Path, exc: BaseException) -> str:
    """The innermost traceback frame inside ``path`` (the line the user wrote), or,
    for a syntax error in it, the offending line."""
    target = path.resolve()
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).resolve() == target:
        text = (exc.text or "").strip()
        return f'  File "{path}", line {exc.lineno}\n    {text}'.rstrip()
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == target
    ]
    if not frames:
        return f'  File "{path}" (the exception was raised outside it)'
    f = frames[-1]
    line = f"\n    {f.line.strip()}" if f.line else ""
    return f'  File "{path}", line {f.lineno}, in {f.name}{line}'


def _scenario_error(path: Path, exc: Exception) -> ScenarioError:
    text = str(exc)
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    err = ScenarioError(path, message, _user_frame(path, exc))
    err.__cause__ = exc
    return err


@frozen
class Scenario:
    name: str
    run: ScenarioFn
    machine: str | None = None
    cmdline: str | None = None
    path: Path | None = None
    """The file it came from (None for the built-in demo)."""


def load_scenario(path: str | Path) -> Scenario:
    """Import ``path`` and return its ``scenario`` function with its boot defaults."""
    p = Path(path)
    if p.suffix != ".py" or not p.is_file():
        raise ValueError(f"{p}: a scenario is an existing .py file defining scenario(kernel)")
    modname = f"iommulab_scenario_{p.stem}"
    spec = importlib.util.spec_from_file_location(modname, p)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(p.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise _scenario_error(p, exc) from exc
    finally:
        sys.path.remove(str(p.parent.resolve()))
    fn = getattr(module, "scenario", None)
    if not callable(fn):
        raise ValueError(f"{p}: defines no function scenario(kernel)")
    machine = getattr(module, "MACHINE", None)
    cmdline = getattr(module, "CMDLINE", None)
    return Scenario(
        p.name,
        fn,
        str(machine) if machine is not None else None,
        str(cmdline) if cmdline is not None else None,
        p,
    )


def run_scenario(kernel: Kernel, scenario: Scenario) -> object:
    """Run ``scenario`` on ``kernel`` (made current first); returns what it returned.
    Raises :class:`ScenarioError` when a scenario file's function raises."""
    kernel.activate()
    if scenario.path is None:
        return scenario.run(kernel)
    try:
        return scenario.run(kernel)
    except Exception as exc:
        raise _scenario_error(scenario.path, exc) from exc
