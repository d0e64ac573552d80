"""Parsing a machine file's ``config`` table into a device model's frozen attrs class.

Every hardware model (VT-d unit, SMMUv3, DSA) describes its silicon parameters as a
frozen ``attrs`` class whose defaults model one real part. :func:`from_mapping` turns
a machine file's table into an instance with one set of rules: an unknown key, a
non-boolean for a boolean knob or a non-integer (or boolean) for an integer knob
raises ``ValueError`` naming the model and the key; :func:`check_range` does the same
for a value outside its field's range. These are the only exceptions a model raises,
at machine build time, never while it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
from attrs import AttrsInstance

T = TypeVar("T", bound=AttrsInstance)


def from_mapping(cls: type[T], config: Mapping[str, Any] | None, what: str) -> T:
    """Build ``cls`` (a frozen attrs class) from ``config``; ``what`` names the model
    in messages (``"vtd config"``). The caller validates ranges afterwards."""
    known = {f.name: f for f in attrs.fields(cls)}
    for key, value in (config or {}).items():
        f = known.get(key)
        if f is None:
            raise ValueError(f"{what}: unknown key {key!r}")
        if isinstance(f.default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{what} {key}: expected true/false, got {value!r}")
        elif isinstance(f.default, int) and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{what} {key}: expected an integer, got {value!r}")
    return cls(**dict(config or {}))


def check_range(what: str, name: str, value: int, lo: int, hi: int) -> None:
    """``ValueError`` naming ``name`` unless ``lo <= value <= hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} {name}: expected an integer in [{lo}, {hi}], got {value!r}")
