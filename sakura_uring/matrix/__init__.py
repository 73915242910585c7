"""The kernel matrix: the kernel-facing tests on other kernels under QEMU (`make matrix`)."""
