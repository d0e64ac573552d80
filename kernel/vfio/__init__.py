"""drivers/vfio: the parts iommufd's device binding needs (the device cdev)."""
