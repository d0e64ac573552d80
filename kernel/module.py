"""Kernel modules and init levels (include/linux/init.h, module.h), and the vendor
IOMMU driver descriptor.

A module plugin contributes :class:`KernelModule` descriptors through the
``iommulab_modules`` hook; ``boot`` runs their ``init`` at their initcall level and
their ``exit`` in reverse order at shutdown. An IOMMU vendor plugin also
contributes :class:`IommuDriverInfo`: the core binds each firmware IOMMU unit to
the driver whose ``table`` matches, by name, never by hook ordering.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from attrs import frozen

from hw.bus import IommuUnitInfo
from kernel.params import Param


class InitLevel(enum.IntEnum):
    CORE = 1
    POSTCORE = 2
    ARCH = 3
    SUBSYS = 4
    FS = 5
    ROOTFS = 6
    DEVICE = 7
    LATE = 8


@frozen
class KernelModule:
    """A loadable module: ``module_init``/``module_exit`` plus its parameters."""

    name: str
    init: Callable[[], None]
    exit: Callable[[], None] | None = None
    level: InitLevel = InitLevel.DEVICE
    description: str = ""
    params: tuple[Param[object], ...] = ()


@frozen
class IommuDriverInfo:
    """A vendor IOMMU driver: claims firmware units listed in ``table`` (``DMAR``, ``IORT``).

    ``probe(unit)`` brings the unit up and registers it with the IOMMU core
    (``iommu_device_register``); it raises a KernelError when the hardware is
    unusable, and the core logs it and leaves the unit's devices without IOMMU.
    ``shutdown()`` tears every unit down at kernel shutdown.
    """

    name: str
    table: str
    probe: Callable[[IommuUnitInfo], None]
    shutdown: Callable[[], None] | None = None
    description: str = ""
