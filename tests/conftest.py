"""Shared test fixtures: deterministic seeds and the CUDA skip marker."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
