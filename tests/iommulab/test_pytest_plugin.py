"""The pytest plugin, run through ``pytester`` in-process: fixtures, markers, factory
hooks and each automatic failure at teardown."""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

PLUGIN = ("-p", "iommulab.pytest_plugin")


def run(pytester: pytest.Pytester, src: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_it=src)
    return pytester.runpytest_inprocess(*PLUGIN, *args)


# --------------------------------------------------------------------------- fixtures


def test_kernel_fixture_boots_the_default_preset(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        def test_it(iommulab_kernel, iommulab_machine):
            assert iommulab_kernel.up and iommulab_kernel.machine is iommulab_machine
            assert iommulab_machine.spec.name == "default"
        """,
    )
    res.assert_outcomes(passed=1)


def test_kernel_is_shut_down_after_the_test(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        kernels = []
        def test_one(iommulab_kernel):
            kernels.append(iommulab_kernel)
        def test_two(iommulab_kernel):
            assert not kernels[0].up and kernels[0] is not iommulab_kernel
        """,
    )
    res.assert_outcomes(passed=2)


def test_markers_choose_preset_and_cmdline(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        import pytest
        @pytest.mark.iommulab_machine("no-iommu")
        @pytest.mark.iommulab_cmdline("iommu.strict=0 loglevel=5")
        def test_it(iommulab_kernel):
            assert iommulab_kernel.machine.spec.name == "no-iommu"
            assert iommulab_kernel.param("loglevel") == 5
        """,
        "--strict-markers",
    )
    res.assert_outcomes(passed=1)


def test_machine_marker_takes_a_description(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        import pytest
        @pytest.mark.iommulab_machine({"name": "tiny", "ram": "16M"})
        def test_it(iommulab_machine):
            assert iommulab_machine.spec.ram_size == 16 << 20
        """,
    )
    res.assert_outcomes(passed=1)


def test_machine_marker_needs_one_argument(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        import pytest
        @pytest.mark.iommulab_machine("a", "b")
        def test_it(iommulab_machine):
            pass
        """,
    )
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*iommulab_machine takes exactly one argument*"])


def test_trace_fixture_captures_hardware_events(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        import json
        import pytest
        from kernel.delay import udelay
        from kernel.pci import pci_enable_device, pci_get_devices, pci_ioremap_bar

        @pytest.mark.iommulab_cmdline("module_blacklist=idxd")
        def test_it(iommulab_kernel, iommulab_trace):
            dsa = next(d for d in pci_get_devices() if d.vendor == 0x8086)
            pci_enable_device(dsa)
            pci_ioremap_bar(dsa, 0).writel(1 << 20, 0xA0)
            udelay(10)
            assert iommulab_trace.names() == ["hw_dsa:command"]
            assert iommulab_trace.of("hw_dsa") == iommulab_trace.of("hw_dsa:*")
            assert iommulab_trace.of("iommu:*") == []
            assert "command: dev=0000:00:02.0 cmd=0x1" in iommulab_trace.ftrace()
            doc = json.loads(iommulab_trace.chrome_json())
            assert {e.get("cat") for e in doc["traceEvents"]} == {None, "hw_dsa"}
        """,
    )
    res.assert_outcomes(passed=1)


def test_dmesg_fixture_reads_the_kernel_log(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        from kernel.printk import pr_info
        def test_it(iommulab_dmesg):
            assert "boot complete" in iommulab_dmesg and 42 not in iommulab_dmesg
            pr_info("hello from the test")
            assert iommulab_dmesg.new() == ["hello from the test"]
            assert iommulab_dmesg.lines()[-1] == "hello from the test"
            assert str(iommulab_dmesg).endswith("hello from the test")
        """,
    )
    res.assert_outcomes(passed=1)


# --------------------------------------------------------------------------- factory hooks


def test_conftest_swaps_the_machine_through_the_factory_hook(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from hw.machine import build_machine
        def pytest_iommulab_make_machine(request, name):
            return build_machine({"name": f"mine-{name}", "ram": "32M"})
        """
    )
    res = run(
        pytester,
        """
        def test_it(iommulab_kernel):
            assert iommulab_kernel.machine.spec.name == "mine-default"
        """,
    )
    res.assert_outcomes(passed=1)


def test_conftest_boots_with_another_plugin_set(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from kernel.boot import boot
        from kernel.hookspecs import hookimpl
        from kernel.module import KernelModule

        class Vendor:
            @hookimpl
            def iommulab_modules(self):
                return [KernelModule("vendor", init=lambda: None)]

        def pytest_iommulab_boot(request, machine, cmdline):
            return boot(machine, cmdline, builtins=(), entry_points=False,
                        extra_plugins=[("vendor", Vendor())])
        """
    )
    res = run(
        pytester,
        """
        def test_it(iommulab_kernel):
            assert [p.name for p in iommulab_kernel.plugins.report.loaded] == ["vendor"]
        """,
    )
    res.assert_outcomes(passed=1)


# --------------------------------------------------------------------------- automatic failures


def test_unexpected_warn_errors_at_teardown(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        from kernel.bug import WARN_ON
        def test_it(iommulab_kernel):
            WARN_ON(True, "driver forgot to unmap")
        """,
    )
    res.assert_outcomes(passed=1, errors=1)
    res.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_it*", "*not healthy at teardown*", "*warn: driver forgot*"]
    )


