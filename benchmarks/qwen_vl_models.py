"""A random-weight Qwen2.5-VL-shaped model and a 1024x1024 picture for the Qwen benchmarks.

``qwen2_5_vl_model()``: the tower has Qwen2.5-VL's structure (32 blocks, full attention in blocks
7, 15, 23, 31 and 112 px windows elsewhere, 14 px patches, 2x2 merge, head dim 80) at a reduced
width (hidden 160, 2 heads) so that a CPU runs it in seconds; the language model is the same
12-layer, hidden-1024 decoder as the LLaVA benchmarks (16 query / 2 key-value heads, M-RoPE).
``image_inputs(model)``: the demo's picture at 1024 x 1024 through Qwen2-VL's image processor
(PIL backend, the released checkpoints' pixel limits): 74 x 74 patches, 37 x 37 = 1369 merged
tokens, in a one-turn prompt.
"""
from __future__ import annotations

import torch

from vtprune_kernels.demo.sample_image import sample_image

VOCAB = 1024
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 1000, 1001, 1002, 1003
TOWER = dict(
    depth=32, hidden_size=160, intermediate_size=428, num_heads=2, fullatt_block_indexes=[7, 15, 23, 31], window_size=112,
    patch_size=14, spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2,
)
LLM = dict(
    vocab_size=VOCAB, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16,
    num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[8, 12, 12]),
)
IMAGE_SIZE = 1024
RELEASED_PIXEL_LIMITS = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}  # Qwen2.5-VL's preprocessor config


def qwen2_5_vl_model(seed: int = 0):
    """Qwen2_5_VLForConditionalGeneration in eval mode, float32, random weights (seeded)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2_5_VLConfig(
        vision_config=dict(TOWER, out_hidden_size=LLM["hidden_size"]), text_config=LLM,
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
    )
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def image_inputs(size: int = IMAGE_SIZE, prompts: int = 1) -> dict:
    """Model inputs for ``prompts`` rows, each "<text> <|vision_start|> 1369 x <|image_pad|> <|vision_end|> <text>"."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(size=RELEASED_PIXEL_LIMITS)
    pixels = processor(images=[sample_image(size)] * prompts, return_tensors="pt")
    grid = pixels["image_grid_thw"]
    n = int(grid[0].prod()) // 4
    gen = torch.Generator().manual_seed(0)
    row = torch.cat([
        torch.randint(3, 900, (12,), generator=gen), torch.tensor([VISION_START]), torch.full((n,), IMAGE_TOKEN),
        torch.tensor([VISION_END]), torch.randint(3, 900, (24,), generator=gen),
    ])
    ids = row.expand(prompts, -1).clone()
    return dict(
        input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == IMAGE_TOKEN).int(),
        pixel_values=pixels["pixel_values"], image_grid_thw=grid,
    )
