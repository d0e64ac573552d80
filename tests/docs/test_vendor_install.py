"""Tutorial 3's vendor distribution installed for real, into a fresh virtual environment.

The docs runner (:mod:`tests.docs.runner`) plays ``pip install -e`` in-process; here pip
installs the tutorial's files — the driver plugin, its hardware kind, the machine file
and the pytest file with the ``iommulab_modules`` marker — into a new environment, and
the command line and pytest run there as a user would run them. Nothing is patched: the
new environment sees iommulab the way a layered virtual environment does (a ``.pth``
line adding this environment's site directory), and finds the distribution only
through its installed entry points. A second, broken distribution is installed beside
it: its entry points are reported with its name and skipped, and the machine still
builds. No network: pip runs with ``--no-index --no-deps --no-build-isolation``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.docs.runner import blocks

ROOT = Path(__file__).parents[2]
TUTORIAL = ROOT / "docs" / "tutorial-3-iommu-vendor-plugin.md"
BROKEN_PYPROJECT = """\
[project]
name = "broken-vendor"
version = "0.2"

[project.entry-points."iommulab.hw"]
gone_iommu = "broken_vendor_nosuch:Unit"
notamodel = "broken_vendor:Unit"
vtd = "hw.mock_iommu:MockIommuUnit"

[project.entry-points."iommulab.modules"]
broken_drv = "broken_vendor_nosuch"

[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[tool.setuptools]
py-modules = ["broken_vendor"]
"""


def _env() -> dict[str, str]:
    """This process's environment less what belongs to this test run."""
    drop = ("PYTHONPATH", "PYTEST_", "COV_CORE_", "COVERAGE_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


def _fresh_venv(where: Path) -> Path:
    """A new environment layered on this one; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    ask = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = _run([str(python), "-c", ask], where)
    base = sysconfig.get_path("purelib")
    (Path(site.stdout.strip()) / "_iommulab_base.pth").write_text(
        f"import site; site.addsitedir({base!r})\n"
    )
    return python


def test_the_vendor_distribution_works_from_a_fresh_environment(tmp_path: Path) -> None:
    toy = tmp_path / "toy-iommu"
    toy.mkdir()
    for lang, body in blocks(TUTORIAL.read_text()):
        first = body.partition("\n")[0]
        if lang in ("python", "toml") and first.startswith("# file: "):
            (toy / first.removeprefix("# file: ").strip()).write_text(body)
    broken = tmp_path / "broken-vendor"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (broken / "broken_vendor.py").write_text("class Unit:\n    pass\n")
    python = _fresh_venv(tmp_path / "venv")

    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    pip += ["--no-index", "--no-deps", "--no-build-isolation", "-e", str(toy), "-e", str(broken)]
    installed = _run(pip, tmp_path)
    assert installed.returncode == 0, installed.stderr

    boot = _run([str(python), "-m", "iommulab", "boot", "--machine-file", "toy.toml"], toy)
    assert boot.returncode == 0, boot.stderr
    assert "iommu: TOYT unit toy0 bound to driver toy_iommu" in boot.stdout
    assert "pci 0000:00:03.0" in boot.stdout
    warned = boot.stderr
    assert (
        "iommulab: warning: iommulab.hw entry point 'gone_iommu' of broken-vendor 0.2: "
        "cannot load broken_vendor_nosuch:Unit (ModuleNotFoundError" in warned
    )
    assert (
        "iommulab.hw entry point 'notamodel' of broken-vendor 0.2: broken_vendor:Unit is "
        "<class 'broken_vendor.Unit'>, neither a PciFunction subclass nor an IOMMU model" in warned
    )
    assert (
        "iommulab.hw entry point 'vtd' of broken-vendor 0.2: kind 'vtd' is already a built-in "
        "model's; skipped" in warned
    )
    assert (
        "module broken_drv failed to load: ModuleNotFoundError: No module named "
        "'broken_vendor_nosuch' (iommulab.modules entry point of broken-vendor 0.2); skipped"
    ) in boot.stdout

    tests = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], toy)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout
    assert "Unknown pytest.mark" not in tests.stdout
