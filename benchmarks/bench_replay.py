"""``iommulab replay``: events per second reading the real Linux 6.12 trace, parse only
and parse + checks; the ratio of their costs is the target (checks cost <= 3x parsing,
i.e. parse+checks takes at most 4x the parse time).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._harness import BenchResult, best_of
from iommulab.replay.check import check
from iommulab.replay.ftrace import parse_lines

TRACE = Path(__file__).parents[1] / "tests" / "data" / "linux-6.12-trace.txt"


def bench() -> list[BenchResult]:
    lines = TRACE.read_text().splitlines()
    n = len(parse_lines(lines).events)
    t_parse = best_of(lambda: parse_lines(lines), repeat=7)
    t_both = best_of(lambda: check(parse_lines(lines).events), repeat=7)
    checks_cost = (t_both - t_parse) / t_parse
    return [
        BenchResult("replay parse only (real 6.12 trace)", n / t_parse, "events/s"),
        BenchResult("replay parse + checks", n / t_both, "events/s"),
        BenchResult(
            "replay checks cost / parse cost",
            checks_cost,
            "x",
            checks_cost,
            "parse time",
            "<= 3",
            checks_cost <= 3,
        ),
    ]