def test_checks_fixture_checks_kernels_the_test_boots_itself(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        from hw.machine import Machine
        from iommulab.presets import preset
        from kernel.boot import boot
        from kernel.bug import WARN_ON
        kernels = []
        def test_it(iommulab_checks):
            k = iommulab_checks.track(boot(Machine(preset("no-iommu")), "", builtins=()))
            kernels.append(k)
            WARN_ON(True, "second kernel warned")
        def test_shut_down_after(iommulab_checks):
            assert not kernels[0].up
        """,
    )
    res.assert_outcomes(passed=2, errors=1)
    res.stdout.fnmatch_lines(["*not healthy at teardown*", "*warn: second kernel warned*"])


def test_allow_marker_allows_findings_without_requiring_them(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        import pytest
        from kernel.bug import WARN_ON
        pytestmark = pytest.mark.iommulab_allow("warn:forgot")
        def test_warns(iommulab_kernel):
            WARN_ON(True, "driver forgot to unmap")
        def test_quiet(iommulab_kernel):
            pass
        def test_other_warn_still_errors(iommulab_kernel):
            WARN_ON(True, "something else")
        """,
    )
    res.assert_outcomes(passed=3, errors=1)
    res.stdout.fnmatch_lines(["*ERROR at teardown of test_other_warn_still_errors*"])


def test_allow_marker_refuses_an_unknown_check(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        import pytest
        @pytest.mark.iommulab_allow("typo")
        def test_it(iommulab_kernel):
            pass
        """,
    )
    assert res.ret != 0
    res.stdout.fnmatch_lines(["*unknown check 'typo'*"])


def test_expected_warn_passes(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        from kernel.bug import WARN_ON
        def test_it(iommulab_kernel, iommulab_expect):
            iommulab_expect.warn("forgot")
            WARN_ON(True, "driver forgot to unmap")
        """,
    )
    res.assert_outcomes(passed=1)


def test_expected_warn_that_does_not_happen_errors(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        def test_it(iommulab_kernel, iommulab_expect):
            iommulab_expect.warn("forgot")
        """,
    )
    res.assert_outcomes(passed=1, errors=1)
    res.stdout.fnmatch_lines(["*expected warn 'forgot' did not happen*"])


def test_stale_translation_errors_at_teardown(pytester: pytest.Pytester) -> None:
    # The VT-d model counts a stale IOTLB use in stats.stale_uses; the test stands in
    # for a driver that forgot an invalidation by bumping the model's own counter.
    res = run(
        pytester,
        """
        def test_it(iommulab_kernel):
            iommulab_kernel.machine.iommus["dmar0"].stats.stale_uses += 1
        """,
    )
    res.assert_outcomes(passed=1, errors=1)
    res.stdout.fnmatch_lines(["*stale: IOMMU unit dmar0 used a stale cached translation 1x*"])


def test_expected_stale_translation_passes(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        def test_it(iommulab_kernel, iommulab_expect):
            iommulab_expect.stale()
            iommulab_kernel.machine.iommus["dmar0"].stats.stale_uses += 2
        """,
    )
    res.assert_outcomes(passed=1)


DMA_BUG = """
import pytest
from kernel.dma.direction import DMA_TO_DEVICE
from kernel.dma.mapping import dma_map_single, dma_mapping_error, dma_unmap_single
from kernel.mm import kfree, kzalloc
from kernel.pci import pci_get_devices

@pytest.mark.iommulab_machine("no-iommu")
def test_it(iommulab_kernel, iommulab_expect):
    {expect}
    dev = pci_get_devices()[0]
    buf = kzalloc(256)
    handle = dma_map_single(dev, buf, 256, DMA_TO_DEVICE)
    dma_mapping_error(dev, handle)
    dma_unmap_single(dev, handle, 128, DMA_TO_DEVICE)
    kfree(buf)
"""


def test_dma_api_debug_error_errors_at_teardown(pytester: pytest.Pytester) -> None:
    res = run(pytester, DMA_BUG.format(expect="pass"))
    res.assert_outcomes(passed=1, errors=1)
    res.stdout.fnmatch_lines(["*dma-debug: device driver frees DMA memory with different size*"])


def test_expected_dma_api_debug_error_covers_its_warn(pytester: pytest.Pytester) -> None:
    res = run(pytester, DMA_BUG.format(expect='iommulab_expect.dma_debug_error("different size")'))
    res.assert_outcomes(passed=1)


