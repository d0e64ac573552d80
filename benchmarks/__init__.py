"""Benchmarks run by ``make bench``; each ``bench_*.py`` module has ``bench() -> list[BenchResult]``."""
