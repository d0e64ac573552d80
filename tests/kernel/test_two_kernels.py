"""Two machines, two kernels, one process.

Claim: a booted kernel is one context object (:class:`kernel.boot.Kernel`) reached
through one current-kernel pointer, so a VT-d machine and an SMMUv3 machine can each
run their own kernel side by side. The founding scenario (idxd probe, the system
PASID attached to the DMA domain, a shared WQ, dmaengine memcpy through the IOMMU)
runs on both with the steps interleaved; each machine's RAM gets the bytes its own
kernel asked for, each dmesg holds only its own kernel's lines, neither IOMMU model
sees a stale translation, nothing leaks, and shutting one kernel down leaves the
other working. Interrupts and timer events of one machine land in its own kernel
even when the other kernel is current.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from attrs import define

from drivers.arm_smmu_v3.arm_smmu_v3 import arm_smmu_smmus
from drivers.idxd.init import idxd_devices
from drivers.intel_iommu.dmar import dmar_state
from hw.machine import Machine
from iommulab import checks
from iommulab.cli import CORE_PLUGINS
from iommulab.presets import preset
from kernel.boot import Kernel, boot
from kernel.context import KernelSlot, current, current_kernel, has_kernel, kernel_callback
from kernel.delay import TimerList, jiffies, mod_timer, timer_setup
from kernel.dma.direction import DMA_FROM_DEVICE, DMA_TO_DEVICE
from kernel.dma.dmaengine import (
    DMA_COMPLETE,
    DMA_IN_PROGRESS,
    DMA_PREP_INTERRUPT,
    DmaChan,
    DmaengineResult,
    dma_release_channel,
    dma_request_chan,
    dma_sync_wait,
    dmaengine_prep_dma_memcpy,
    dmaengine_submit,
    dmaengine_tx_status,
)
from kernel.dma.mapping import dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.io import live_mappings
from kernel.iommu.dma_iommu import IommuDmaCookie
from kernel.iommu.iommu import iommu_get_domain_for_dev
from kernel.irq import irq_controller
from kernel.mm import alloc_pages_exact, free_pages_exact, memory_write, virt_to_phys
from kernel.pci import pci_get_devices
from kernel.printk import pr_info
from kernel.trace import capture

SIZE = 64 << 10
SHARED_WQ_CHAN = "dma1chan0"
"""The shared WQ's channel: descriptors go by ENQCMDS tagged with the system PASID."""


