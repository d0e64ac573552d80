"""iommufd's map path against the IOMMU API it sits on: ``IOMMU_IOAS_MAP`` +
``IOMMU_IOAS_UNMAP`` of 2 MiB through the ioctl bytes (struct packing, the object
lookup, the area bookkeeping, pinning and accounting, then ``iommu_map`` /
``iommu_unmap`` into the attached HWPT's domain) as a ratio to ``iommu_map`` +
``iommu_unmap`` of the same 2 MiB (same physical pages, 2 MiB aligned) on the same
domain in the same run, for VT-d and SMMUv3 (issue 16: <= 3).

The DSA is bound through its VFIO device file and attached to the IOAS, so the
domain is the auto HWPT's (second stage on VT-d, stage 1 on SMMUv3); the direct
pair uses an IOVA the IOAS does not map.
"""

from __future__ import annotations

from benchmarks._harness import BenchResult, figure
from benchmarks.bench_dma import best_cpu_of
from hw.machine import build_machine
from iommulab.presets import DSA_BDF, PRESETS
from kernel.boot import boot
from kernel.iommu.iommu_h import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE
from kernel.iommu.iommu_map import iommu_map, iommu_unmap
from kernel.iommufd.hw_pagetable import IommufdHwptPaging
from kernel.iommufd.uapi_helpers import Iommufd
from kernel.mm import GFP_KERNEL, alloc_pages_exact, free_pages_exact, virt_to_phys
from kernel.pci import pci_get_devices
from kernel.vfio.device_cdev import vfio_device_fops_cdev_open

SZ_2M = 1 << 21
PAIRS = 50
LIMIT = 3.0
VENDORS = {"VT-d": ("default", "drivers.intel_iommu"), "SMMUv3": ("smmuv3", "drivers.arm_smmu_v3")}


def _pair_us(vendor: str) -> tuple[float, float]:
    """(IOAS map+unmap, iommu_map+unmap) per pair, in microseconds."""
    preset, driver = VENDORS[vendor]
    k = boot(build_machine(PRESETS[preset]), "", builtins=(driver,), entry_points=False)
    try:
        with k:
            dsa = next(d for d in pci_get_devices() if str(d.addr) == DSA_BDF)
            vfio = vfio_device_fops_cdev_open(dsa)
            fd = Iommufd.open()
            vfio.bind_iommufd(fd.ctx)
            ioas = fd.ioas_alloc()
            hwpt = fd.ctx.objects[vfio.attach_pt(ioas)]
            assert isinstance(hwpt, IommufdHwptPaging) and hwpt.domain is not None
            domain = hwpt.domain
            raw = alloc_pages_exact(2 * SZ_2M, 0)
            assert raw is not None
            buf = raw + (-virt_to_phys(raw) % SZ_2M)  # 2 MiB aligned physically
            phys = virt_to_phys(buf)
            prot = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE

            def ioctl_pairs() -> None:
                for _ in range(PAIRS):
                    fd.ioas_map(ioas, buf, SZ_2M, iova=SZ_2M)
                    fd.ioas_unmap(ioas, SZ_2M, SZ_2M)

            def api_pairs() -> None:
                for _ in range(PAIRS):
                    iommu_map(domain, 4 * SZ_2M, phys, SZ_2M, prot, GFP_KERNEL)
                    iommu_unmap(domain, 4 * SZ_2M, SZ_2M)

            ioctl_us = best_cpu_of(ioctl_pairs, repeat=7) / PAIRS * 1e6
            api_us = best_cpu_of(api_pairs, repeat=7) / PAIRS * 1e6
            vfio.close()
            fd.close()
            free_pages_exact(raw, 2 * SZ_2M)
            return ioctl_us, api_us
    finally:
        k.shutdown()


def bench() -> list[BenchResult]:
    rows: list[BenchResult] = []
    for vendor in VENDORS:
        ioctl_us, api_us = _pair_us(vendor)
        rows.append(
            figure(
                f"IOMMU_IOAS_MAP+UNMAP 2 MiB, {vendor} (per pair)",
                ioctl_us,
                "us",
                LIMIT,
                ratio=ioctl_us / api_us,
                baseline=f"iommu_map+unmap {api_us:.1f} us",
            )
        )
    return rows
