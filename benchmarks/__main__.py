"""Run every ``benchmarks/bench_*.py`` and print one table of ratios with targets."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks
from benchmarks._harness import BenchResult
from iommulab.progress import progress


def main(argv: list[str]) -> int:
    wanted = set(argv)
    rows: list[tuple[str, BenchResult]] = []
    suites = [
        info.name.removeprefix("bench_")
        for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda i: i.name)
        if info.name.startswith("bench_")
    ]
    suites = [s for s in suites if not wanted or s in wanted]
    for short in progress(suites, "benchmarks"):
        mod = importlib.import_module(f"benchmarks.bench_{short}")
        rows.extend((short, r) for r in mod.bench())
    print(
        f"{'suite':<10} {'benchmark':<48} {'value':>12} {'unit':<8} {'ratio':>8}  "
        f"{'baseline':<26} {'target':<10} ok"
    )
    failed = 0
    for suite, r in rows:
        ratio = f"{r.ratio:8.2f}" if r.ratio is not None else f"{'':>8}"
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        failed += r.ok is False
        print(
            f"{suite:<10} {r.name:<48} {r.value:12.3f} {r.unit:<8} {ratio}  "
            f"{r.baseline:<26} {r.target:<10} {ok}"
        )
    print(f"{len(rows)} benchmarks, {failed} below target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
