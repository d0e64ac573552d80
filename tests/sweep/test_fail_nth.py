"""fail_nth over the founding scenario (probe → system PASID → WQs → memcpy on each WQ
→ remove), one pytest item per injection point, for every scenario variant x IOMMU
vendor x PASID API generation.

Each item boots its own machine, fails one allocation and checks a clean unwind, so
it runs alone from its id (``...::test_injected_failure_unwinds_cleanly[strict-vtd-
upstream-019-iommu_pgtable]``) on any host: pytest-xdist or pytest-split may put it
anywhere. The founding cell (strict, VT-d, upstream) runs in ``make test``; the rest
of the matrix is marked ``sweep`` (``make sweep``).
"""

from __future__ import annotations

import pytest

from tests.sweep.founding import (
    FOUNDING,
    MATRIX,
    Combo,
    boot_before_probe,
    points,
    run_point,
)

POINTS = {combo: points(combo) for combo in MATRIX}


def _marks(combo: Combo) -> tuple[pytest.MarkDecorator, ...]:
    return () if combo == FOUNDING else (pytest.mark.sweep,)


@pytest.mark.parametrize(
    ("combo", "nth"),
    [
        pytest.param(combo, n, id=f"{combo.id}-{n:03d}-{site}", marks=_marks(combo))
        for combo, sites in POINTS.items()
        for n, site in enumerate(sites, 1)
    ],
)
def test_injected_failure_unwinds_cleanly(combo: Combo, nth: int) -> None:
    assert run_point(boot_before_probe(combo), nth).problems == ()


@pytest.mark.parametrize("combo", [pytest.param(c, id=c.id, marks=_marks(c)) for c in MATRIX])
def test_without_injection_every_wq_copies_and_nothing_is_left(combo: Combo) -> None:
    out = run_point(boot_before_probe(combo), 0)
    assert out.copies == (True, True)  # the dedicated and the shared WQ
    assert out.problems == ()


def test_the_sweep_reaches_every_allocation_site_of_the_scenario() -> None:
    sites = set(POINTS[FOUNDING])
    assert {"kmalloc", "alloc_pages", "ida_alloc", "alloc_iova", "iommu_pgtable"} <= sites
