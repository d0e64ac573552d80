"""Kernel command line and parameters (kernel/params.c, ``__setup``, ``module_param``).

The command line is split into tokens (``name=value`` or a bare ``name``; double
quotes protect spaces). Subsystems and modules register :class:`Param` objects
with a parser; values are applied when the parameter is registered (so a module
loaded late still sees its ``mod.param=``). After boot, tokens nobody claimed are
reported exactly as Linux does, and boot continues.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from attrs import define, field

from kernel.errno import EINVAL

T = TypeVar("T")

_TRUE = {"1", "y", "yes", "on", "true", "Y"}
_FALSE = {"0", "n", "no", "off", "false", "N"}


def parse_bool(text: str | None) -> bool:
    """``kstrtobool``: 1/y/on/true and 0/n/off/false; a bare flag means true."""
    if text is None:
        return True
    if text.lower() in {t.lower() for t in _TRUE}:
        return True
    if text.lower() in {f.lower() for f in _FALSE}:
        return False
    raise EINVAL(f"invalid boolean {text!r}")


def parse_int(text: str | None) -> int:
    if text is None:
        raise EINVAL("missing integer value")
    try:
        return int(text, 0)
    except ValueError as exc:
        raise EINVAL(f"invalid integer {text!r}") from exc


def parse_str(text: str | None) -> str:
    return "" if text is None else text


@define(eq=False)
class Param(Generic[T]):
    """One parameter: ``name`` as written on the command line (``iommu.strict``)."""

    name: str
    default: T
    parse: Callable[[str | None], T]
    description: str = ""
    value: T = field(init=False)
    set_on_cmdline: bool = field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self.value = self.default


@define
class CommandLine:
    text: str = ""
    tokens: list[tuple[str, str | None]] = field(factory=list)
    params: dict[str, Param[Any]] = field(factory=dict)
    claimed: set[int] = field(factory=set)
    errors: list[str] = field(factory=list)

    @classmethod
    def parse(cls, text: str) -> CommandLine:
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
        tokens: list[tuple[str, str | None]] = []
        for w in words:
            name, eq, value = w.partition("=")
            tokens.append((name.replace("-", "_"), value if eq else None))
        return cls(text, tokens)

    def register(self, param: Param[T]) -> Param[T]:
        key = param.name.replace("-", "_")
        if key in self.params:
            raise EINVAL(f"parameter {param.name} registered twice")
        self.params[key] = param
        for i, (name, value) in enumerate(self.tokens):
            if name != key:
                continue
            self.claimed.add(i)
            try:
                param.value = param.parse(value)
                param.set_on_cmdline = True
            except Exception as exc:  # the parser's own error, reported like Linux
                self.errors.append(f"{param.name}: {exc}")
        return param

    def get(self, name: str) -> Any:
        return self.params[name.replace("-", "_")].value

    def unclaimed(self) -> list[str]:
        return [
            name if value is None else f"{name}={value}"
            for i, (name, value) in enumerate(self.tokens)
            if i not in self.claimed
        ]

    def claim(self, name: str) -> list[str | None]:
        """Claim every ``name[=value]`` token without a registered Param (``__setup``)."""
        out: list[str | None] = []
        for i, (tok, value) in enumerate(self.tokens):
            if tok == name:
                self.claimed.add(i)
                out.append(value)
        return out
