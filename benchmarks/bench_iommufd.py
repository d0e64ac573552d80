"""iommufd's map path against the IOMMU API it sits on: ``IOMMU_IOAS_MAP`` +
``IOMMU_IOAS_UNMAP`` of 2 MiB through the ioctl bytes (struct packing, the object
lookup, the area bookkeeping, pinning and accounting, then ``iommu_map`` /
``iommu_unmap`` into the attached HWPT's domain) as a ratio to ``iommu_map`` +
``iommu_unmap`` of the same 2 MiB (the same physical pages, as the runs the VMM
process's page tables map them to) on the same domain in the same run, for VT-d
and SMMUv3 (issue 16: <= 3). The user memory is the VMM process's anonymous
mapping, populated at mmap: each IOAS map pins it with ``pin_user_pages_fast``
and each unmap unpins it, as in Linux.

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
from kernel.fs import ksys_mmap
from kernel.iommu.iommu_h import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE
from kernel.iommu.iommu_map import iommu_map, iommu_unmap
from kernel.iommufd.hw_pagetable import IommufdHwptPaging
from kernel.iommufd.uapi_helpers import Iommufd
from kernel.mm import GFP_KERNEL, PAGE_SIZE
from kernel.mmap import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PROT_READ, PROT_WRITE
from kernel.pci import pci_get_devices
from kernel.pgtable import pte_pfn_phys
from kernel.sched import do_exit, user_process_create
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
            task = user_process_create("vmm")
            fd = Iommufd.open(task)
            vfio.bind_iommufd(fd.ctx)
            ioas = fd.ioas_alloc()
            hwpt = fd.ctx.objects[vfio.attach_pt(ioas)]
            assert isinstance(hwpt, IommufdHwptPaging) and hwpt.domain is not None
            domain = hwpt.domain
            flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE
            buf = ksys_mmap(task, 0, SZ_2M, PROT_READ | PROT_WRITE, flags, -1)
            assert task.mm is not None
            runs: list[tuple[int, int]] = []  # (phys, bytes) as the process maps them
            for off in range(0, SZ_2M, PAGE_SIZE):
                hit = task.mm.pgd.walk(buf + off)
                assert hit is not None
                phys = pte_pfn_phys(hit[0], hit[1], buf + off)
                if runs and runs[-1][0] + runs[-1][1] == phys:
                    runs[-1] = (runs[-1][0], runs[-1][1] + PAGE_SIZE)
                else:
                    runs.append((phys, PAGE_SIZE))
            prot = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE

            def ioctl_pairs() -> None:
                for _ in range(PAIRS):
                    fd.ioas_map(ioas, buf, SZ_2M, iova=SZ_2M)
                    fd.ioas_unmap(ioas, SZ_2M, SZ_2M)

            def api_pairs() -> None:
                for _ in range(PAIRS):
                    iova = 4 * SZ_2M
                    for phys, size in runs:
                        iommu_map(domain, iova, phys, size, prot, GFP_KERNEL)
                        iova += size
                    iommu_unmap(domain, 4 * SZ_2M, SZ_2M)

            ioctl_us = best_cpu_of(ioctl_pairs, repeat=7) / PAIRS * 1e6
            api_us = best_cpu_of(api_pairs, repeat=7) / PAIRS * 1e6
            vfio.close()
            fd.close()
            do_exit(task)
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
