"""Run a Markdown document's examples, in order, the way a reader would.

- a ```` ```python ```` or ```` ```toml ```` block whose first line is
  ``# file: PATH`` is written to PATH;
- a ```` ```diff ```` block whose first line is ``# file: PATH`` edits PATH: each run of
  ``-`` lines followed by as many ``+`` lines replaces those lines, each of which must
  occur in the file exactly once (other lines are context, not checked);
- any other ```` ```python ```` block is executed (one namespace per document);
- in a ```` ```console ```` block each ``$ COMMAND`` line runs: ``iommulab ...``
  through :func:`iommulab.cli.main`, ``make demo`` as ``iommulab demo``,
  ``pytest ...`` in-process through ``pytester``, ``pip install -e DIR`` as
  :func:`editable_install`; the exit status must be 0 — for ``pytest``, 1 when the
  block's output says ``N failed`` —, the ``N passed`` / ``N failed`` counts of the
  block's output must match the run's outcome, and each ``E`` line it shows (pytest's
  error lines) must be in the run's output. Lines
  that set up the shell the suite already runs in (:data:`SETUP`) are not run.

Everything happens in the ``pytester`` directory, which is also on ``sys.path``.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from iommulab import cli

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
SETUP = ("git clone", "cd ", ". .venv/bin/activate", "make test", "make bench")


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in BLOCK.finditer(text)]


def run_document(path: Path, pytester: pytest.Pytester) -> list[str]:
    """Run every example of ``path``; returns the commands that ran."""
    pytester.syspathinsert()
    ns: dict[str, Any] = {"__name__": f"doc_{path.stem}"}
    ran: list[str] = []
    for lang, body in blocks(path.read_text()):
        first = body.partition("\n")[0]
        if lang in ("python", "toml") and first.startswith("# file: "):
            target = pytester.path / first.removeprefix("# file: ").strip()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        elif lang == "diff" and first.startswith("# file: "):
            apply_diff(pytester.path / first.removeprefix("# file: ").strip(), body)
        elif lang == "python":
            exec(compile(body, str(path), "exec"), ns)
        elif lang == "console":
            ran += _run_console(body, pytester, path)
    return ran


def _run_console(body: str, pytester: pytest.Pytester, path: Path) -> list[str]:
    lines = body.splitlines()
    ran: list[str] = []
    for i, line in enumerate(lines):
        if not line.startswith("$ "):
            continue
        command = line[2:].split("  #")[0].strip()
        if command.startswith(SETUP):
            continue
        argv = shlex.split(command)
        output = "\n".join(_output_of(lines, i))
        if argv[0] == "iommulab":
            assert cli.main(argv[1:]) == 0, f"{path.name}: {command}"
        elif argv[:2] == ["make", "demo"]:
            assert cli.main(["demo"]) == 0, f"{path.name}: {command}"
        elif argv[:3] == ["pip", "install", "-e"] and len(argv) == 4:
            editable_install(pytester.path / argv[3], pytester.path)
        elif argv[0] == "pytest":
            res = pytester.runpytest_inprocess(*argv[1:])
            failed = re.search(r"(\d+) failed", output)
            want = 1 if failed else 0
            assert res.ret == want, f"{path.name}: {command}\n{res.stdout.str()}"
            outcomes = res.parseoutcomes()
            for what in ("passed", "failed"):
                expected = re.search(rf"(\d+) {what}", output)
                if expected:
                    assert outcomes.get(what) == int(expected[1]), f"{command}: {what}"
            shown = [ln.strip() for ln in output.splitlines() if ln.startswith("E ")]
            text = res.stdout.str()
            assert all(ln in text for ln in shown), f"{command}: {shown}\n{text}"
        else:
            pytest.fail(f"{path.name}: the docs runner does not know how to run {command!r}")
        ran.append(command)
    return ran


def editable_install(project: Path, site: Path) -> None:
    """What ``pip install -e PROJECT`` leaves for ``importlib.metadata``: a
    ``NAME-VERSION.dist-info`` in ``site`` (a directory on ``sys.path``) with the
    project's name, version and entry points from its ``pyproject.toml``. The
    project's modules are importable already (``site`` is the project directory);
    the suite does not run pip (no network, no new environment per document)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = meta.get("entry-points", {})
    text = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in groups.items()
    )
    (info / "entry_points.txt").write_text(text)


def apply_diff(target: Path, diff: str) -> None:
    """Apply a ```` ```diff ```` block's ``-``/``+`` line pairs to ``target``."""
    lines = target.read_text().split("\n")
    body = diff.split("\n")[1:]
    i = 0
    while i < len(body):
        old = []
        while i < len(body) and body[i].startswith("-"):
            old.append(body[i][1:])
            i += 1
        new = []
        while i < len(body) and body[i].startswith("+"):
            new.append(body[i][1:])
            i += 1
        assert len(old) == len(new), f"{target.name}: {len(old)} '-' lines, {len(new)} '+'"
        for o, n in zip(old, new, strict=True):
            assert lines.count(o) == 1, f"{target.name}: {o!r} is not one line of the file"
            lines[lines.index(o)] = n
        if not old:
            i += 1
    target.write_text("\n".join(lines))


def _output_of(lines: list[str], i: int) -> list[str]:
    out = []
    for line in lines[i + 1 :]:
        if line.startswith("$ "):
            break
        out.append(line)
    return out
