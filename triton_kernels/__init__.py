"""Triton kernels of vtprune_kernels (installed as ``vtprune_kernels.triton_kernels``)."""
