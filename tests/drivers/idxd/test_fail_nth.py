"""fail_nth over the driver's life: probe → system PASID → WQ enable → memcpy on
both WQs → remove. Each injection point is its own test item: the failure must
unwind with nothing leaked (memory, IRQs, PASIDs) and no unexpected WARN."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drivers.idxd.init import idxd_devices, idxd_exit_module, idxd_init_module
from kernel.boot import Kernel
from kernel.dma.dmaengine import DMA_COMPLETE, dma_release_channel, dma_request_chan
from kernel.errno import KernelError
from kernel.fault_inject import count_points, injector
from kernel.idr import ida_is_empty
from kernel.iommu.iommu import iommu_state
from kernel.irq import irq_controller
from tests.drivers.idxd.client import MemcpyClient
from tests.drivers.idxd.conftest import boot_idxd, direct_spec, mock_spec

SPECS: dict[str, Callable[[], dict[str, object]]] = {"mock": mock_spec, "direct": direct_spec}


def boot_without_idxd(spec: str) -> Kernel:
    """A kernel whose idxd module is not initialised yet (so injections hit only
    the driver's own allocations, not the rest of boot)."""
    k = boot_idxd(SPECS[spec](), "idxd.default_config=1")
    idxd_exit_module()
    return k


def scenario() -> None:
    idxd_init_module()
    for d in idxd_devices():
        for wq in d.wqs:
            if wq.dma_chan is not None:
                client = MemcpyClient(dma_request_chan(None, wq.dma_chan.name))
                try:
                    client.memcpy(8192)
                finally:
                    dma_release_channel(client.chan)
    idxd_exit_module()


def count(spec: str) -> int:
    k = boot_without_idxd(spec)
    try:
        return len(count_points(scenario))
    finally:
        k.shutdown()


POINTS = {s: count(s) for s in SPECS}


def run_nth(spec: str, nth: int) -> None:
    k = boot_without_idxd(spec)
    baseline = {(a.kind, a.addr) for a in k.mm.live()}
    irqs = set(irq_controller().descs)
    injector().arm(nth)
    try:
        try:
            scenario()
        except KernelError:
            pass
        finally:
            site = injector().injected_at
            injector().disarm()
        idxd_exit_module()
        assert site is not None, "the injection point was not reached"
        assert set(irq_controller().descs) == irqs
        assert ida_is_empty(iommu_state().global_pasid_ida)
        assert not k.warnings(), [w.message for w in k.warnings()]
    finally:
        k.shutdown()
    # After shutdown, so that what live IOMMU domains hold (their page-table pages)
    # is gone and only what the failing path forgot stays.
    leaked = [a for a in k.mm.live() if (a.kind, a.addr) not in baseline]
    assert leaked == [], f"failing {site} leaked {leaked}"


@pytest.mark.parametrize(
    ("spec", "nth"), [(s, n) for s, total in POINTS.items() for n in range(1, total + 1)]
)
def test_injected_failure_unwinds_cleanly(spec: str, nth: int) -> None:
    run_nth(spec, nth)


def test_the_scenario_completes_without_injection() -> None:
    k = boot_without_idxd("mock")
    try:
        idxd_init_module()
        d = idxd_devices()[0]
        assert d.pasid_enabled
        for wq in d.wqs[:2]:
            assert wq.dma_chan is not None
            c = MemcpyClient(dma_request_chan(None, wq.dma_chan.name))
            assert c.memcpy(8192) == (DMA_COMPLETE, True)
            dma_release_channel(c.chan)
        idxd_exit_module()
    finally:
        k.shutdown()
