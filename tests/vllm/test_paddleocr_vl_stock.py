"""Stock vLLM 0.32's PaddleOCR-VL against transformers on the tiny checkpoint (no pruning): the baseline the
pruned class is compared from, and the upstream discrepancy the reference works around.

transformers before 5.24 resizes the tower's learned position grid to each image's patch grid with
``align_corners=True``, vLLM 0.32 (and transformers 5.24) with ``False``: with vLLM's choice on the reference
(``checkpoints.paddle_reference``) every prompt token's log-probability agrees; with 5.19's own it does not.
"""
from __future__ import annotations

import torch

import checkpoints
from harness import Engine, _processed, image


def _logprobs(model, processor, text, images):
    inputs = _processed(processor, text, images)
    with torch.no_grad():
        logits = model(**inputs).logits[0].float()
    ids = inputs["input_ids"][0]
    return torch.log_softmax(logits[:-1], -1).gather(1, ids[1:, None])[:, 0]


def test_stock_vllm_matches_transformers_with_vllms_position_resize(checkpoint_dir):
    from transformers import AutoProcessor

    path, model = checkpoints.paddleocr_vl(f"{checkpoint_dir}/paddleocr_vl-stock")
    processor = AutoProcessor.from_pretrained(path)
    text = f"USER: {checkpoints.QWEN_IMAGE}\n{checkpoints.QWEN_IMAGE}\nWhat is shown here? ASSISTANT:"
    images = [image(112, 84, seed=1), image(84, 140, seed=2)]  # 6x8 and 10x6 patches: the 4x4 grid is resized
    engine = Engine(path, {})
    try:
        (got,) = engine.prompt_logprobs([(text, images)])
    finally:
        engine.close()
    got = torch.tensor(got)
    assert (got - _logprobs(model, processor, text, images)).abs().max() < 1e-3
    embeddings = model.model.visual.vision_model.embeddings
    embeddings.interpolation_align_corners = True  # transformers 5.19's own resize
    try:
        assert (got - _logprobs(model, processor, text, images)).abs().max() > 1e-2
    finally:
        embeddings.interpolation_align_corners = False
