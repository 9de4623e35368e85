"""apply(backend=...) names the attention backend; the selection ops get a backend they accept."""
import pytest
import torch

import tiny_models as tm
from vtprune_kernels import HIVTP, VisPruner, _triton_backend, apply


@pytest.mark.skipif(
    not torch.cuda.is_available() and not _triton_backend.INTERPRETED, reason="Triton needs CUDA or TRITON_INTERPRET=1"
)
@pytest.mark.parametrize("method", [VisPruner(keep=7, step=2), HIVTP(layers=(0, 1))], ids=repr)
def test_triton_attention_backend_prunes_like_auto(method):
    model = tm.llava_clip()
    ids, mask = tm.make_prompts([[25]])
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=tm.pixels(1, 70))
    with torch.no_grad():
        with apply(model, method, backend="auto") as handle:
            expected = handle.prepare_inputs(**inputs)["input_ids"]
        with apply(model, method, backend="triton") as handle:  # "triton" is no selection backend
            actual = handle.prepare_inputs(**inputs)["input_ids"]
    assert torch.equal(actual, expected)
