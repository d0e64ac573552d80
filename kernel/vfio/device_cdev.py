"""drivers/vfio/device_cdev.c and vfio/iommufd.c (Linux 6.12): a VFIO device
character device (``/dev/vfio/devices/vfioN``) bound to an iommufd.

:func:`vfio_device_fops_cdev_open` opens a PCI device for a user-space driver: no
kernel driver may be bound to it (EBUSY). The file's methods are its ioctls with
their C names: :meth:`VfioDeviceFile.bind_iommufd` (VFIO_DEVICE_BIND_IOMMUFD,
returning the iommufd device id), :meth:`~VfioDeviceFile.attach_pt`
(VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach, or replace when already attached; returns
the HWPT id) and :meth:`~VfioDeviceFile.detach_pt` (VFIO_DEVICE_DETACH_IOMMUFD_PT);
``pasid=`` selects the PASID form (6.15's ``VFIO_DEVICE_ATTACH_PT_FLAG_PASID``).
:meth:`~VfioDeviceFile.region` stands for mmap of a BAR region: the user driver's
MMIO window. :meth:`~VfioDeviceFile.close` unbinds.

Departures: the ioctls take Python arguments instead of ``struct vfio_device_*``
(their layouts are VFIO's, not iommufd's); mmap returns an ``ioremap`` window.
"""

from __future__ import annotations

from attrs import define, field

from kernel.device import dev_name
from kernel.errno import EBUSY, EINVAL
from kernel.io import IoMem, iounmap
from kernel.iommufd.device import (
    IommufdDevice,
    iommufd_device_attach,
    iommufd_device_bind,
    iommufd_device_detach,
    iommufd_device_pasid_attach,
    iommufd_device_pasid_detach,
    iommufd_device_replace,
    iommufd_device_unbind,
)
from kernel.iommufd.main import IommufdCtx
from kernel.pci import (
    PciDev,
    pci_clear_master,
    pci_disable_device,
    pci_enable_device,
    pci_ioremap_bar,
    pci_set_master,
)


@define(eq=False)
class VfioDeviceFile:
    """An open VFIO device cdev."""

    pdev: PciDev
    idev: IommufdDevice | None = None
    attached: bool = False
    maps: list[IoMem] = field(factory=list)

    def _bound(self) -> IommufdDevice:
        if self.idev is None:
            raise EINVAL(f"{dev_name(self.pdev)}: not bound to an iommufd")
        return self.idev

    def bind_iommufd(self, ictx: IommufdCtx) -> int:
        """VFIO_DEVICE_BIND_IOMMUFD (``vfio_df_ioctl_bind_iommufd``): the device id."""
        if self.idev is not None:
            raise EINVAL(f"{dev_name(self.pdev)}: already bound")
        self.idev = iommufd_device_bind(ictx, self.pdev)
        pci_enable_device(self.pdev)
        pci_set_master(self.pdev)
        return self.idev.id

    def attach_pt(self, pt_id: int, pasid: int | None = None) -> int:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT (``vfio_iommufd_physical_attach_ioas``)."""
        idev = self._bound()
        if pasid is not None:
            return iommufd_device_pasid_attach(idev, pasid, pt_id)
        if self.attached:
            return iommufd_device_replace(idev, pt_id)
        out = iommufd_device_attach(idev, pt_id)
        self.attached = True
        return out

    def detach_pt(self, pasid: int | None = None) -> None:
        """VFIO_DEVICE_DETACH_IOMMUFD_PT."""
        idev = self._bound()
        if pasid is not None:
            iommufd_device_pasid_detach(idev, pasid)
            return
        if not self.attached:
            raise EINVAL(f"{dev_name(self.pdev)}: not attached")
        iommufd_device_detach(idev)
        self.attached = False

    def region(self, bar: int) -> IoMem:
        """mmap of BAR ``bar`` (VFIO_PCI_BARn_REGION_INDEX)."""
        self._bound()
        io = pci_ioremap_bar(self.pdev, bar)
        self.maps.append(io)
        return io

    def close(self) -> None:
        """``vfio_device_fops_release``: unmap the regions, unbind from the iommufd."""
        for io in self.maps:
            iounmap(io)
        self.maps.clear()
        if self.idev is not None:
            pci_clear_master(self.pdev)
            pci_disable_device(self.pdev)
            iommufd_device_unbind(self.idev)
            self.idev = None
            self.attached = False


def vfio_device_fops_cdev_open(pdev: PciDev) -> VfioDeviceFile:
    """Open the device's VFIO cdev: EBUSY while a kernel driver is bound to it."""
    if pdev.driver is not None:
        raise EBUSY(f"{dev_name(pdev)} is bound to {pdev.driver.name}")
    return VfioDeviceFile(pdev)
