"""The reference pages list exactly what is registered (datasette's docs-as-tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pluggy

from hw.machine import build_machine
from iommulab.pytest_plugin import IommulabPytestHookspecs
from kernel import trace
from kernel.boot import boot
from kernel.hookspecs import KernelSpecs
from kernel.plugin import PluginManager

REFERENCE = Path(__file__).parents[2] / "docs" / "reference"


def _signatures(pm: pluggy.PluginManager, prefix: str) -> dict[str, str]:
    out = {}
    for name in dir(pm.hook):
        if name.startswith(prefix):
            caller = getattr(pm.hook, name)
            assert caller.spec is not None
            out[name] = f"`{name}({', '.join(caller.spec.argnames)})`"
    return out


def _documented(text: str, prefix: str) -> set[str]:
    return set(re.findall(rf"^#+ `({prefix}\w+)`$", text, flags=re.M))


def test_every_hookspec_is_documented_with_its_signature() -> None:
    text = (REFERENCE / "hooks.md").read_text()
    specs = _signatures(PluginManager(), "iommulab_")
    assert _documented(text, "iommulab_") == set(specs)
    missing = [sig for sig in specs.values() if sig not in text]
    assert not missing, f"docs/reference/hooks.md lacks these signatures: {missing}"


def test_hookspecs_come_from_the_spec_class() -> None:
    assert set(_signatures(PluginManager(), "iommulab_")) == {
        n for n in vars(KernelSpecs) if n.startswith("iommulab_")
    }


def test_every_pytest_hook_is_documented_with_its_signature() -> None:
    pm = pluggy.PluginManager("pytest")
    pm.add_hookspecs(IommulabPytestHookspecs)
    text = (REFERENCE / "hooks.md").read_text()
    specs = _signatures(pm, "pytest_iommulab_")
    assert _documented(text, "pytest_iommulab_") == set(specs)
    assert all(sig in text for sig in specs.values())


def test_every_registered_tracepoint_is_documented_with_its_fields() -> None:
    # Boot the default machine with every built-in module so that every subsystem and
    # driver has defined its tracepoints.
    k = boot(build_machine({"name": "all", "ram": "64M"}), "", entry_points=False)
    k.shutdown()
    text = (REFERENCE / "tracepoints.md").read_text()
    registered = trace.tracepoints()
    undocumented = [
        f"{name} (fields: {', '.join(tp.fields)})"
        for name, tp in sorted(registered.items())
        if f"### `{name}`\n\nfields: `{', '.join(tp.fields)}`" not in text
    ]
    assert not undocumented, (
        "add a '### `system:event`' section with a 'fields: `...`' line to "
        f"docs/reference/tracepoints.md for: {undocumented}"
    )


def test_every_hardware_event_is_documented() -> None:
    """Every ``hw_*:*`` event name a hardware model emits has a row in the reference."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    emitted = {
        m
        for path in (root / "hw").rglob("*.py")
        for m in re.findall(r'"(hw_[a-z0-9]+:[a-z_]+)"', path.read_text())
    }
    doc = (root / "docs" / "reference" / "tracepoints.md").read_text()
    missing = sorted(e for e in emitted if f"`{e}`" not in doc)
    assert emitted
    assert not missing, f"add rows to docs/reference/tracepoints.md for {missing}"
