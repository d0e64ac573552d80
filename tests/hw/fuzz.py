"""Shared by the stateful fuzz tests of the hardware models."""

from __future__ import annotations

from hypothesis import Phase, settings

BREAK_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.generate],
    report_multiple_bugs=False,
)
"""For the tests that show a fuzz test bites: run a state machine against a model with
a deliberate defect until the first failure (deterministic, no shrinking)."""
