"""iommulab's pytest plugin: a booted machine per test, and health checks at teardown.

Opt in (installing iommulab changes no other pytest run)::

    pytest -p iommulab.pytest_plugin          # or, in a conftest.py / test module:
    pytest_plugins = ["iommulab.pytest_plugin"]

Fixtures (all prefixed ``iommulab_``):

``iommulab_machine``
    The :class:`hw.machine.Machine` for this test: the preset named by
    ``@pytest.mark.iommulab_machine(NAME)`` (``default`` when unmarked), or a
    description dict given to the marker, built by the
    ``pytest_iommulab_make_machine`` hook. Its kinds include installed
    distributions' hardware models (``iommulab.hw`` entry points, :mod:`hw.kinds`);
    a broken one is skipped with a warning.
``iommulab_kernel``
    A :class:`kernel.boot.Kernel` booted on that machine with the command line of
    ``@pytest.mark.iommulab_cmdline(TEXT)``, by the ``pytest_iommulab_boot`` hook;
    the default boot also registers the driver modules named by
    ``@pytest.mark.iommulab_modules("my_driver", ...)`` (imported by name).
    At teardown it is shut down and the test **errors** if the kernel WARNed, an
    IOMMU unit used a stale cached translation, DMA-API debugging reported an
    error, or an allocation live after shutdown was not live after boot — unless
    the test said it expected that through ``iommulab_expect``. A test that
    already failed is not checked again.
``iommulab_expect``
    Declare expected findings: ``.warn(regex)``, ``.dma_debug_error(regex)``,
    ``.stale()``, ``.leak(regex)``. An expectation that is not met fails too.
    ``@pytest.mark.iommulab_allow("dma-debug", "warn:regex", ...)`` (on a test, a
    class or a module's ``pytestmark``) *allows* findings without requiring them,
    for suites whose purpose is to provoke them.
``iommulab_checks``
    The one teardown checker, for kernels a test or a conftest boots itself:
    ``iommulab_checks.track(kernel)`` right after boot; at teardown every tracked
    kernel is shut down and checked as ``iommulab_kernel`` is (and
    ``iommulab_kernel`` is tracked by it). The project's own conftests boot through it.
    A stale use, a DMA-API error or a page-table ownership error fails with its
    whole report (:meth:`hw.bus.Finding.report`: device, PASID, IOVA, domain, the
    cached and current entries, the table write and its call chain, the missing
    invalidation); ``--iommulab-caches`` appends every IOMMU unit's cache entries,
    taken before shutdown.
``iommulab_trace``
    Every trace event (tracepoints and ``hw_*`` model events) from fixture setup
    on: ``.events``, ``.names()``, ``.of(pattern)``, ``.ftrace()``, ``.chrome_json()``.
``iommulab_dmesg``
    The kernel log: ``str(...)``, ``.lines()``, ``.new()`` (since the fixture
    started), ``"text" in iommulab_dmesg``.

Factory hooks (``firstresult``; the defaults are ``trylast`` so a conftest wins,
as cocotb's pytest plugin does): ``pytest_iommulab_make_machine(request, name)``
and ``pytest_iommulab_boot(request, machine, cmdline)`` — implement either in a
conftest to swap the machine or boot with another vendor plugin.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest
from attrs import define, field

if TYPE_CHECKING:
    from hw.machine import Machine
    from iommulab.checks import Baseline, Finding
    from kernel.boot import Kernel
    from kernel.trace import TraceEvent

MARKERS = (
    "iommulab_machine(name): machine preset (or description dict) for iommulab_kernel",
    "iommulab_cmdline(text): kernel command line for iommulab_kernel",
    "iommulab_modules(*names): Python modules to import and register as kernel plugins "
    "(driver modules) when iommulab_kernel boots",
    "iommulab_allow(*checks): teardown findings allowed (not required): a check name "
    "(warn, stale, dma-debug, pt-owner, leak) or 'check:regex'",
)
_CALL_FAILED = pytest.StashKey[bool]()


class IommulabPytestHookspecs:
    """Hooks this plugin adds to pytest (registered by ``pytest_addhooks``)."""

    @pytest.hookspec(firstresult=True)
    def pytest_iommulab_make_machine(
        self, request: pytest.FixtureRequest, name: str | Mapping[str, Any]
    ) -> Machine | None:
        """Build the machine for ``request``'s test from the ``iommulab_machine``
        marker's argument (a preset name or a description dict). Stops at the
        first non-None result; the default builds the preset."""

    @pytest.hookspec(firstresult=True)
    def pytest_iommulab_boot(
        self, request: pytest.FixtureRequest, machine: Machine, cmdline: str
    ) -> Kernel | None:
        """Boot a kernel on ``machine``. Stops at the first non-None result; the
        default is :func:`kernel.boot.boot` with every built-in and installed plugin
        plus the kernel core's dump targets."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(IommulabPytestHookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("iommulab").addoption(
        "--iommulab-caches",
        action="store_true",
        default=False,
        help="attach every IOMMU unit's cache entries (iommulab dump vtd|smmuv3 "
        "--caches) to a teardown failure",
    )


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)


