"""Benchmarks for ``make bench``: each ``bench_*.py`` has ``bench() -> list[BenchResult]``."""
