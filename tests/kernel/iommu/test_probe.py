"""Unit binding at boot, device probe and release, the PCI bus notifier, and the
choice of default domain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from hw.bus import IommuUnitInfo
from hw.machine import build_machine
from kernel import trace
from kernel.boot import Kernel, boot
from kernel.device import Device, device_add, device_del
from kernel.errno import EBUSY, EINVAL, ENODEV, ENOMEM, EOPNOTSUPP
from kernel.fault_inject import injector
from kernel.iommu.iommu import (
    __iommu_domain_alloc,
    dev_iommu_ops,
    device_iommu_mapped,
    generic_device_group,
    iommu_default_passthrough,
    iommu_get_domain_for_dev,
    iommu_group_get,
    iommu_probe_device,
    iommu_release_device,
    iommu_state,
    pci_device_group,
)
from kernel.iommu.iommu_device import iommu_device_register, iommu_device_unregister
from kernel.iommu.iommu_h import (
    IOMMU_DOMAIN_DMA,
    IOMMU_DOMAIN_DMA_FQ,
    IOMMU_DOMAIN_IDENTITY,
    IOMMU_DOMAIN_UNMANAGED,
)
from kernel.iommu.pasid import iommu_attach_device_pasid, iommu_detach_device_pasid
from kernel.module import IommuDriverInfo
from kernel.pci import PciDev
from tests.kernel import conftest
from tests.kernel.conftest import EDU_BDF, PASID_BDF, KernelFactory, pdev_at, take_warnings
from tests.kernel.iommu import mock_iommu
from tests.kernel.iommu.mock_hw import hw_entry
from tests.kernel.iommu.mock_iommu import domain_entry

FN0, FN1 = "0000:00:05.0", "0000:00:05.1"
SLOT = [
    {
        "kind": "pasid_edu",
        "bdf": FN0,
        "config": {"pasid_width": 8, "port_type": 0, "multifunction": True},
    },
    {"kind": "pasid_edu", "bdf": FN1, "config": {"pasid_width": 8, "port_type": 0}},
]


def _ctx(dev: PciDev, pasid: int | None = None) -> int | None:
    """The translation entry the hardware reads for ``dev`` (at ``pasid``); None: blocked."""
    return hw_entry(dev, pasid) or None


def _boot_with(
    monkeypatch: pytest.MonkeyPatch,
    make_kernel: KernelFactory,
    plugins: Sequence[tuple[str, object]],
    cmdline: str = "",
    **spec: Any,
) -> Kernel:
    """Boot through ``make_kernel`` (so teardown checks WARNs) with other plugins."""

    def boot_plugins(cmdline: str = "", **kw: Any) -> Kernel:
        m = build_machine(conftest.machine_spec(**kw))
        return boot(m, cmdline, builtins=(), entry_points=False, extra_plugins=plugins)

    with monkeypatch.context() as mp:
        mp.setattr(conftest, "boot_kernel", boot_plugins)
        return make_kernel(cmdline, **spec)


def _driver_plugin(info: IommuDriverInfo) -> object:
    class Plugin:
        @staticmethod
        @mock_iommu.hookimpl
        def iommulab_iommu_drivers() -> list[IommuDriverInfo]:
            return [info]

    return Plugin


# --------------------------------------------------------------------------- binding units


def test_unit_without_a_driver_leaves_devices_untranslated(
    monkeypatch: pytest.MonkeyPatch, make_kernel: KernelFactory
) -> None:
    k = _boot_with(monkeypatch, make_kernel, [])
    assert "iommu: no driver for MOCK unit mock0; devices left untranslated" in k.dmesg()
    assert pdev_at(EDU_BDF).iommu_group is None and not iommu_state().bound


def test_driver_failing_to_bring_up_its_unit_is_logged_and_skipped(
    monkeypatch: pytest.MonkeyPatch, make_kernel: KernelFactory
) -> None:
    def probe(unit: IommuUnitInfo) -> None:
        raise ENODEV("unit is dead")

    plugin = _driver_plugin(IommuDriverInfo("dead_iommu", "MOCK", probe))
    k = _boot_with(monkeypatch, make_kernel, [("dead", plugin)])
    assert "iommu: dead_iommu failed to bring up mock0: " in k.dmesg()
    assert "unit is dead" in k.dmesg()
    assert not iommu_state().bound and pdev_at(EDU_BDF).iommu is None


def test_units_of_a_driver_without_shutdown_are_unregistered_at_teardown(
    monkeypatch: pytest.MonkeyPatch, make_kernel: KernelFactory
) -> None:
    plugin = _driver_plugin(IommuDriverInfo("mock_noexit", "MOCK", mock_iommu.mock_probe))
    k = _boot_with(monkeypatch, make_kernel, [("noexit", plugin)])
    st = iommu_state()
    (unit,) = st.iommus
    assert st.bound == {"mock0": "mock_noexit"} and not st.drivers_up
    k.shutdown()
    assert not unit.registered


def test_unknown_pasid_api_generation_is_a_command_line_error(make_kernel: KernelFactory) -> None:
    k = make_kernel("iommu.pasid_api=v2")
    assert iommu_state().pasid_api == "upstream"
    assert any(
        "expected one of upstream, seed-v3, kernel-sva, got 'v2'" in e for e in k.cmdline.errors
    )


def test_seed_generation_is_announced_at_boot(make_kernel: KernelFactory) -> None:
    k = make_kernel("iommu.pasid_api=seed-v3")
    assert "iommu: PASID API generation: seed-v3" in k.dmesg()


# --------------------------------------------------------------------------- registration


def test_registering_a_unit_twice_is_ebusy(make_kernel: KernelFactory) -> None:
    make_kernel()
    (unit,) = iommu_state().iommus
    with pytest.raises(EBUSY):
        iommu_device_register(unit, mock_iommu._OPS, None)


def test_unregister_releases_devices_and_register_probes_them_again(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    (unit,) = iommu_state().iommus
    iommu_device_unregister(unit)
    assert dev.iommu is None and not device_iommu_mapped(dev) and not dev.dma_iommu
    assert not iommu_state().iommus and _ctx(dev) is None
    iommu_device_register(unit, mock_iommu._OPS, None)  # keeps its firmware node
    assert device_iommu_mapped(dev) and dev.dma_iommu and _ctx(dev) is not None


def test_probe_failure_while_registering_is_a_warning(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    (unit,) = iommu_state().iommus
    iommu_device_unregister(unit)
    injector().arm(1, frozenset({"kmalloc"}))
    try:
        iommu_device_register(unit, mock_iommu._OPS, None)
    finally:
        injector().disarm()
    assert f"pci {EDU_BDF}: iommu probe failed: " in k.dmesg()
    assert dev.iommu is None and pdev_at(PASID_BDF).iommu is not None


def test_driver_asking_for_an_unknown_domain_type_leaves_the_device_unprobed(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mock_iommu.MockIommuOps, "def_domain_type", lambda self, dev: 0x40)
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    assert dev.iommu is None and dev.iommu_group is None
    assert f"pci {EDU_BDF}: iommu probe failed: " in k.dmesg()
    assert "driver asked for unknown domain type 0x40" in k.dmesg()
    assert not iommu_state().group_ida.ids


# --------------------------------------------------------------------------- probe


def test_non_pci_device_has_no_iommu(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = Device("platform0")
    with pytest.raises(ENODEV):
        iommu_probe_device(dev)
    with pytest.raises(ENODEV):
        dev_iommu_ops(dev)
    with pytest.raises(EINVAL):
        pci_device_group(dev)
    assert not device_iommu_mapped(dev)


def test_probing_a_probed_device_is_a_no_op(make_kernel: KernelFactory) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    group = iommu_group_get(dev)
    iommu_probe_device(dev)
    assert iommu_group_get(dev) is group and group is not None and group.devices == [dev]


def test_device_on_a_unit_without_pasids_has_max_pasids_0(make_kernel: KernelFactory) -> None:
    make_kernel(pasid_width=0)
    assert pdev_at(PASID_BDF).iommu.max_pasids == 0


def test_probe_finalize_runs_once_the_device_is_in_its_group(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, object]] = []

    def probe_finalize(dev: Device) -> None:
        seen.append((dev.init_name, iommu_get_domain_for_dev(dev)))

    # On the ops object, not the class: Protocol isinstance checks are cached per class.
    monkeypatch.setattr(mock_iommu._OPS, "probe_finalize", probe_finalize, raising=False)
    make_kernel()
    names = [n for n, _ in seen]
    assert names == [EDU_BDF, PASID_BDF] and all(d is not None for _, d in seen)


def test_generic_device_group_gives_each_function_its_own_group(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        mock_iommu.MockIommuOps, "device_group", lambda self, dev: generic_device_group(dev)
    )
    make_kernel(devices=SLOT)
    assert iommu_group_get(pdev_at(FN0)) is not iommu_group_get(pdev_at(FN1))


def test_joining_a_group_fails_cleanly_when_out_of_memory(make_kernel: KernelFactory) -> None:
    k = make_kernel(devices=SLOT)
    a, b = pdev_at(FN0), pdev_at(FN1)
    iommu_release_device(b)
    before = {(x.kind, x.addr) for x in k.mm.live()}
    injector().arm(3, frozenset({"kmalloc"}))  # dev_iommu, driver info, group_device
    try:
        with pytest.raises(ENOMEM):
            iommu_probe_device(b)
    finally:
        injector().disarm()
    group = iommu_group_get(a)
    assert b.iommu is None and group is not None and group.devices == [a]
    assert {(x.kind, x.addr) for x in k.mm.live()} == before


def test_joining_a_group_fails_cleanly_when_the_attach_fails(make_kernel: KernelFactory) -> None:
    k = make_kernel(devices=SLOT)
    a, b = pdev_at(FN0), pdev_at(FN1)
    iommu_release_device(b)
    before = {(x.kind, x.addr) for x in k.mm.live()}
    injector().arm(1, frozenset({"iommu_attach"}))
    try:
        with pytest.raises(ENOMEM):
            iommu_probe_device(b)
    finally:
        injector().disarm()
    group = iommu_group_get(a)
    assert b.iommu is None and group is not None and group.devices == [a]
    assert {(x.kind, x.addr) for x in k.mm.live()} == before
    assert _ctx(b) is None


# --------------------------------------------------------------------------- release


def test_release_with_a_pasid_still_attached_warns_and_detaches_it(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel()
    dev = pdev_at(PASID_BDF)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None
    iommu_attach_device_pasid(dom, dev, 5)
    iommu_release_device(dev)
    assert _ctx(dev, 5) is None and _ctx(dev) is None
    assert take_warnings(k) == [f"iommu: {PASID_BDF} released with PASID 5 attached"]
    iommu_release_device(dev)  # already released: nothing to do


def test_release_of_one_group_device_stops_its_pasids_and_keeps_the_others(
    make_kernel: KernelFactory,
) -> None:
    make_kernel(devices=SLOT)
    a, b = pdev_at(FN0), pdev_at(FN1)
    dom = iommu_get_domain_for_dev(a)
    assert dom is not None
    iommu_attach_device_pasid(dom, a, 5)
    iommu_release_device(b)
    assert _ctx(b, 5) is None and _ctx(a, 5) == domain_entry(dom)
    group = iommu_group_get(a)
    assert group is not None and group.pasid_array == {5: dom}
    iommu_detach_device_pasid(dom, a, 5)


def test_release_of_a_group_device_without_pasids_leaves_the_pasid_alone(
    make_kernel: KernelFactory,
) -> None:
    spec = [SLOT[0], {**SLOT[1], "config": {"pasid_width": 0, "port_type": 0}}]
    k = make_kernel(devices=spec)
    a, b = pdev_at(FN0), pdev_at(FN1)
    dom = iommu_get_domain_for_dev(a)
    assert dom is not None
    iommu_attach_device_pasid(dom, a, 5)
    iommu_release_device(b)
    assert _ctx(a, 5) == domain_entry(dom)
    group = iommu_group_get(a)
    assert group is not None and group.pasid_array == {5: dom}
    iommu_release_device(a)
    assert take_warnings(k) == [f"iommu: {FN0} released with PASID 5 attached"]


def test_release_warns_when_the_blocked_domain_cannot_be_attached(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)

    def refuse(self: object, domain: object, dev: Device, old: object) -> None:
        raise ENOMEM("no blocking")

    monkeypatch.setattr(mock_iommu.MockBlockedOps, "attach_dev", refuse)
    iommu_release_device(dev)
    monkeypatch.undo()
    assert dev.iommu is None
    (msg,) = take_warnings(k)
    assert msg.startswith(f"iommu: blocking {EDU_BDF} failed: ")


# --------------------------------------------------------------------------- bus notifier


def test_hot_removed_device_is_released_and_hot_added_one_probed(
    make_kernel: KernelFactory,
) -> None:
    make_kernel()
    dev = pdev_at(EDU_BDF)
    device_del(dev)
    assert dev.iommu is None and _ctx(dev) is None
    device_add(dev)
    assert dev.iommu_group is not None and dev.dma_iommu and _ctx(dev) is not None


def test_hot_added_device_outside_every_unit_scope_stays_untranslated(
    make_kernel: KernelFactory,
) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    device_del(dev)
    (unit,) = iommu_state().iommus
    iommu_device_unregister(unit)
    device_add(dev)
    assert dev.iommu is None
    assert "iommu probe failed" not in k.dmesg()


def test_hot_add_probe_failure_is_a_warning(make_kernel: KernelFactory) -> None:
    k = make_kernel()
    dev = pdev_at(EDU_BDF)
    device_del(dev)
    injector().arm(1, frozenset({"kmalloc"}))
    try:
        device_add(dev)
    finally:
        injector().disarm()
    assert dev.iommu is None
    assert f"pci {EDU_BDF}: iommu probe failed: " in k.dmesg()


# --------------------------------------------------------------------------- default domain


def test_driver_preference_overrides_the_command_line_default(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        mock_iommu.MockIommuOps, "def_domain_type", lambda self, dev: IOMMU_DOMAIN_IDENTITY
    )
    make_kernel()
    dev = pdev_at(EDU_BDF)
    assert iommu_get_domain_for_dev(dev) is mock_iommu.IDENTITY_DOMAIN
    assert not dev.dma_iommu and not iommu_default_passthrough()


def test_passthrough_without_identity_domain_falls_back_to_translation(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mock_iommu._OPS, "identity_domain", None)
    k = make_kernel("iommu.passthrough=1")
    assert iommu_default_passthrough()
    dev = pdev_at(EDU_BDF)
    dom = iommu_get_domain_for_dev(dev)
    assert dom is not None and dom.type == IOMMU_DOMAIN_DMA and dev.dma_iommu
    assert "Device cannot be in identity domain; using a translated domain" in k.dmesg()
    with pytest.raises(EOPNOTSUPP):
        __iommu_domain_alloc(dev_iommu_ops(dev), dev, IOMMU_DOMAIN_IDENTITY)


def test_lazy_passthrough_fallback_gets_a_flush_queue_domain(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mock_iommu._OPS, "identity_domain", None)
    make_kernel("iommu.passthrough=1 iommu.strict=0")
    dom = iommu_get_domain_for_dev(pdev_at(EDU_BDF))
    assert dom is not None and dom.type == IOMMU_DOMAIN_DMA_FQ


def test_lazy_mode_needs_deferred_flush_capability(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mock_iommu.MockIommuOps, "capable", lambda self, dev, cap: False)
    make_kernel("iommu.strict=0")
    dom = iommu_get_domain_for_dev(pdev_at(EDU_BDF))
    assert dom is not None and dom.type == IOMMU_DOMAIN_DMA


def test_blocking_domain_is_a_paging_domain_when_the_driver_has_none(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mock_iommu._OPS, "blocked_domain", None)
    make_kernel()
    dev = pdev_at(EDU_BDF)
    from kernel.iommu.iommu import iommu_device_claim_dma_owner, iommu_device_release_dma_owner

    iommu_device_claim_dma_owner(dev, "vfio")
    group = iommu_group_get(dev)
    assert group is not None and group.blocking_domain is not None
    blocking = group.blocking_domain
    assert blocking.type == IOMMU_DOMAIN_UNMANAGED and group.domain is blocking
    assert not blocking.mappings()  # type: ignore[attr-defined]
    iommu_device_release_dma_owner(dev)
    iommu_release_device(dev)  # no blocked domain to park the device on
    assert dev.iommu is None


def test_tracepoints_record_group_membership_attach_map_and_unmap(
    make_kernel: KernelFactory,
) -> None:
    from kernel.iommu.iommu import iommu_attach_device, iommu_domain_free, iommu_paging_domain_alloc
    from kernel.iommu.iommu_h import IOMMU_READ
    from kernel.iommu.iommu_map import iommu_map, iommu_unmap

    make_kernel()
    dev = pdev_at(EDU_BDF)
    with trace.capture("iommu") as got:
        iommu_release_device(dev)
        iommu_probe_device(dev)
        dom = iommu_paging_domain_alloc(dev)
        iommu_attach_device(dom, dev)
        iommu_map(dom, 0x1000, 0x20000, 0x1000, IOMMU_READ, 0)
        iommu_unmap(dom, 0x1000, 0x1000)
    names = [e.event for e in got]
    assert names == [
        "remove_device_from_group",
        "attach_device_to_domain",
        "add_device_to_group",
        "attach_device_to_domain",
        "map",
        "unmap",
    ]
    from kernel.iommu.iommu import iommu_detach_device

    iommu_detach_device(dom, dev)
    iommu_domain_free(dom)


def test_devices_are_probed_against_the_unit_whose_scope_covers_them(
    monkeypatch: pytest.MonkeyPatch, make_kernel: KernelFactory
) -> None:
    def boot_two_units(cmdline: str = "", **kw: Any) -> Kernel:
        spec = conftest.machine_spec()
        spec["iommus"].append({"kind": "mock", "name": "mock1", "scope": [PASID_BDF]})
        return boot(
            build_machine(spec),
            cmdline,
            builtins=(),
            entry_points=False,
            extra_plugins=[("mock_iommu", mock_iommu)],
        )

    with monkeypatch.context() as mp:
        mp.setattr(conftest, "boot_kernel", boot_two_units)
        make_kernel()
    assert pdev_at(PASID_BDF).iommu.iommu_dev.name == "mock1"
    assert pdev_at(EDU_BDF).iommu.iommu_dev.name == "mock0"
    assert iommu_state().bound == {"mock0": "mock_iommu", "mock1": "mock_iommu"}


def test_paging_domains_get_the_drivers_page_sizes_and_ops_unless_they_bring_their_own(
    make_kernel: KernelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kernel.iommu.iommu import iommu_domain_free, iommu_paging_domain_alloc

    make_kernel()
    dev = pdev_at(EDU_BDF)
    own_ops = mock_iommu.MockDomainOps()

    def alloc(dev: Device) -> mock_iommu.MockDomain:
        return mock_iommu.MockDomain(ops=own_ops, name="own-ops")

    monkeypatch.setattr(mock_iommu._OPS, "domain_alloc_paging", alloc)
    dom = iommu_paging_domain_alloc(dev)
    assert dom.ops is own_ops and dom.pgsize_bitmap == mock_iommu.MOCK_PGSIZE_BITMAP
    assert dom.type == IOMMU_DOMAIN_UNMANAGED and dom.owner is mock_iommu._OPS
    iommu_domain_free(dom)
