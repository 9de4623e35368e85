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


# InternViT-300M (InternVL2/2.5/3 -1B..-8B): 24 layers, hidden 1024, 16 heads, 448 px tiles of
# 32 x 32 patches + [CLS] = 1025 tokens, pixel shuffle 0.5 -> 256 tokens per tile.
INTERNVIT_300M = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=[448, 448], patch_size=[14, 14], use_qk_norm=False,
                      use_absolute_position_embeddings=True, norm_type="layer_norm")  # fmt: skip
INTERNVL_IMAGE_TOKEN, INTERNVL_START, INTERNVL_END = 90, 91, 92


def internvit_internvl(device="cpu", dtype=torch.float32, seed: int = 0):
    """InternVLForConditionalGeneration with an InternViT-300M-shaped tower and a tiny Qwen2 (random
    weights, built on ``device``: a GPU initialises the 300M parameters in a blink)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

    text = Qwen2Config(vocab_size=96, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
    config = InternVLConfig(vision_config=InternVLVisionConfig(**INTERNVIT_300M), text_config=text,
                            image_token_id=INTERNVL_IMAGE_TOKEN, image_seq_length=256, downsample_ratio=0.5,
                            vision_feature_layer=-1, vision_feature_select_strategy="default")  # fmt: skip
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config)
    return model.to(dtype).eval()


def internvl_inputs(tiles: int = 13, device="cpu", dtype=torch.float32, seed: int = 1) -> dict:
    """One prompt with one image of ``tiles`` 448 px tiles: text, <img>, tiles * 256 placeholders,
    </img>, text; pixel_values [tiles, 3, 448, 448] (random)."""
    g = torch.Generator().manual_seed(seed)
    ids = [1, 5, 6, 7, INTERNVL_START] + [INTERNVL_IMAGE_TOKEN] * (256 * tiles) + [INTERNVL_END, 8, 9, 10]
    input_ids = torch.tensor([ids], device=device)
    pixel_values = torch.randn(tiles, 3, 448, 448, generator=g).to(device=device, dtype=dtype)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values)
