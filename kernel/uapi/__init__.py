"""User-space ABI headers (include/uapi/linux/): byte layouts shared by the kernel,
user space and the hardware that implements them."""