@pytest.hookimpl(trylast=True)
def pytest_iommulab_make_machine(
    request: pytest.FixtureRequest, name: str | Mapping[str, Any]
) -> Machine:
    from hw.machine import Machine, MachineSpec
    from iommulab.presets import preset

    spec = preset(name) if isinstance(name, str) else MachineSpec.from_dict(name)
    return Machine(spec)


def marked_modules(request: pytest.FixtureRequest) -> list[tuple[str, object]]:
    """The modules ``@pytest.mark.iommulab_modules(...)`` names (closest marker
    first, each once), imported, as ``(name, module)`` plugins for
    :func:`kernel.boot.boot`. A module that cannot be imported fails the test's
    setup with the import error."""
    names: list[str] = []
    for marker in request.node.iter_markers("iommulab_modules"):
        for arg in marker.args:
            if not isinstance(arg, str):
                raise pytest.UsageError(
                    f"@pytest.mark.iommulab_modules takes module names, got {arg!r}"
                )
            if arg not in names:
                names.append(arg)
    plugins: list[tuple[str, object]] = []
    for name in names:
        try:
            plugins.append((name, importlib.import_module(name)))
        except ImportError as exc:
            pytest.fail(f"@pytest.mark.iommulab_modules: cannot import {name!r} ({exc})")
    return plugins


@pytest.hookimpl(trylast=True)
def pytest_iommulab_boot(request: pytest.FixtureRequest, machine: Machine, cmdline: str) -> Kernel:
    from iommulab.cli import CORE_PLUGINS
    from kernel.boot import boot

    return boot(machine, cmdline, extra_plugins=[*marked_modules(request), *CORE_PLUGINS])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


def _marker_arg(request: pytest.FixtureRequest, name: str, default: Any) -> Any:
    marker = request.node.get_closest_marker(name)
    if marker is None:
        return default
    if len(marker.args) != 1:
        raise pytest.UsageError(f"@pytest.mark.{name} takes exactly one argument")
    return marker.args[0]


@define
class Expectations:
    """What a test expects to go wrong (each regex is searched in the finding)."""

    expected: list[tuple[str, str]] = field(factory=list)
    allowed: list[tuple[str, str]] = field(factory=list)
    """Findings that may happen (the ``iommulab_allow`` marker); none is required."""

    def warn(self, pattern: str = "") -> None:
        """A WARN whose message matches ``pattern`` is expected."""
        self.expected.append(("warn", pattern))

    def dma_debug_error(self, pattern: str = "") -> None:
        """A DMA-API debug error matching ``pattern`` (and the WARN it prints)."""
        self.expected.append(("dma-debug", pattern))

    def stale(self) -> None:
        """A stale cached translation is expected to be used."""
        self.expected.append(("stale", ""))

    def leak(self, pattern: str = "") -> None:
        """An allocation matching ``pattern`` (``kmalloc 64 bytes ...``) may stay live."""
        self.expected.append(("leak", pattern))

    def _covers(self, check: str, pattern: str, f: Finding) -> bool:
        if check == "dma-debug" and f.check == "warn" and f.message.startswith("DMA-API:"):
            return re.search(pattern, f.message) is not None
        return check == f.check and re.search(pattern, f.message) is not None

    def pt_owner(self, pattern: str = "") -> None:
        """A page-table write into a page that is not a page-table page is expected."""
        self.expected.append(("pt-owner", pattern))

    def unexplained(self, found: list[Finding]) -> list[str]:
        """Problems: findings no expectation covers, expectations nothing met."""
        from iommulab.checks import finding_text

        problems = [
            finding_text(f)
            for f in found
            if not any(self._covers(c, p, f) for c, p in (*self.expected, *self.allowed))
        ]
        for check, pattern in self.expected:
            if not any(self._covers(check, pattern, f) for f in found):
                problems.append(f"expected {check} {pattern!r} did not happen")
        return problems


@pytest.fixture
def iommulab_expect() -> Expectations:
    """Declare the WARNs, DMA-API errors, stale uses or leaks a test expects."""
    return Expectations()


@pytest.fixture
def iommulab_machine(request: pytest.FixtureRequest) -> Machine:
    """The machine of the ``iommulab_machine`` marker (default preset ``default``)."""
    name = _marker_arg(request, "iommulab_machine", "default")
    machine: Machine = request.config.hook.pytest_iommulab_make_machine(request=request, name=name)
    for problem in getattr(machine, "hw_problems", ()):
        warnings.warn(pytest.PytestWarning(f"iommulab: {problem}"), stacklevel=1)
    return machine


