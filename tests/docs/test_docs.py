"""The documentation's examples run as written (README, quick start, tutorials; the
reference pages under docs/reference show fragments and are checked by test_reference)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernel.plugin import make_plugin_manager
from tests.docs.runner import blocks, run_document
from tests.iommulab.schema import trace_event_schema, validate

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
EXECUTED = [
    "README.md",
    "docs/quickstart.md",
    "docs/tutorial-1-unit-test-a-driver.md",
    "docs/tutorial-3-iommu-vendor-plugin.md",
]
WAITING = {
    "docs/tutorial-2-prototype-an-api-change.md": "needs drivers/intel_iommu bound to VT-d",
}
"""Documents whose examples cannot run yet, and what they wait for."""


@pytest.mark.parametrize("doc", EXECUTED)
def test_examples_run(doc: str, pytester: pytest.Pytester) -> None:
    assert run_document(ROOT / doc, pytester)


def test_readme_path_produces_a_valid_perfetto_trace(pytester: pytest.Pytester) -> None:
    ran = run_document(ROOT / "README.md", pytester)
    assert ran[:3] == [
        "make demo",
        "iommulab dump vtd",
        "iommulab trace --format json -o t.json demo",
    ]
    doc = json.loads((pytester.path / "t.json").read_text())
    assert validate(doc, trace_event_schema()) == []


def test_every_document_with_examples_is_executed_or_waiting() -> None:
    with_code = {
        str(p.relative_to(ROOT))
        for p in [ROOT / "README.md", *DOCS.glob("*.md")]
        if any(lang in ("python", "console") for lang, _ in blocks(p.read_text()))
    }
    assert with_code == set(EXECUTED) | set(WAITING)


def test_tutorial_2_waits_for_the_intel_vtd_driver() -> None:
    # Tutorial 2 reproduces the seed-v3 stale-IOTLB finding on VT-d, so it runs only once
    # a driver claims the DMAR units. When this fails, drivers/intel_iommu has landed:
    # move tutorial 2 from WAITING to EXECUTED.
    claims = [d.name for d in make_plugin_manager().hooks.iommu_drivers() if d.table == "DMAR"]
    assert claims == [], f"{claims} claim DMAR: run tutorial 2 (move it to EXECUTED)"
