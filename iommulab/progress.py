"""Progress on long runs (benchmarks, sweeps): a rich bar with ``iommulab[pretty]``
on a terminal, plain ``label: i/n`` lines otherwise.

Progress goes to stderr, so a command's stdout (a table, a trace) stays clean.
``IOMMULAB_PLAIN=1`` forces plain lines even when rich is installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TextIO, TypeVar

T = TypeVar("T")


def rich_available() -> bool:
    return importlib.util.find_spec("rich") is not None


def use_rich(stream: TextIO) -> bool:
    """rich bars only on a terminal, with rich installed, and not forced plain."""
    return rich_available() and stream.isatty() and not os.environ.get("IOMMULAB_PLAIN")


def progress(
    items: Iterable[T],
    label: str,
    total: int | None = None,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yield ``items`` while showing progress on ``stream`` (stderr by default)."""
    out = stream if stream is not None else sys.stderr
    if total is None and isinstance(items, Sized):
        total = len(items)
    if use_rich(out):
        from rich.console import Console
        from rich.progress import track

        yield from track(items, description=label, total=total, console=Console(file=out))
        return
    of = f"/{total}" if total is not None else ""
    for i, item in enumerate(items, 1):
        print(f"{label}: {i}{of}", file=out, flush=True)
        yield item