@define(eq=False)
class Run:
    """One machine's side of the scenario, step by step."""

    kernel: Kernel
    seed: int
    chan: DmaChan | None = None
    src: int = 0
    dst: int = 0
    src_dma: int = 0
    dst_dma: int = 0
    cookie: int = 0
    results: list[DmaengineResult] | None = None
    ran_in: list[Kernel] | None = None

    @property
    def pattern(self) -> bytes:
        one = bytes((self.seed * 31 + i) & 0xFF for i in range(256))
        return (one * (SIZE // 256))[:SIZE]

    def ram(self, vaddr: int) -> bytes:
        """What the machine's RAM holds at ``vaddr`` (read from the hardware model)."""
        m = self.kernel.machine
        assert isinstance(m, Machine)
        with self.kernel:
            phys = virt_to_phys(vaddr)
        return m.memory.read(phys, SIZE)


def _boot(name: str, cmdline: str = "") -> Kernel:
    return boot(Machine(preset(name)), cmdline, extra_plugins=CORE_PLUGINS)


@pytest.fixture
def pair() -> Iterator[tuple[Kernel, Kernel]]:
    """A VT-d machine and an SMMUv3 machine, each with its kernel up; shut down at
    the end (a test may shut one down itself)."""
    vtd = _boot("default")
    smmu = _boot("smmuv3")
    yield vtd, smmu
    for k in (vtd, smmu):
        k.shutdown()


# -- the scenario's steps (each runs under the kernel given) ------------------------------


def step_request(r: Run) -> None:
    with r.kernel:
        (idxd,) = idxd_devices()
        assert idxd.pasid_enabled
        r.chan = dma_request_chan(None, SHARED_WQ_CHAN)


def step_buffers(r: Run) -> None:
    with r.kernel:
        src = alloc_pages_exact(SIZE, 0)
        dst = alloc_pages_exact(SIZE, 0)
        assert src is not None and dst is not None
        r.src, r.dst = src, dst
        memory_write(src, r.pattern)
        memory_write(dst, bytes(SIZE))


def step_map(r: Run) -> None:
    with r.kernel:
        assert r.chan is not None
        dev = r.chan.device.dev
        r.src_dma = dma_map_single(dev, r.src, SIZE, DMA_TO_DEVICE)
        r.dst_dma = dma_map_single(dev, r.dst, SIZE, DMA_FROM_DEVICE)
        assert not dma_mapping_error(dev, r.src_dma)
        assert not dma_mapping_error(dev, r.dst_dma)


def step_submit(r: Run) -> None:
    with r.kernel:
        assert r.chan is not None
        tx = dmaengine_prep_dma_memcpy(r.chan, r.dst_dma, r.src_dma, SIZE, DMA_PREP_INTERRUPT)
        assert tx is not None
        results: list[DmaengineResult] = []
        ran_in: list[Kernel] = []

        def done(_param: object, res: DmaengineResult) -> None:
            results.append(res)
            ran_in.append(current_kernel())

        tx.callback_result = done
        r.results, r.ran_in = results, ran_in
        r.cookie = dmaengine_submit(tx)
        assert r.cookie > 0


def step_wait(r: Run) -> None:
    with r.kernel:
        assert r.chan is not None
        assert dma_sync_wait(r.chan, r.cookie) == DMA_COMPLETE


def step_unmap_and_free(r: Run) -> None:
    with r.kernel:
        assert r.chan is not None
        dev = r.chan.device.dev
        dma_unmap_single(dev, r.src_dma, SIZE, DMA_TO_DEVICE)
        dma_unmap_single(dev, r.dst_dma, SIZE, DMA_FROM_DEVICE)
        free_pages_exact(r.src, SIZE)
        free_pages_exact(r.dst, SIZE)
        dma_release_channel(r.chan)
        r.chan = None


STEPS = (step_request, step_buffers, step_map, step_submit, step_wait)


def run_interleaved(*runs: Run) -> None:
    """Every step on every machine before the next step anywhere."""
    for step in STEPS:
        for r in runs:
            step(r)


# -- the founding scenario on both machines -------------------------------------------------


def test_both_machines_copy_their_own_bytes_through_their_own_iommu(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, smmu = pair
    a, b = Run(vtd, seed=1), Run(smmu, seed=2)
    run_interleaved(a, b)
    for r in (a, b):
        assert r.ram(r.dst) == r.pattern
        assert r.results is not None and [x.result for x in r.results] == [0]
        assert r.ran_in == [r.kernel]
        with r.kernel:  # the device saw IOVAs: the copy went through the IOMMU
            assert r.dst_dma != virt_to_phys(r.dst) and r.src_dma != virt_to_phys(r.src)
    assert a.pattern != b.pattern
    for r in (a, b):
        step_unmap_and_free(r)


def test_each_kernel_has_its_own_devices_pasid_and_driver_state(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, smmu = pair
    with vtd:
        vtd_devs = pci_get_devices()
        vtd_idxd = idxd_devices()
        assert [u.name for u in dmar_state().units] == ["dmar0"]
        assert arm_smmu_smmus() == []
    with smmu:
        smmu_devs = pci_get_devices()
        smmu_idxd = idxd_devices()
        assert dmar_state().units == []
        assert [s.name for s in arm_smmu_smmus()] == ["smmu0"]
    assert not {id(d) for d in vtd_devs} & {id(d) for d in smmu_devs}
    # the same names and numbers on each: nothing was allocated from a shared IDA
    assert [(d.name, d.pasid) for d in vtd_idxd] == [(d.name, d.pasid) for d in smmu_idxd]
    assert [(d.name, d.pasid) for d in vtd_idxd] == [("dsa0", 1)]


def test_each_dmesg_holds_only_its_own_machines_lines(pair: tuple[Kernel, Kernel]) -> None:
    vtd, smmu = pair
    run_interleaved(Run(vtd, seed=3), Run(smmu, seed=4))
    vtd_log, smmu_log = vtd.dmesg(), smmu.dmesg()
    assert "DMAR: dmar0: Using Queued invalidation" in vtd_log
    assert "arm-smmu-v3" not in vtd_log and "IORT" not in vtd_log
    assert "arm-smmu-v3 smmu0: allocated 256 entries for cmdq" in smmu_log
    assert "DMAR" not in smmu_log
    for log in (vtd_log, smmu_log):
        assert log.count("Linux version") == 1
        assert log.count("system PASID 1 attached to the DMA domain") == 1
        assert log.count("iommulab: boot complete") == 1


def test_neither_kernel_warns_leaks_or_uses_a_stale_translation(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, smmu = pair
    bases = [checks.baseline(k) for k in pair]
    runs = [Run(vtd, seed=5), Run(smmu, seed=6)]
    run_interleaved(*runs)
    for r in runs:
        step_unmap_and_free(r)
    for k in pair:
        assert sum(checks.stale_uses(k).values()) == 0
        k.shutdown()
    for base in bases:
        assert checks.findings(base) == []


def test_shutting_one_kernel_down_leaves_the_other_working(pair: tuple[Kernel, Kernel]) -> None:
    vtd, smmu = pair
    with smmu:
        vtd.shutdown()
        assert current.kernel is smmu
    assert not vtd.up and smmu.up
    assert vtd.dmesg().splitlines()[-1].endswith("reboot: Power down")
    assert "reboot: Power down" not in smmu.dmesg()
    base = checks.baseline(smmu)
    r = Run(smmu, seed=7)
    run_interleaved(r)
    assert r.ram(r.dst) == r.pattern
    step_unmap_and_free(r)
    smmu.shutdown()
    assert checks.findings(base) == []
    with vtd:
        assert live_mappings() == [] and pci_get_devices() == []


def test_booting_twice_on_one_machine_is_refused_but_a_second_machine_is_fine(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, _ = pair
    from kernel.errno import KernelError

    with pytest.raises(KernelError, match="already running on this machine"):
        boot(vtd.machine, "", extra_plugins=CORE_PLUGINS)
    third = _boot("default")
    try:
        assert third.up and third is current.kernel
    finally:
        third.shutdown()


# -- events of one machine while the other kernel is current ---------------------------------


def test_a_completion_interrupt_of_machine_a_lands_in_kernel_a_while_b_is_current(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, smmu = pair
    a = Run(vtd, seed=8)
    for step in (step_request, step_buffers, step_map, step_submit):
        step(a)
    with vtd:
        irqs_before = {d.irq: d.count for d in irq_controller().descs.values()}
    with smmu:
        smmu_irqs = {d.irq: d.count for d in irq_controller().descs.values()}
        vtd.machine.clock.advance(10_000_000)  # the DSA runs the descriptor, raises its MSI
        assert current.kernel is smmu
        assert {d.irq: d.count for d in irq_controller().descs.values()} == smmu_irqs
    assert a.ran_in == [vtd] and a.results is not None and a.results[0].result == 0
    assert a.ram(a.dst) == a.pattern
    with vtd:
        counts = {d.irq: d.count for d in irq_controller().descs.values()}
        assert sum(counts.values()) > sum(irqs_before.values())
        assert a.chan is not None
        assert dmaengine_tx_status(a.chan, a.cookie) == DMA_COMPLETE
    step_unmap_and_free(a)


def test_a_timer_armed_by_kernel_a_fires_in_kernel_a_while_b_is_current(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, smmu = pair
    fired: list[Kernel] = []

    def fn(_t: TimerList) -> None:
        fired.append(current_kernel())
        pr_info("two-kernels: timer fired")

    with vtd:
        t = timer_setup(fn)
        mod_timer(t, jiffies() + 2)
    with smmu:
        vtd.machine.clock.advance(1_000_000)
        assert fired == []
        vtd.machine.clock.advance(2_000_000)
        assert current.kernel is smmu
    assert fired == [vtd]
    assert "two-kernels: timer fired" in vtd.dmesg()
    assert "two-kernels: timer fired" not in smmu.dmesg()


def test_the_lazy_flush_queue_timer_flushes_machine_a_while_b_is_current() -> None:
    """``iommu.strict=0``: an unmap leaves the IOVA on the flush queue; its timer,
    fired by machine A's clock while B is current, flushes A's IOTLB (traced by A's
    tracer, not B's) and frees the IOVA in A."""
    vtd = _boot("default", "iommu.strict=0 trace_event=intel_iommu:cache_tag_flush_all")
    smmu = _boot("smmuv3", "trace_event=intel_iommu:cache_tag_flush_all")
    try:
        a = Run(vtd, seed=9)
        for step in STEPS:
            step(a)
        with vtd:
            assert a.chan is not None
            cookie = iommu_get_domain_for_dev(a.chan.device.dev).iova_cookie  # type: ignore[union-attr]
        step_unmap_and_free(a)
        assert isinstance(cookie, IommuDmaCookie) and cookie.fq
        flushes = cookie.fq_flush_finish_cnt
        vtd.tracer.ring.clear()
        with smmu:
            vtd.machine.clock.advance(50_000_000)
            assert current.kernel is smmu
        assert not cookie.fq and cookie.fq_flush_finish_cnt == flushes + 1
        names = [e.name for e in vtd.tracer.ring]
        assert names and set(names) == {"intel_iommu:cache_tag_flush_all"}
        assert not smmu.tracer.ring
        assert sum(checks.stale_uses(vtd).values()) == 0
    finally:
        smmu.shutdown()
        vtd.shutdown()


def test_kernel_callback_restores_the_kernel_that_was_current(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, smmu = pair
    with vtd:
        cb = kernel_callback(current_kernel)
    with smmu:
        assert cb() is vtd
        assert current.kernel is smmu


def test_nested_with_blocks_restore_in_order(pair: tuple[Kernel, Kernel]) -> None:
    vtd, smmu = pair
    vtd.activate()
    with smmu:
        with vtd:
            assert current.kernel is vtd
        assert current.kernel is smmu
    assert current.kernel is vtd


def test_dma_sync_wait_on_a_busy_channel_advances_only_its_own_machine(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, smmu = pair
    a, b = Run(vtd, seed=10), Run(smmu, seed=11)
    for step in (step_request, step_buffers, step_map, step_submit):
        step(a)
        step(b)
    smmu_now = smmu.machine.clock.now
    step_wait(a)
    assert smmu.machine.clock.now == smmu_now
    with smmu:
        assert b.chan is not None
        assert dmaengine_tx_status(b.chan, b.cookie) == DMA_IN_PROGRESS
    step_wait(b)
    for r in (a, b):
        assert r.ram(r.dst) == r.pattern
        step_unmap_and_free(r)


def test_no_kernel_current_is_reported_by_name() -> None:
    saved = current.kernel
    try:
        from kernel.context import _NoKernel

        current.kernel = _NoKernel()  # type: ignore[assignment]
        assert not has_kernel()
        with pytest.raises(RuntimeError, match="no kernel is booted"):
            pr_info("nobody listens")
        with pytest.raises(RuntimeError, match="no kernel is booted"):
            current_kernel()
    finally:
        current.kernel = saved


def test_trace_events_of_machine_a_land_in_kernel_a_while_b_is_current() -> None:
    """Both kernels enable the same events; machine A's IOMMU model (hardware trace
    sink) and A's idxd completion (tracepoint in the interrupt thread) record into
    A's tracer, though B is current when A's clock runs the work."""
    events = "trace_event=hw_vtd:iotlb_miss,idxd:complete"
    vtd = _boot("default", events)
    smmu = _boot("smmuv3", events)
    try:
        a = Run(vtd, seed=12)
        for step in (step_request, step_buffers, step_map, step_submit):
            step(a)
        vtd.tracer.ring.clear()
        smmu.tracer.ring.clear()
        with smmu:
            vtd.machine.clock.advance(10_000_000)
        names = {e.name for e in vtd.tracer.ring}
        assert names == {"hw_vtd:iotlb_miss", "idxd:complete"}
        assert not smmu.tracer.ring
        step_unmap_and_free(a)
    finally:
        smmu.shutdown()
        vtd.shutdown()


def test_a_tracepoint_enabled_in_one_kernel_records_nothing_in_the_other(
    pair: tuple[Kernel, Kernel],
) -> None:
    vtd, smmu = pair
    with vtd, capture("idxd:submit") as got:
        with smmu:
            run_interleaved(Run(smmu, seed=13))
        assert got == [] and not smmu.tracer.ring
        run_interleaved(Run(vtd, seed=14))
    assert [e.name for e in got] == ["idxd:submit"]


def test_a_kernel_slot_holds_one_instance_per_kernel(pair: tuple[Kernel, Kernel]) -> None:
    vtd, smmu = pair
    slot: KernelSlot[list[str]] = KernelSlot(object(), list)
    with vtd:
        assert slot.peek() is None
        slot.get().append("vtd")
        assert slot.get() == ["vtd"]
    with smmu:
        assert slot.peek() is None
        assert slot.get() == []
    with vtd:
        assert slot.peek() == ["vtd"]
