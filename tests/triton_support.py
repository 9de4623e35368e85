"""Helpers shared by the Triton tests (interpreter and GPU)."""
import torch


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """t on ``device`` with the same strides: a plain ``.to()`` makes non-dense views (a sliced last
    dim) contiguous, and the kernels must see the strided layout itself."""
    if t.device == torch.device(device):
        return t
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
    return out.copy_(t)


def triton_scores(q: torch.Tensor, k: torch.Tensor, device, **kwargs) -> torch.Tensor:
    """The Triton attention_scores of CPU tensors q, k (and tensor kwargs such as lse) computed on
    ``device`` with the same strides, returned on the CPU."""
    from vtprune_kernels import _triton_backend

    kwargs = {key: to_device(v, device) if isinstance(v, torch.Tensor) else v for key, v in kwargs.items()}
    out = _triton_backend.attention_scores(to_device(q, device), to_device(k, device), **kwargs)
    assert out.device.type == torch.device(device).type
    return out.cpu()
