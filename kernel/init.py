"""Built-in initcalls (``subsys_initcall`` ... ``late_initcall``) of the generic kernel.

Subsystems register a setup function and an optional teardown at an
:class:`InitLevel`; ``boot`` runs them level by level, interleaved with the
module inits of the same level, and shutdown runs the teardowns in reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import frozen

from kernel.module import InitLevel

if TYPE_CHECKING:
    from kernel.boot import Kernel


@frozen
class Initcall:
    level: InitLevel
    name: str
    fn: Callable[[Kernel], None]
    teardown: Callable[[Kernel], None] | None = None


_initcalls: list[Initcall] = []


def initcall(
    level: InitLevel, name: str, teardown: Callable[[Kernel], None] | None = None
) -> Callable[[Callable[[Kernel], None]], Callable[[Kernel], None]]:
    def register(fn: Callable[[Kernel], None]) -> Callable[[Kernel], None]:
        if not any(ic.name == name for ic in _initcalls):
            _initcalls.append(Initcall(level, name, fn, teardown))
        return fn

    return register


def initcalls() -> list[Initcall]:
    return sorted(_initcalls, key=lambda ic: ic.level)
