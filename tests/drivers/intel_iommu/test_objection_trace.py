"""The objection's stale use as the Perfetto trace shows it (iommulab.perfetto)."""

from __future__ import annotations

from iommulab.perfetto import chrome_events
from kernel.trace import capture
from tests.drivers.intel_iommu.conftest import VtdFactory
from tests.drivers.intel_iommu.test_objection import Scenario


def test_the_trace_ties_the_stale_use_to_the_unmap_that_changed_the_table(
    make_vtd: VtdFactory,
) -> None:
    """In the Perfetto layout, a flow runs from the ``dma_unmap_single`` that cleared
    the PTE (the kernel's ``unmap`` slice) to the stale use on the unit's track."""
    v = make_vtd("iommu.pasid_api=seed-v3", config={"strict_stale": False}, allow_stale=True)
    with capture("*") as events:
        s = Scenario(v, seed_v3=True)
        s.reread(s.other)
    doc = chrome_events(events)
    (use,) = [e for e in doc if e["ph"] == "X" and e["name"] == "stale use"]
    assert int(use["args"]["addr"], 16) == s.handle
    (start,) = [e for e in doc if e["ph"] == "s" and e["name"] == "table write → stale use"]
    (end,) = [e for e in doc if e["ph"] == "f" and e["id"] == start["id"]]
    assert (end["pid"], end["tid"], end["ts"]) == (use["pid"], use["tid"], use["ts"])
    (unmap,) = [
        e for e in doc if e["ph"] == "X" and e["name"] == "unmap" and e["ts"] == start["ts"]
    ]
    assert int(unmap["args"]["iova"], 16) == s.handle and unmap["pid"] == start["pid"]
    s.finish()
