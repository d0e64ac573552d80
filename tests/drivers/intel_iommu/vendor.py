"""The VT-d vendor for the IOMMU core contract tests (``tests/kernel/iommu/test_contract.py``).

The contract's ``make_kernel`` fixture boots mock machines and hands each kernel to
the pytest plugin's teardown checker (``iommulab_checks``). :func:`vtd_vendor` lets that
fixture boot the ``default`` VT-d machine instead (by standing in for the boot
function it calls), so VT-d kernels get the same teardown checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from iommulab.presets import DSA_BDF, EDU_BDF
from kernel.boot import Kernel
from tests.drivers.intel_iommu.conftest import boot_vtd, pdev
from tests.kernel import conftest as kernel_conftest

if TYPE_CHECKING:
    from tests.kernel.iommu.test_contract import VendorSetup


def _boot(cmdline: str = "", **kw: Any) -> Kernel:
    return boot_vtd(cmdline)[0]


def vtd_vendor(make_kernel: kernel_conftest.KernelFactory, cmdline: str) -> VendorSetup:
    """Boot the VT-d machine through ``make_kernel``; the DSA has PASIDs, edu has none."""
    from tests.kernel.iommu.test_contract import VendorSetup

    saved = kernel_conftest.boot_kernel
    kernel_conftest.boot_kernel = _boot
    try:
        k = make_kernel(cmdline)
    finally:
        kernel_conftest.boot_kernel = saved
    return VendorSetup(k, pdev(DSA_BDF), pdev(EDU_BDF))


VENDOR_PARAM = pytest.param(vtd_vendor, id="vtd")
"""What ``test_contract.VENDORS`` appends for VT-d."""
