"""fail_nth sweep over: probe device, attach default domain, attach PASID, map/unmap
100 buffers, detach, release. Every injected failure must unwind with nothing
leaked (pages and kmalloc objects via mm.live(), IOVAs, PASIDs) and no WARN.

Each counted injection point is its own pytest item (parametrized below), so
pytest-xdist spreads them; one more test runs kernel.fault_inject.sweep end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from unittest.mock import patch

import pytest

from hw import machine as hw_machine
from kernel.dma.direction import DMA_BIDIRECTIONAL
from kernel.dma.mapping import dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.errno import ENOSPC, KernelError
from kernel.fault_inject import count_points, injector, sweep
from kernel.iommu.dma_iommu import iommu_dma_live_iovas
from kernel.iommu.iommu import (
    iommu_get_domain_for_dev,
    iommu_probe_device,
    iommu_release_device,
    iommu_state,
)
from kernel.iommu.iommu_h import IOMMU_PASID_INVALID
from kernel.iommu.pasid import (
    iommu_alloc_global_pasid,
    iommu_attach_device_pasid,
    iommu_detach_device_pasid,
    iommu_free_global_pasid,
)
from kernel.mm import GFP_KERNEL, kfree, kmalloc
from tests.kernel.conftest import PASID_BDF, PASID_EDU_KIND, boot_kernel, pdev_at

NBUF = 100


@contextmanager
def _paused() -> Iterator[None]:
    """Setup the sweep must not count (iommufd's fail_nth_enable() comes after it)."""
    inj = injector()
    was = inj.active
    inj.active = False
    try:
        yield
    finally:
        inj.active = was


def _scenario() -> list[str]:
    """Returns the problems found (empty = clean unwind or clean success)."""
    with _paused():
        k = boot_kernel()
        dev = pdev_at(PASID_BDF)
        iommu_release_device(dev)
        bufs = [kmalloc(512, GFP_KERNEL) for _ in range(NBUF)]
        baseline = {(a.kind, a.addr) for a in k.mm.live()}
    problems: list[str] = []
    with suppress(KernelError):
        _body(dev, bufs)
    with _paused():
        live = {(a.kind, a.addr) for a in k.mm.live()}
        if live != baseline:
            problems.append(f"leaked: {sorted(live - baseline)}")
        if iommu_state().global_pasid_ida.ids:
            problems.append("PASID leaked")
        if dev.iommu is not None:
            problems.append("device left probed")
        problems += [w.message for w in k.warnings()]
        for b in bufs:
            kfree(b)
        k.warn.warnings.clear()
        k.shutdown()
    return problems


def _body(dev: object, bufs: list[int | None]) -> None:
    from kernel.pci import PciDev

    assert isinstance(dev, PciDev)
    iommu_probe_device(dev)
    try:
        dom = iommu_get_domain_for_dev(dev)
        assert dom is not None
        pasid = iommu_alloc_global_pasid(dev)
        if pasid == IOMMU_PASID_INVALID:
            raise ENOSPC("no PASID")
        try:
            iommu_attach_device_pasid(dom, dev, pasid)
            try:
                handles: list[int] = []
                try:
                    for b in bufs:
                        assert b is not None
                        h = dma_map_single(dev, b, 512, DMA_BIDIRECTIONAL)
                        if dma_mapping_error(dev, h):
                            raise ENOSPC("map failed")
                        handles.append(h)
                finally:
                    for h in handles:
                        dma_unmap_single(dev, h, 512, DMA_BIDIRECTIONAL)
                if iommu_dma_live_iovas(dev):
                    raise AssertionError("IOVA leaked")
            finally:
                iommu_detach_device_pasid(dom, dev, pasid)
        finally:
            iommu_free_global_pasid(pasid)
    finally:
        iommu_release_device(dev)


def _count() -> int:
    with patch.dict(hw_machine.DEVICE_KINDS, PASID_EDU_KIND):
        return len(count_points(_scenario))


POINTS = _count()


def test_scenario_has_injection_points_on_every_step() -> None:
    assert POINTS > NBUF


@pytest.mark.parametrize("nth", range(1, POINTS + 1))
def test_failure_at_point_unwinds_cleanly(nth: int) -> None:
    inj = injector()
    inj.arm(nth)
    try:
        problems = _scenario()
        site = inj.injected_at
    finally:
        inj.disarm()
    assert site is not None
    assert problems == []


def test_sweep_over_attach_and_pasid_sites_converges_cleanly() -> None:
    """kernel.fault_inject.sweep end to end, restricted to the attach and IDA sites
    (the per-point items above cover every site)."""
    steps = sweep(_scenario, frozenset({"iommu_attach", "ida_alloc"}))
    assert steps[-1].site is None
    assert {s.site for s in steps[:-1]} == {"iommu_attach", "ida_alloc"}
    assert all(s.error is None and s.result == [] for s in steps)
