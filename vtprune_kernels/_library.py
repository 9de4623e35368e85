"""Loads the native library and registers what lives in Python: fake kernels and the
Triton kernel of attention_scores (its CUDA implementation).

After import, every op is callable as ``torch.ops.vtprune.<name>``."""
from __future__ import annotations

import importlib
import importlib.util

import torch

from . import _C  # noqa: F401  (loads schemas, CPU kernels and, when built with CUDA, CUDA kernels)
from . import fake  # noqa: F401

# True when the extension was built against a CUDA torch (csrc/cuda/binding.cpp registered).
HAS_CUDA_KERNELS = torch._C._dispatch_has_kernel_for_dispatch_key("vtprune::region_topk_mask", "CUDA")


def _register_triton_backend():
    if importlib.util.find_spec("triton") is None:  # the CUDA path of attention_scores needs triton
        return False
    importlib.import_module(f"{__package__}._triton_backend")
    return True


HAS_TRITON = _register_triton_backend()
