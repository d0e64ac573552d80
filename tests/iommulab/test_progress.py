"""Progress on long runs: rich bars on a terminal with the pretty extra, plain lines otherwise."""

from __future__ import annotations

import io

import pytest

from iommulab.progress import progress, use_rich


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_progress_prints_one_line_per_item() -> None:
    out = io.StringIO()
    assert list(progress(["a", "b"], "bench", stream=out)) == ["a", "b"]
    assert out.getvalue() == "bench: 1/2\nbench: 2/2\n"


def test_plain_progress_without_a_known_total() -> None:
    out = io.StringIO()
    assert list(progress(iter("xy"), "sweep", stream=out)) == ["x", "y"]
    assert out.getvalue() == "sweep: 1\nsweep: 2\n"


def test_a_terminal_gets_a_rich_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOMMULAB_PLAIN", raising=False)
    term = Terminal()
    assert list(progress(range(3), "bench", stream=term)) == [0, 1, 2]
    assert "bench" in term.getvalue() and "bench: 1/3" not in term.getvalue()


def test_iommulab_plain_forces_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOMMULAB_PLAIN", "1")
    assert not use_rich(Terminal())
    assert not use_rich(io.StringIO())
