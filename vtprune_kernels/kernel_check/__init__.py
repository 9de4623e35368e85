"""Ahead-of-time compilation of every GPU kernel, without a GPU (``vtprune check-kernels``).

Each source of kernels (``triton_aot``, ``nvcc``) yields ``KernelReport`` rows; the command
prints one table and fails on any compile error or register spill."""
from .report import KernelReport, format_table, run_all

__all__ = ["KernelReport", "format_table", "run_all"]
