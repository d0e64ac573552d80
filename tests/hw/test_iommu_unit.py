"""The shared plumbing of IOMMU unit models."""

from __future__ import annotations

import pytest

from hw.smmuv3 import Smmuv3Unit
from hw.vtd import VtdUnit


@pytest.mark.parametrize("unit", [VtdUnit("dmar9", {}), Smmuv3Unit("smmu9", {})])
def test_a_unit_used_before_attach_names_itself(unit: VtdUnit | Smmuv3Unit) -> None:
    with pytest.raises(RuntimeError, match=f"{unit.name}: not attached to a machine"):
        _ = unit.walker
    unit.emit("hw_test:nothing")  # no machine, no tracing: silently nothing
    unit.error("ignored write")
    assert unit.errors == ["ignored write"]
