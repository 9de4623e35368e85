"""Shared helpers of the method tests (tests/test_methods_*.py)."""
from __future__ import annotations

import pytest
import torch

import vtprune_kernels  # noqa: F401  (registers torch.ops.vtprune.*)


def _cpu_kernels_missing(op_names):
    return [op for op in op_names if not torch._C._dispatch_has_kernel_for_dispatch_key(f"vtprune::{op}", "CPU")]


def backends(*op_names: str):
    """pytest params: "reference" always; "auto" (the C++ CPU kernels) once they are built."""
    missing = _cpu_kernels_missing(op_names)
    reason = f"C++ CPU kernels not built yet: {missing}"
    return ["reference", pytest.param("auto", marks=pytest.mark.skipif(bool(missing), reason=reason))]


@pytest.fixture(scope="module", autouse=False)
def one_cpu_thread():
    """The references run many tiny GEMMs; with torch's CPU thread pool on a loaded 2-core
    machine each one waits on the pool (100x slower). One thread for the module, then restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sign_prototypes(n_prototypes: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """[n_prototypes, channels] vectors of +-1: with channels a power of 4 their norms are powers of
    2, so every cosine between them is exact in fp32/fp16/bf16/fp64 and equal vectors tie exactly."""
    return torch.randint(0, 2, (n_prototypes, channels), generator=generator).float() * 2 - 1


def quantised(shape, levels: int, generator: torch.Generator) -> torch.Tensor:
    """float32 values in {0, 1/levels, ..., (levels-1)/levels}: many exact ties, exact in fp16/bf16."""
    return torch.randint(0, levels, shape, generator=generator).float() / levels
