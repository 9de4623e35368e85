"""Random-weight LLaVA models and inputs for the end-to-end benchmarks (nothing is downloaded).

- ``clip_l_llava(text)``: a CLIP-L/14-336-shaped tower (24 layers, hidden 1024, 16 heads, 577
  tokens per image, as in LLaVA-1.5) with the given language model.
- ``llm_heavy_llava()``: a small CLIP tower (12 layers, hidden 384) feeding a 12-layer, hidden-1024
  Llama: with five images per prompt (2880 visual tokens) the language model is most of the prefill.
- ``prompt_inputs(processor, images_per_prompt, prompts)``: processor inputs built from the demo's
  bundled picture, so every run sees the same pixels.
"""
from __future__ import annotations

import torch

from vtprune_kernels.demo.llava_factory import LlavaSpec, build_llava
from vtprune_kernels.demo.sample_image import sample_image

CLIP_L = dict(image_size=336, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16)
SMALL_TOWER = dict(image_size=336, patch_size=14, vision_hidden=384, vision_layers=12, vision_heads=6)
LLM_1024 = dict(text_hidden=1024, text_layers=12, text_heads=16, text_intermediate=2816)
LLM_TINY = dict(text_hidden=128, text_layers=2, text_heads=4, text_intermediate=256)


def clip_l_llava(text=LLM_TINY, seed: int = 0):
    """(model, processor): CLIP-L-shaped tower + the language model sizes ``text``."""
    return build_llava(LlavaSpec(**CLIP_L, **text), seed=seed)


def llm_heavy_llava(seed: int = 0):
    """(model, processor): small tower, 12-layer hidden-1024 language model."""
    return build_llava(LlavaSpec(**SMALL_TOWER, **LLM_1024), seed=seed)


def prompt_inputs(processor, images_per_prompt: int = 1, prompts: int = 1) -> dict:
    """``prompts`` rows, each "USER: <image>...<image>\\nDescribe ... ASSISTANT:" with
    ``images_per_prompt`` copies of the bundled picture; pixel_values [prompts * images, 3, H, W]."""
    image = sample_image()
    text = "USER: " + "<image>" * images_per_prompt + "\nDescribe the pictures in detail. ASSISTANT:"
    inputs = processor(images=[image] * (images_per_prompt * prompts), text=[text] * prompts, return_tensors="pt")
    return dict(inputs)


def visual_tokens(model, inputs) -> int:
    """Image placeholders in the prompt (= visual tokens the language model gets unpruned)."""
    return int((inputs["input_ids"] == model.config.image_token_id).sum())


@torch.inference_mode()
def prefill(model, inputs):
    """One prefill: the whole model on the prompt, logits of the last position only (as generate)."""
    return model(**inputs, logits_to_keep=1)