@define
class KernelChecks:
    """The kernels a test booted, each with what was live right after its boot."""

    booted: list[tuple[Kernel, Baseline]] = field(factory=list)
    dump_caches: bool = False
    """Keep the IOMMU units' cache dumps, taken before shutdown, in :attr:`caches`."""
    caches: list[str] = field(factory=list)

    def track(self, kernel: Kernel) -> Kernel:
        """Check ``kernel`` at this test's teardown (call right after booting it)."""
        from iommulab.checks import baseline

        self.booted.append((kernel, baseline(kernel)))
        return kernel

    def finish(self) -> list[Finding]:
        """Shut every kernel down (the last booted first) and collect the findings."""
        from iommulab.checks import findings
        from iommulab.hwdump import cache_dumps

        found: list[Finding] = []
        for k, base in reversed(self.booted):
            k.activate()
            if self.dump_caches:
                self.caches.append(cache_dumps(k.machine))
            k.shutdown()
            found.extend(findings(base))
        self.booted.clear()
        return found


@pytest.fixture
def iommulab_checks(
    request: pytest.FixtureRequest, iommulab_expect: Expectations
) -> Iterator[KernelChecks]:
    """The one teardown checker: every kernel given to ``.track(kernel)`` is shut down
    at teardown, and the test errors on an unexpected WARN, stale translation use,
    DMA-API error or leaked allocation, or an expectation that was not met."""
    from iommulab.checks import CHECKS

    for marker in request.node.iter_markers("iommulab_allow"):
        for arg in marker.args:
            check, _, pattern = str(arg).partition(":")
            if check not in CHECKS:
                raise pytest.UsageError(f"@pytest.mark.iommulab_allow: unknown check {check!r}")
            iommulab_expect.allowed.append((check, pattern))
    checks = KernelChecks(dump_caches=bool(request.config.getoption("iommulab_caches", False)))
    yield checks
    found = checks.finish()
    if request.node.stash.get(_CALL_FAILED, False):
        return
    message = teardown_failure(found, iommulab_expect, checks.caches)
    if message:
        pytest.fail(message, pytrace=False)


def teardown_failure(
    found: list[Finding], expect: Expectations, caches: list[str] | None = None
) -> str:
    """The message a test fails with at teardown (empty when healthy): every
    unexplained finding with its cause, then the cache dumps if they were taken."""
    problems = expect.unexplained(found)
    if not problems:
        return ""
    text = "iommulab: the kernel was not healthy at teardown:\n  " + "\n  ".join(problems)
    for dump in caches or ():
        if dump:
            text += "\n" + dump.rstrip("\n")
    return text


@pytest.fixture
def iommulab_kernel(
    request: pytest.FixtureRequest, iommulab_machine: Machine, iommulab_checks: KernelChecks
) -> Kernel:
    """A kernel booted for this test; unhealthy at teardown means the test errors."""
    cmdline = str(_marker_arg(request, "iommulab_cmdline", ""))
    k: Kernel = request.config.hook.pytest_iommulab_boot(
        request=request, machine=iommulab_machine, cmdline=cmdline
    )
    return iommulab_checks.track(k)


@define
class TraceCapture:
    """Trace events recorded while the fixture was active."""

    events: list[TraceEvent]

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def of(self, pattern: str) -> list[TraceEvent]:
        """Events matching ``system:event``, ``system:*``/``system`` or ``*``."""
        return [
            e for e in self.events if pattern in ("*", "*:*", e.name, e.system, f"{e.system}:*")
        ]

    def ftrace(self) -> str:
        from kernel.trace import to_ftrace

        return to_ftrace(self.events)

    def chrome_json(self) -> str:
        from iommulab.perfetto import to_chrome_json

        return to_chrome_json(self.events)


@pytest.fixture
def iommulab_trace(iommulab_kernel: Kernel) -> Iterator[TraceCapture]:
    """Every tracepoint and hardware-model event of the test."""
    from kernel.trace import capture

    iommulab_kernel.activate()
    with capture("*") as events:
        yield TraceCapture(events)


@define
class Dmesg:
    """The booted kernel's log."""

    kernel: Kernel
    start: int

    def lines(self) -> list[str]:
        return self.kernel.log.lines()

    def new(self) -> list[str]:
        """Lines logged since the fixture started."""
        return self.lines()[self.start :]

    def __str__(self) -> str:
        return self.kernel.dmesg()

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and text in str(self)


@pytest.fixture
def iommulab_dmesg(iommulab_kernel: Kernel) -> Dmesg:
    """The kernel log (``str``), its lines, and the lines since the test began."""
    return Dmesg(iommulab_kernel, len(iommulab_kernel.log.lines()))
