"""A validator for the JSON Schema subset ``trace_event_schema.json`` uses (type,
required, properties, items, enum, minimum, allOf, if/then/else, local $ref).

The project has no jsonschema dependency; this keeps the schema declarative and
the check honest. Returns every violation as ``path: message``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).parent / "trace_event_schema.json"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}


def trace_event_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def validate(doc: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> list[str]:
    return _check(doc, schema, root or schema, "$")


def _check(v: Any, s: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    if "$ref" in s:
        ref = s["$ref"].removeprefix("#/").split("/")
        target: Any = root
        for part in ref:
            target = target[part]
        return _check(v, target, root, path)
    errs: list[str] = []
    t = s.get("type")
    if t is not None:
        ok = isinstance(v, _TYPES[t]) and not (t in ("number", "integer") and isinstance(v, bool))
        if not ok:
            return [f"{path}: expected {t}, got {type(v).__name__}"]
    if "enum" in s and v not in s["enum"]:
        errs.append(f"{path}: {v!r} not one of {s['enum']}")
    if "minimum" in s and isinstance(v, int | float) and v < s["minimum"]:
        errs.append(f"{path}: {v} < minimum {s['minimum']}")
    if isinstance(v, dict):
        errs += [f"{path}: missing {k!r}" for k in s.get("required", ()) if k not in v]
        for k, sub in s.get("properties", {}).items():
            if k in v:
                errs += _check(v[k], sub, root, f"{path}.{k}")
    if isinstance(v, list) and "items" in s:
        for i, item in enumerate(v):
            errs += _check(item, s["items"], root, f"{path}[{i}]")
    for sub in s.get("allOf", ()):
        errs += _check(v, sub, root, path)
    if "if" in s:
        branch = s.get("then") if not _check(v, s["if"], root, path) else s.get("else")
        if branch is not None:
            errs += _check(v, branch, root, path)
    return errs
