"""The common method interface, and every method on CUDA against its CPU reference selection."""
import copy

import pytest
import torch

import vtprune_kernels
from vtprune_kernels.methods import HIVTP, PTP, Captured, PruningMethod, Random, Uniform, VisPruner

METHODS = [VisPruner(64), HIVTP(), PTP(), Random(64), Uniform(64)]


@pytest.mark.parametrize("method", METHODS, ids=repr)
def test_methods_share_the_interface(method):
    assert isinstance(method, PruningMethod)
    assert getattr(vtprune_kernels, type(method).__name__) is type(method)
    needs = method.needs(True)
    assert needs.query_rows in ("cls", "all", "none")


def test_a_method_without_needs_cannot_be_built():
    class Incomplete(PruningMethod):
        def select_captured(self, captured):
            return None

    with pytest.raises(TypeError):
        Incomplete()


def _captures(device):
    """One Captured per method, filled with random scores on ``device``."""
    g = torch.Generator().manual_seed(0)
    scores, features = torch.rand(3, 576, generator=g), torch.randn(3, 576, 32, generator=g)
    ptp = dict(
        cls_regions=torch.randn(7, 64, generator=g),
        b_scores=torch.rand(7, 256, generator=g),
        c_scores=torch.rand(7, 256, generator=g),
    )
    return {
        "VisPruner": Captured(grid=(24, 24), cls_attn=scores.to(device), features=features.to(device)),
        "HIVTP": Captured(grid=(24, 24), received=scores.to(device)),
        "PTP": Captured(grid=(16, 16), **{k: v.to(device) for k, v in ptp.items()}),
        "Random": Captured(grid=(24, 24), batch_size=3, device=torch.device(device)),
        "Uniform": Captured(grid=(24, 24), batch_size=3, device=torch.device(device)),
    }


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS, ids=repr)
def test_cuda_selection_equals_the_cpu_reference(method):
    name = type(method).__name__
    # a fresh copy per call: Random's generator advances with every selection
    on_cuda = copy.deepcopy(method).select_captured(_captures("cuda")[name], backend="auto")
    on_cpu = copy.deepcopy(method).select_captured(_captures("cpu")[name], backend="reference")
    assert on_cuda.device.type == "cuda"
    assert torch.equal(on_cuda.cpu(), on_cpu)
