"""Fault injection (lib/fault-inject.c and the ``fail_nth`` interface).

Every allocation point in the kernel calls :func:`should_fail` with its site name
(``kmalloc``, ``alloc_pages``, ``ida_alloc``, ``alloc_iova``, ``iommu_pgtable`` ...).
With ``fail_nth = n`` armed, the n-th counted call fails and the injector disarms,
as writing ``n`` to ``/proc/self/task/<tid>/fail-nth`` does. Armed with 0 it only
counts. Sites can be filtered. :func:`sweep` runs a scenario with n = 1, 2, ...
until a run completes without reaching the armed point, returning every injected
outcome: this is how iommufd's ``fail_nth`` selftest walks every error path.

The injector is the only kernel-side state that is not per kernel: ``fail-nth`` is
armed per task, and the task here is the test driving the sweep, which boots a
fresh kernel for every point; its count runs across whichever kernels it enters.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field, frozen


@define
class FaultInjector:
    active: bool = False
    nth: int = 0
    """The counted call that fails (0 = count only)."""
    sites: frozenset[str] | None = None
    """Only count calls from these sites (None = all)."""
    calls: int = 0
    injected_at: str | None = None
    seen: list[str] = field(factory=list)

    def arm(self, nth: int, sites: frozenset[str] | None = None) -> None:
        self.active = True
        self.nth = nth
        self.sites = sites
        self.calls = 0
        self.injected_at = None
        self.seen = []

    def disarm(self) -> None:
        self.active = False
        self.nth = 0

    def check(self, site: str) -> bool:
        if self.sites is not None and site not in self.sites:
            return False
        self.calls += 1
        self.seen.append(site)
        if self.nth and self.calls == self.nth:
            self.nth = 0
            self.injected_at = site
            return True
        return False


_injector = FaultInjector()


def injector() -> FaultInjector:
    return _injector


def should_fail(site: str) -> bool:
    """True when this call must fail (``should_fail(&fail_page_alloc.attr, size)``)."""
    return _injector.active and _injector.check(site)


@frozen
class SweepStep:
    nth: int
    site: str | None
    """The site that failed, or None for the final run that completed."""
    error: BaseException | None
    result: object


def sweep(
    scenario: Callable[[], object],
    sites: frozenset[str] | None = None,
    limit: int = 10_000,
) -> list[SweepStep]:
    """Run ``scenario`` with fail_nth = 1, 2, ... until no injection happens.

    ``scenario`` builds fresh state each time (boots a new kernel, say) and does
    its own clean-up checks; an exception it raises is kept in the step. Returns
    one step per injected failure plus the final clean run.
    """
    steps: list[SweepStep] = []
    for n in range(1, limit + 1):
        _injector.arm(n, sites)
        error: BaseException | None = None
        result: object = None
        try:
            result = scenario()
        except Exception as exc:  # collected for the caller to judge
            error = exc
        finally:
            site = _injector.injected_at
            _injector.disarm()
        steps.append(SweepStep(n, site, error, result))
        if site is None:
            return steps
    raise RuntimeError(f"fail_nth sweep did not converge within {limit} points")


def count_points(scenario: Callable[[], object], sites: frozenset[str] | None = None) -> list[str]:
    """Run ``scenario`` once, failing nothing; return the allocation sites it passed."""
    _injector.arm(0, sites)
    try:
        scenario()
    finally:
        seen = list(_injector.seen)
        _injector.disarm()
    return seen
