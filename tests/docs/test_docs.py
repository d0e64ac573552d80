"""The documentation's examples run as written (README, quick start, tutorials; the
reference pages under docs/reference show fragments and are checked by test_reference)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.docs.runner import blocks, run_document
from tests.iommulab.schema import trace_event_schema, validate

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
EXECUTED = [
    "README.md",
    "docs/quickstart.md",
    "docs/tutorial-1-unit-test-a-driver.md",
    "docs/tutorial-2-prototype-an-api-change.md",
    "docs/tutorial-3-iommu-vendor-plugin.md",
    "docs/tutorial-4-your-own-pci-device.md",
    "docs/iommufd.md",
    "docs/why-the-series-exists.md",
]
WAITING: dict[str, str] = {}
"""Documents whose examples cannot run yet, and what they wait for."""


@pytest.mark.parametrize("doc", [doc for doc in EXECUTED if doc != "README.md"])
def test_examples_run(doc: str, pytester: pytest.Pytester) -> None:
    assert run_document(ROOT / doc, pytester)


def test_readme_path_produces_a_valid_perfetto_trace(pytester: pytest.Pytester) -> None:
    """The README's examples run, and its path ends in a valid Perfetto trace. This is
    the README's ``test_examples_run`` too: running it costs two demos, so once."""
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
