"""Run every ``benchmarks/bench_*.py`` (or the suites named on the command line) and
print one aligned table of rows with their targets, then issue 20's "Must show" table.
Exits 1 when a row or a Must-show figure misses its target (or was not measured)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

import benchmarks
from benchmarks._harness import MUST_SHOW, BenchResult, meets, target_text
from iommulab.progress import progress


def table(header: Sequence[str], body: list[list[str]], right: set[int]) -> list[str]:
    """Columns as wide as their widest cell, so no name can push the next one over."""
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.0f}"


def rows_table(rows: list[tuple[str, BenchResult]]) -> list[str]:
    body = [
        [
            suite,
            r.name,
            _num(r.value),
            r.unit,
            "" if r.ratio is None else f"{r.ratio:.2f}",
            r.baseline,
            r.target,
            "" if r.ok is None else ("yes" if r.ok else "NO"),
        ]
        for suite, r in rows
    ]
    header = ["suite", "benchmark", "value", "unit", "ratio", "baseline", "target", "ok"]
    return table(header, body, {2, 4})


def must_show(rows: list[tuple[str, BenchResult]], ran: set[str]) -> tuple[list[str], int]:
    """Issue 20's figures, each judged against its own limit; returns lines and misses."""
    body: list[list[str]] = []
    missed = 0
    for t in MUST_SHOW:
        row = t.find(rows)
        measured = None if row is None else t.measured(row)
        if measured is None:
            if t.suite not in ran:
                continue  # that suite was not asked for in this run
            body.append([t.figure, "not measured", target_text(t.limit, t.better), "NO"])
            missed += 1
            continue
        ok = meets(measured, t.limit, t.better)
        missed += not ok
        body.append(
            [t.figure, f"{measured:.2f}", target_text(t.limit, t.better), "yes" if ok else "NO"]
        )
    return table(["figure (issue 20)", "measured", "target", "ok"], body, {1}), missed


def main(argv: list[str]) -> int:
    wanted = set(argv)
    rows: list[tuple[str, BenchResult]] = []
    suites = [
        info.name.removeprefix("bench_")
        for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda i: i.name)
        if info.name.startswith("bench_")
    ]
    unknown = wanted - set(suites)
    if unknown:
        print(f"unknown suite(s): {', '.join(sorted(unknown))} (known: {', '.join(suites)})")
        return 2
    suites = [s for s in suites if not wanted or s in wanted]
    for short in progress(suites, "benchmarks"):
        mod = importlib.import_module(f"benchmarks.bench_{short}")
        rows.extend((short, r) for r in mod.bench())
    print("\n".join(rows_table(rows)))
    failed = sum(r.ok is False for _, r in rows)
    print(f"{len(rows)} benchmarks, {failed} below target")
    print()
    lines, missed = must_show(rows, set(suites))
    print("\n".join(lines))
    print(f"{len(lines) - 2} figures, {missed} below target or not measured")
    return 1 if failed or missed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
