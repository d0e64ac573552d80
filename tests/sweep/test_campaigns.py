"""Seeded hypothesis campaigns: the hardware models' stateful tests (random table
changes and invalidations against a fresh walk), one pytest item per (campaign, seed).

An item's seed fixes every example it generates (``hypothesis.seed``, no example
database), so ``...::test_campaign[vtd-caches-seed7]`` replays the same run on any
host. ``IOMMULAB_CAMPAIGN_SEEDS`` (default 16) sets how many seeds per campaign and
``IOMMULAB_CAMPAIGN_EXAMPLES`` (default 50) how many examples each seed runs.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import seed, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from tests.hw.smmuv3.test_stateful import SmmuCacheMachine
from tests.hw.vtd.test_stateful import VtdCacheMachine
from tests.hw.vtd.test_stateful_blocks import VtdBlockMachine

CAMPAIGNS: dict[str, type[RuleBasedStateMachine]] = {
    "vtd-caches": VtdCacheMachine,
    "vtd-blocks": VtdBlockMachine,
    "smmuv3-caches": SmmuCacheMachine,
}
SEEDS = range(int(os.environ.get("IOMMULAB_CAMPAIGN_SEEDS", "16")))
EXAMPLES = int(os.environ.get("IOMMULAB_CAMPAIGN_EXAMPLES", "50"))


@pytest.mark.sweep
@pytest.mark.parametrize(
    ("campaign", "n"),
    [pytest.param(c, s, id=f"{c}-seed{s}") for c in CAMPAIGNS for s in SEEDS],
)
def test_campaign(campaign: str, n: int) -> None:
    base = CAMPAIGNS[campaign]
    seeded = seed(n)(type(f"{base.__name__}Seed{n}", (base,), {}))
    run_state_machine_as_test(
        seeded,
        settings=settings(base.TestCase.settings, max_examples=EXAMPLES, database=None),
    )
