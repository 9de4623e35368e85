"""Helpers shared by the Triton tests (interpreter and GPU)."""
import torch


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """t on ``device`` with the same strides: a plain ``.to()`` makes non-dense views (a sliced last
    dim) contiguous, and the kernels must see the strided layout itself."""
    if t.device == torch.device(device):
        return t
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
    return out.copy_(t)
