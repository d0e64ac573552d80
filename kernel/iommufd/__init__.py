"""drivers/iommu/iommufd (Linux 6.12): the user-space IOMMU interface.

One module per upstream file: ``main`` (the iommufd file, the object table, the ioctl
dispatcher, IOMMU_DESTROY, IOMMU_OPTION), ``ioas`` (the IOAS ioctls), ``io_pagetable``
(areas, allowed and reserved IOVA ranges, filling domains), ``pages`` (pinned user
pages and their accounting), ``device`` (binding a device, attach/replace/detach),
``hw_pagetable`` (HWPT alloc, IOMMU_GET_HW_INFO, dirty tracking), ``iova_bitmap`` (the
user's dirty bitmap), ``vfio_compat`` (IOMMU_VFIO_IOAS), ``viommu`` (6.13's vIOMMU and vDEVICE
objects, under ``iommufd.viommu=on``). ``user`` is the user-memory access
(``copy_{from,to}_user``, ``pin_user_pages``) these use, kept behind one module until
processes are modelled.
"""
