"""Tiny random-weight transformers 5.x VLMs built from configs (no hub access), for integration tests.

Every builder returns a model in eval mode, float32, with the default SDPA attention, plus helpers
that build processor-style inputs: N image placeholders per image, optional left/right padding.

- ``llava_clip()``: LlavaForConditionalGeneration, CLIP tower (with [CLS]), image 70 / patch 14 -> 5x5 grid.
- ``llava_siglip()``: LlavaForConditionalGeneration, SigLIP tower (no [CLS]), strategy "full", 4x4 grid.
- ``llava_next(tile=42)``: LlavaNextForConditionalGeneration, CLIP tower, anyres tiles of 42x42 (3x3 grid
  per tile; ``tile=84``: 6x6).
- ``internvl(text="qwen2"|"llama")``: InternVLForConditionalGeneration, 84x84 tiles, pixel shuffle 0.5
  (6x6 grid -> 3x3 = 9 tokens per tile).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

VOCAB = 96
IMAGE_TOKEN = 90
PAD_TOKEN = 0
START_IMAGE_TOKEN = 91  # InternVL's <img>
END_IMAGE_TOKEN = 92  # InternVL's </img>


def text_config(kind: str = "llama", num_layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2):
    """A tiny Llama or Qwen2 text config (GQA: 4 query heads, 2 kv heads)."""
    from transformers import LlamaConfig, Qwen2Config

    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind]
    return config_class(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        pad_token_id=PAD_TOKEN,
        bos_token_id=1,
        eos_token_id=2,
    )


def _clip_vision(num_layers: int = 4, hidden: int = 32, image_size: int = 56):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
        projection_dim=hidden,
    )


def _finish(model, seed: int):
    """Re-draw every floating parameter from a seeded normal so the tiny model is not near-degenerate."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dtype.is_floating_point:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.dim() == 1 else 0.2))
                if "norm" in name and name.endswith("weight"):
                    p.add_(1.0)
    return model.eval()


def _llava(vision, text_kind: str, feature_layer: int, strategy: str, seed: int):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text_config(text_kind),
        image_token_index=IMAGE_TOKEN,
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=strategy,
        image_seq_length=(vision.image_size // 14) ** 2,
    )
    return _finish(LlavaForConditionalGeneration(cfg), seed)


def llava_clip(seed: int = 0, vision_layers: int = 4, image_size: int = 70, feature_layer: int = -2):
    """LLaVA-1.5 shape: CLIP tower with [CLS], Llama text, feature layer -2, strategy "default" (CLS dropped)."""
    return _llava(_clip_vision(vision_layers, image_size=image_size), "llama", feature_layer, "default", seed)


def llava_siglip(seed: int = 0, vision_layers: int = 3, image_size: int = 56, feature_layer: int = -1):
    """LLaVA with a SigLIP tower (no [CLS]), Qwen2 text: strategy "full", every patch token is a visual token."""
    from transformers import SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
    )
    return _llava(vision, "qwen2", feature_layer, "full", seed)


def llava_next(seed: int = 0, vision_layers: int = 3, tile: int = 42):
    """LLaVA-NeXT with tile x tile tiles ((tile/14)^2 tokens per tile; default 42: 3x3) and
    pinpoints up to 2x3 tiles (42: 84x126)."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    pinpoints = [[1, 2], [2, 1], [2, 2], [2, 3], [3, 2]]
    cfg = LlavaNextConfig(
        vision_config=_clip_vision(vision_layers, image_size=tile),
        text_config=text_config("llama"),
        image_token_index=IMAGE_TOKEN,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=[[tile * a, tile * b] for a, b in pinpoints],
        image_seq_length=(tile // 14) ** 2,
    )
    return _finish(LlavaNextForConditionalGeneration(cfg), seed)


def internvl(seed: int = 0, text: str = "qwen2", vision_layers: int = 3, qk_norm: bool = True):
    """InternVL with 84x84 tiles: 6x6 patch grid, pixel shuffle 0.5 -> 3x3 = 9 tokens per tile."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig

    vision = InternVLVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=[84, 84],
        patch_size=[14, 14],
        use_qk_norm=qk_norm,
        use_absolute_position_embeddings=True,
        norm_type="layer_norm",
    )
    text_cfg = text_config(text)
    cfg = InternVLConfig(
        vision_config=vision,
        text_config=text_cfg,
        image_token_id=IMAGE_TOKEN,
        image_seq_length=9,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    return _finish(InternVLForConditionalGeneration(cfg), seed)


def make_prompts(
    image_token_counts: Sequence[Sequence[int]],
    *,
    padding_side: str = "left",
    seed: int = 0,
    text_before: int = 3,
    text_after: int = 4,
    wrap_images: bool = False,
):
    """input_ids [B, S] and attention_mask [B, S]: per row, some text, then per image a run of
    ``count`` placeholders (wrapped in <img> ... </img> when ``wrap_images``), then text.
    Rows get different text lengths so padding is exercised."""
    gen = torch.Generator().manual_seed(seed)
    rows: List[List[int]] = []
    for b, counts in enumerate(image_token_counts):
        row = torch.randint(3, 80, (text_before + b,), generator=gen).tolist()
        for c in counts:
            if wrap_images:
                row.append(START_IMAGE_TOKEN)
            row += [IMAGE_TOKEN] * c
            if wrap_images:
                row.append(END_IMAGE_TOKEN)
            row += torch.randint(3, 80, (1,), generator=gen).tolist()
        row += torch.randint(3, 80, (text_after,), generator=gen).tolist()
        rows.append(row)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_TOKEN, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        if padding_side == "left":
            ids[b, width - len(r):] = torch.tensor(r)
            mask[b, width - len(r):] = 1
        else:
            ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
    return ids, mask


def pixels(n: int, size: int = 56, seed: int = 1, tiles: Optional[int] = None):
    """Random pixel values [n, 3, size, size] (or [n, tiles, 3, size, size])."""
    gen = torch.Generator().manual_seed(seed)
    shape = (n, 3, size, size) if tiles is None else (n, tiles, 3, size, size)
    return torch.randn(shape, generator=gen)
