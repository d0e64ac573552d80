"""drivers/iommu/iommufd/vfio_compat.c (Linux 6.12), the part reachable through the
iommufd file: IOMMU_VFIO_IOAS, which names the IOAS the VFIO type1 compatibility
container uses (GET: ENODEV when none is set or it was destroyed; SET: ENOENT for an
unknown IOAS; CLEAR). The type1 container ioctls themselves are not modelled.
"""

from __future__ import annotations

from kernel.errno import ENODEV, EOPNOTSUPP
from kernel.iommufd.main import IommufdUcmd, get_ioas, iommufd_put_object, iommufd_ucmd_respond
from kernel.uapi import iommufd as uapi


def iommufd_vfio_ioas(ucmd: IommufdUcmd) -> None:
    """``iommufd_vfio_ioas`` (IOMMU_VFIO_IOAS)."""
    cmd: uapi.iommu_vfio_ioas = ucmd.cmd
    ictx = ucmd.ictx
    if cmd.reserved:
        raise EOPNOTSUPP("vfio_ioas.__reserved is not zero")
    if cmd.op == uapi.IOMMU_VFIO_IOAS_GET:
        if ictx.vfio_ioas is None:
            raise ENODEV("no VFIO compatibility IOAS")
        cmd.ioas_id = ictx.vfio_ioas.id
        iommufd_ucmd_respond(ucmd, uapi.iommu_vfio_ioas.SIZE)
    elif cmd.op == uapi.IOMMU_VFIO_IOAS_SET:
        ioas = get_ioas(ictx, cmd.ioas_id)
        ictx.vfio_ioas = ioas
        iommufd_put_object(ictx, ioas)
    elif cmd.op == uapi.IOMMU_VFIO_IOAS_CLEAR:
        ictx.vfio_ioas = None
    else:
        raise EOPNOTSUPP(f"vfio_ioas op {cmd.op}")
