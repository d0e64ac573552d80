"""Intel DSA driver (drivers/dma/idxd/): the ``idxd`` kernel module.

Modules mirror the kernel files: :mod:`registers` (registers.h), :mod:`idxd`
(idxd.h), :mod:`init` (init.c: PCI probe/remove, system PASID), :mod:`device`
(device.c: commands, configuration, WQ enable/disable), :mod:`submit`
(submit.c), :mod:`irq` (irq.c), :mod:`dma` (dma.c: dmaengine memcpy),
:mod:`sysfs` (sysfs.c and accel-config's JSON configuration) and :mod:`debugfs`
(the ``dsa`` dump view).
"""

from __future__ import annotations

from collections.abc import Sequence

from kernel.debugfs import DumpTarget
from kernel.hookspecs import hookimpl
from kernel.module import InitLevel, KernelModule
from kernel.params import Param, parse_bool, parse_int, parse_str


@hookimpl
def iommulab_modules() -> Sequence[KernelModule]:
    from drivers.idxd.init import idxd_exit_module, idxd_init_module

    return [
        KernelModule(
            "idxd",
            init=idxd_init_module,
            exit=idxd_exit_module,
            level=InitLevel.DEVICE,
            description="Intel Data Streaming Accelerator (DSA) driver",
            params=(
                Param("idxd.sva", True, parse_bool, "use a system PASID for kernel DMA"),
                Param(
                    "idxd.default_config",
                    True,
                    parse_bool,
                    "configure and enable the default kernel WQs at probe",
                ),
                Param(
                    "idxd.default_wqs",
                    2,
                    parse_int,
                    "kernel WQs in the default configuration (0 = every WQ)",
                ),
                Param("idxd.config", "", parse_str, "accel-config JSON file to load at probe"),
                Param(
                    "idxd.kernel_priv",
                    False,
                    parse_bool,
                    "2022 behaviour: privileged kernel descriptors even with a PASID",
                ),
            ),
        )
    ]


@hookimpl
def iommulab_dump_targets() -> Sequence[DumpTarget]:
    from drivers.idxd.debugfs import dsa_dump_target

    return [dsa_dump_target()]
