"""Moving small host-built tensors (region ids, budgets, seeded scores, fixed masks) to the scores' device.

A plain ``tensor.to("cuda")`` from pageable host memory synchronises the host with the stream.
``from_host`` copies through pinned memory with ``non_blocking=True`` instead: no host sync, and
torch's caching host allocator keeps the pinned buffer alive until the copy has run.
"""
from __future__ import annotations

from typing import Union

import torch


def from_host(t: torch.Tensor, device: Union[str, torch.device]) -> torch.Tensor:
    """``t`` (a CPU tensor) on ``device``; to CUDA asynchronously from pinned memory (no host sync)."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
