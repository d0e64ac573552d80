"""The SMMUv3 entry of the IOMMU core contract tests (tests/kernel/iommu/test_contract.py).

``make_kernel`` (tests/kernel/conftest.py) boots through that module's
``boot_kernel`` and hands the kernel to the pytest plugin's teardown checker
(``iommulab_checks``: WARN, stale use, DMA-API errors, leaks; shutdown).
:func:`smmuv3_vendor` routes that one boot to the ``smmuv3`` machine, so the SMMUv3
kernel gets exactly the same teardown as the mock's. The PASID device is the DSA (20
PASID bits), the plain one the edu toy device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel.boot import Kernel
from tests.drivers.arm_smmu_v3.machines import DSA_BDF, EDU_BDF, boot_smmuv3

if TYPE_CHECKING:
    from tests.kernel.conftest import KernelFactory
    from tests.kernel.iommu.test_contract import VendorSetup


def smmuv3_vendor(make_kernel: KernelFactory, cmdline: str) -> VendorSetup:
    from tests.kernel import conftest
    from tests.kernel.conftest import pdev_at
    from tests.kernel.iommu.test_contract import VendorSetup

    def boot_smmu(cmdline: str = "", **kw: Any) -> Kernel:
        return boot_smmuv3(cmdline)

    mock_boot = conftest.boot_kernel
    conftest.boot_kernel = boot_smmu
    try:
        k = make_kernel(cmdline)
    finally:
        conftest.boot_kernel = mock_boot
    return VendorSetup(k, pdev_at(DSA_BDF), pdev_at(EDU_BDF))


def _vendor_param() -> object:
    import pytest

    return pytest.param(smmuv3_vendor, id="smmuv3")


VENDOR_PARAM = _vendor_param()
"""What tests/kernel/iommu/test_contract.py appends to its ``VENDORS``."""