def test_leak_errors_at_teardown(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        from kernel.mm import kzalloc
        def test_it(iommulab_kernel):
            kzalloc(64)
        """,
    )
    res.assert_outcomes(passed=1, errors=1)
    res.stdout.fnmatch_lines(["*leak: kmalloc 64 bytes at 0x*", "*test_it.py*"])


def test_expected_leak_passes(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        from kernel.mm import kzalloc
        def test_it(iommulab_kernel, iommulab_expect):
            iommulab_expect.leak("kmalloc 64 bytes")
            kzalloc(64)
        """,
    )
    res.assert_outcomes(passed=1)


def test_freed_allocations_are_not_leaks(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        from kernel.mm import kfree, kzalloc
        def test_it(iommulab_kernel):
            kfree(kzalloc(64))
        """,
    )
    res.assert_outcomes(passed=1)


def test_a_failed_test_is_not_checked_again(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        from kernel.mm import kzalloc
        def test_it(iommulab_kernel):
            kzalloc(64)
            assert False, "the test's own failure"
        """,
    )
    res.assert_outcomes(failed=1)


def test_markers_are_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    res = pytester.runpytest_inprocess(*PLUGIN, "--markers")
    res.stdout.fnmatch_lines(
        ["@pytest.mark.iommulab_machine(name)*", "@pytest.mark.iommulab_cmdline*"]
    )
    assert res.ret == pytest.ExitCode.OK


# --------------------------------------------------------------------------- iommulab_modules


DRIVER = """
from kernel.hookspecs import hookimpl
from kernel.module import InitLevel, KernelModule
from kernel.printk import pr_info


@hookimpl
def iommulab_modules():
    return [KernelModule("my_driver", init=lambda: pr_info("my_driver: loaded"),
                         level=InitLevel.DEVICE, description="a user's driver")]
"""


def test_modules_marker_loads_driver_modules_by_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(my_driver=DRIVER)
    pytester.syspathinsert()
    res = run(
        pytester,
        """
        import pytest

        @pytest.mark.iommulab_modules("my_driver")
        def test_loaded(iommulab_kernel, iommulab_dmesg):
            assert "my_driver: loaded" in iommulab_dmesg
            assert "my_driver" in [m.name for m in iommulab_kernel.loaded]

        def test_not_without_the_marker(iommulab_kernel, iommulab_dmesg):
            assert "my_driver: loaded" not in iommulab_dmesg

        @pytest.mark.iommulab_modules("my_driver_nosuch")
        def test_missing(iommulab_kernel):
            pass
        """,
    )
    res.assert_outcomes(passed=2, errors=1)
    res.stdout.fnmatch_lines(
        ["*@pytest.mark.iommulab_modules: cannot import 'my_driver_nosuch' (No module named*"]
    )


def test_iommulab_caches_attaches_the_units_cache_entries_to_a_failure(
    pytester: pytest.Pytester,
) -> None:
    res = run(
        pytester,
        """
        from hw.bus import PciAddr
        from kernel.dma.direction import DMA_TO_DEVICE
        from kernel.dma.mapping import dma_map_single, dma_unmap_single
        from kernel.pci import pci_enable_device, pci_get_devices, pci_set_master
        from tests.kernel.conftest import scratch_buffer

        def test_it(iommulab_kernel):
            edu = next(d for d in pci_get_devices() if d.vendor == 0x1234)
            pci_enable_device(edu)
            pci_set_master(edu)
            buf = scratch_buffer(4096)
            h = dma_map_single(edu, buf, 4096, DMA_TO_DEVICE)
            fn = iommulab_kernel.machine.functions[PciAddr.parse(str(edu.addr))]
            assert fn.dma_read(None, False, h, 8)[1] is None
            iommulab_kernel.machine.iommus["dmar0"].stats.stale_uses += 1
            print(f"IOVA {h:#x}")
        """,
        "--iommulab-caches",
        "-s",
    )
    res.assert_outcomes(passed=1, errors=1)
    iova = re.search(r"IOVA (0x[0-9a-f]+)", res.stdout.str())
    assert iova is not None
    res.stdout.fnmatch_lines(
        [
            "*stale: IOMMU unit dmar0 used a stale cached translation 1x*",
            "dmar0: caches",
            "  context cache: 1 entries",
            "*  IOTLB: 1 entries",
            f"    did=* pasid=0 iova {iova[1]} -> 0x* 4KiB level 1 r-*",
        ]
    )


def test_without_iommulab_caches_no_cache_dump_is_attached(pytester: pytest.Pytester) -> None:
    res = run(
        pytester,
        """
        def test_it(iommulab_kernel):
            iommulab_kernel.machine.iommus["dmar0"].stats.stale_uses += 1
        """,
    )
    res.assert_outcomes(passed=1, errors=1)
    assert "dmar0: caches" not in res.stdout.str()
