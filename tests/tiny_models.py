"""Tiny random-weight transformers 5.x VLMs built from configs (no hub access), for integration tests.

Every builder returns a model in eval mode, float32, with the default SDPA attention, plus helpers
that build processor-style inputs: N image placeholders per image, optional left/right padding.

- ``llava_clip()``: LlavaForConditionalGeneration, CLIP tower (with [CLS]), image 70 / patch 14 -> 5x5 grid.
- ``llava_siglip()``: LlavaForConditionalGeneration, SigLIP tower (no [CLS]), strategy "full", 4x4 grid.
- ``llava_next(tile=42)``: LlavaNextForConditionalGeneration, CLIP tower, anyres tiles of 42x42 (3x3 grid
  per tile; ``tile=84``: 6x6).
- ``llava_onevision(tile=70, aspect="anyres_max_2")``: LlavaOnevisionForConditionalGeneration, SigLIP
  tower (no [CLS]), Qwen2 text, 5x5 grid per tile; large grids are bilinearly downsized, video frames
  pooled to 3x3.
- ``llava_dinov2()``: LlavaForConditionalGeneration, DINOv2 tower (with [CLS], layer scale), 5x5 grid.
- ``gemma3()``: Gemma3ForConditionalGeneration, SigLIP tower 112 px (8x8 patches) average-pooled 2x2 to
  4x4 = 16 tokens per image; a sliding-window (8) and a full-attention text layer.
- ``paligemma()``: PaliGemmaForConditionalGeneration, SigLIP 84 px (6x6 = 36 tokens), Gemma text.
- ``idefics3(smolvlm=False)``: Idefics3ForConditionalGeneration (SmolVLMForConditionalGeneration), 84 px
  tiles (6x6 patches) pixel-shuffled 2x2 to 3x3 = 9 tokens per tile.
- ``mistral3()``: Mistral3ForConditionalGeneration, Pixtral tower (8 px patches, images up to 64 px at
  their own aspect ratio), 2x2 patch merger -> up to 4x4 tokens per image, Mistral text.
- ``llama4()``: Llama4ForConditionalGeneration, 112 px tiles (8x8 patches, [CLS] appended last) pixel-shuffled
  0.5 -> 4x4 = 16 tokens per tile, a Llama 4 text model with one mixture-of-experts layer.
- ``aya_vision()``: AyaVisionForConditionalGeneration, SigLIP 112 px tiles (8x8 patches) pixel-shuffled 2 -> 4x4 = 16
  tokens per tile, SwiGLU projector, Cohere 2 text.
- ``gemma4()``: Gemma4ForConditionalGeneration, 8 px patches at each image's own size (padded at the end),
  pooled 2x2 into soft tokens; a sliding (bidirectional inside images) and a full text layer.
- ``llava_pixtral()``: LlavaForConditionalGeneration with ``mistral3``'s Pixtral tower, every patch a token.
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


def _small_vision(config_class, num_layers: int, image_size: int, hidden: int = 32, **extra):
    """A tiny vision config of ``config_class``: 4 heads, 14 px patches."""
    return config_class(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
        **extra,
    )


def _clip_vision(num_layers: int = 4, hidden: int = 32, image_size: int = 56):
    from transformers import CLIPVisionConfig

    return _small_vision(CLIPVisionConfig, num_layers, image_size, hidden, projection_dim=hidden)


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

    return _llava(_small_vision(SiglipVisionConfig, vision_layers, image_size), "qwen2", feature_layer, "full", seed)


def llava_dinov2(seed: int = 0, vision_layers: int = 4, image_size: int = 70, feature_layer: int = -2):
    """LLaVA with a DINOv2 tower (the demo's real encoder family): [CLS], strategy "default"."""
    from transformers import Dinov2Config

    return _llava(_small_vision(Dinov2Config, vision_layers, image_size), "llama", feature_layer, "default", seed)


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


def llava_next_video(seed: int = 0, vision_layers: int = 3, tile: int = 84, pool_mode: str = "average"):
    """LLaVA-NeXT-Video with tile x tile tiles ((tile/14)^2 tokens; 84: 6x6), pinpoints up to 2x3 tiles,
    video frames pooled 2x2 by ``pool_mode`` (6x6 -> 3x3)."""
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    pinpoints = [[1, 2], [2, 1], [2, 2], [2, 3], [3, 2]]
    cfg = LlavaNextVideoConfig(
        vision_config=_clip_vision(vision_layers, image_size=tile),
        text_config=text_config("llama"),
        image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=[[tile * a, tile * b] for a, b in pinpoints],
        spatial_pool_mode=pool_mode,
        spatial_pool_stride=2,
    )
    return _finish(LlavaNextVideoForConditionalGeneration(cfg), seed)


def llava_onevision(seed: int = 0, vision_layers: int = 3, tile: int = 70, aspect: str = "anyres_max_2"):
    """LLaVA-OneVision with tile x tile tiles of (tile/14)^2 tokens (70: 5x5), pinpoints up to 2x3 tiles,
    ``vision_aspect_ratio=aspect`` (anyres_max_2: a big grid over 2.4 tiles' worth of tokens is downsized)."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, SiglipVisionConfig

    pinpoints = [[1, 2], [2, 1], [2, 2], [2, 3], [3, 2]]
    cfg = LlavaOnevisionConfig(
        vision_config=_small_vision(SiglipVisionConfig, vision_layers, tile),
        text_config=text_config("qwen2"),
        image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=[[tile * a, tile * b] for a, b in pinpoints],
        vision_aspect_ratio=aspect,
    )
    return _finish(LlavaOnevisionForConditionalGeneration(cfg), seed)


def gemma3(seed: int = 0, vision_layers: int = 3):
    """Gemma 3: SigLIP 112 px / 14 px patches (8x8), pooled 2x2 to 4x4 = 16 tokens per image; Gemma 3 text
    with a sliding-window layer (window 8, shorter than an image block) and a full-attention one."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=512, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    cfg = Gemma3Config(
        vision_config=_small_vision(SiglipVisionConfig, vision_layers, 112), text_config=text, mm_tokens_per_image=16,
        image_token_id=IMAGE_TOKEN, boi_token_id=START_IMAGE_TOKEN, eoi_token_id=END_IMAGE_TOKEN,
    )
    return _finish(Gemma3ForConditionalGeneration(cfg), seed)


def paligemma(seed: int = 0, vision_layers: int = 3):
    """PaliGemma: SigLIP 84 px / 14 px patches (6x6 = 36 tokens per image), linear projector, Gemma text."""
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig

    text = GemmaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    vision = _small_vision(SiglipVisionConfig, vision_layers, 84, projection_dim=64)
    cfg = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN, vocab_size=VOCAB,
                          projection_dim=64, hidden_size=64)
    return _finish(PaliGemmaForConditionalGeneration(cfg), seed)


def idefics3(seed: int = 0, vision_layers: int = 3, smolvlm: bool = False):
    """Idefics3 (or SmolVLM): 84 px tiles of 6x6 patches, pixel shuffle 2 -> 3x3 = 9 tokens per tile, Llama text."""
    if smolvlm:
        from transformers import SmolVLMConfig as Config, SmolVLMForConditionalGeneration as Model, SmolVLMVisionConfig as Vision
    else:
        from transformers import Idefics3Config as Config, Idefics3ForConditionalGeneration as Model, Idefics3VisionConfig as Vision

    cfg = Config(
        vision_config=_small_vision(Vision, vision_layers, 84).to_dict(), text_config=text_config("llama").to_dict(),
        scale_factor=2, image_token_id=IMAGE_TOKEN,
    )
    return _finish(Model(cfg), seed)


def llava_pixtral(seed: int = 0, vision_layers: int = 3):
    """Pixtral in its LLaVA form (Pixtral-12B shape): the Pixtral tower of ``mistral3``, no merger (every patch a
    token), LLaVA's projector on the last layer (strategy "full"), Mistral text."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    donor = mistral3(seed, vision_layers).config
    cfg = LlavaConfig(
        vision_config=donor.vision_config, text_config=donor.text_config, image_token_index=IMAGE_TOKEN,
        vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
    )
    return _finish(LlavaForConditionalGeneration(cfg), seed)


MISTRAL3_BREAK_TOKEN = 91  # [IMG_BREAK] (ends every row of an image but the last)
MISTRAL3_END_TOKEN = 92  # [IMG_END] (ends an image's last row)


def mistral3(seed: int = 0, vision_layers: int = 3):
    """Mistral 3: Pixtral tower (8 px patches, 64 px at most: 8x8 patches), 2x2 patch merger, Mistral text."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    vision = PixtralVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers, num_attention_heads=4, image_size=64,
        patch_size=8, head_dim=8,
    )
    text = MistralConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=None, pad_token_id=PAD_TOKEN,
        bos_token_id=1, eos_token_id=2,
    )
    cfg = Mistral3Config(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN, spatial_merge_size=2,
                         vision_feature_layer=-1)
    return _finish(Mistral3ForConditionalGeneration(cfg), seed)


def lighton_ocr(seed: int = 0, vision_layers: int = 3):
    """LightOnOCR: the Pixtral tower of ``mistral3`` (all its layers, no feature-layer choice), Mistral 3's
    projector (norm, 2x2 patch merger, MLP without biases), Qwen3 text; an image is its merged tokens only
    (no row breaks, no end token)."""
    from transformers import LightOnOcrConfig, LightOnOcrForConditionalGeneration, Qwen3Config

    donor = mistral3(seed, vision_layers).config
    text = Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, pad_token_id=PAD_TOKEN, bos_token_id=1,
        eos_token_id=2,
    )
    cfg = LightOnOcrConfig(
        vision_config=donor.vision_config, text_config=text, image_token_id=IMAGE_TOKEN, spatial_merge_size=2,
        tie_word_embeddings=False,
    )
    return _finish(LightOnOcrForConditionalGeneration(cfg), seed)


def llama4(seed: int = 0, vision_layers: int = 3):
    """Llama 4: 112 px tiles / 14 px patches (8x8 + [CLS] last), pixel shuffle 0.5 -> 4x4 = 16 tokens per tile."""
    from transformers import Llama4Config, Llama4ForConditionalGeneration, Llama4TextConfig, Llama4VisionConfig

    vision = Llama4VisionConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=vision_layers, num_attention_heads=4, image_size=112,
        patch_size=14, pixel_shuffle_ratio=0.5, projector_input_dim=64, projector_output_dim=64, vision_output_dim=64,
        vision_feature_layer=-1,
    )
    text = Llama4TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, intermediate_size_mlp=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=2, num_experts_per_tok=1,
        interleave_moe_layer_step=2, max_position_embeddings=512, pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    cfg = Llama4Config(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN)
    return _finish(Llama4ForConditionalGeneration(cfg), seed)


def aya_vision(seed: int = 0, vision_layers: int = 3):
    """Aya Vision: SigLIP 112 px tiles / 14 px patches (8x8), pixel shuffle 2 -> 4x4 = 16 tokens per tile."""
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration, Cohere2Config, SiglipVisionConfig

    text = Cohere2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    cfg = AyaVisionConfig(
        vision_config=_small_vision(SiglipVisionConfig, vision_layers, 112), text_config=text, downsample_factor=2,
        adapter_layer_norm_eps=1e-6, alignment_intermediate_size=128, image_token_index=IMAGE_TOKEN,
        vision_feature_layer=-1, vision_feature_select_strategy="full",
    )
    return _finish(AyaVisionForConditionalGeneration(cfg), seed)


def cohere2_vision(seed: int = 0, vision_layers: int = 3):
    """Cohere2 Vision (Command A Vision): SigLIP 112 px tiles / 14 px patches (8x8), the projector reads the
    tower's last_hidden_state (after post_layernorm), pixel shuffle 2 -> 4x4 = 16 tokens per tile."""
    from transformers import Cohere2Config, Cohere2VisionConfig, Cohere2VisionForConditionalGeneration, SiglipVisionConfig

    text = Cohere2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    cfg = Cohere2VisionConfig(
        vision_config=_small_vision(SiglipVisionConfig, vision_layers, 112), text_config=text, downsample_factor=2,
        alignment_intermediate_size=128, image_token_id=IMAGE_TOKEN,
    )
    return _finish(Cohere2VisionForConditionalGeneration(cfg), seed)


def lfm2_vl(seed: int = 0, vision_layers: int = 3):
    """LFM2-VL: a SigLIP2 NaFlex tower (8 px patches, tiles padded to 64 patches, post_layernorm applied), pixel
    unshuffle 2, LayerNorm + MLP projector; LFM2 text (a conv and an attention layer)."""
    from transformers import Lfm2Config, Lfm2VlConfig, Lfm2VlForConditionalGeneration, Siglip2VisionConfig

    text = Lfm2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, conv_L_cache=3, block_auto_adjust_ff_dim=False,
        layer_types=["conv", "full_attention"], pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    vision = Siglip2VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers, num_attention_heads=4, patch_size=8,
        num_patches=64, vision_use_head=False,
    )
    cfg = Lfm2VlConfig(
        vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, projector_hidden_size=64,
        projector_use_layernorm=True, downsample_factor=2,
    )
    return _finish(Lfm2VlForConditionalGeneration(cfg), seed)


def lfm2_vl_patches(grids, max_patches: int = 64, seed: int = 1):
    """LFM2-VL processor-style inputs for tiles of (rows, columns) patch grids: pixel_values [n, max_patches, 192]
    (random values in [-1, 1)), spatial_shapes [n, 2], pixel_attention_mask [n, max_patches] (padding at the end)."""
    gen = torch.Generator().manual_seed(seed)
    pixel_values = torch.zeros(len(grids), max_patches, 3 * 8 * 8)
    mask = torch.zeros(len(grids), max_patches, dtype=torch.long)
    for i, (rows, cols) in enumerate(grids):
        pixel_values[i, : rows * cols] = torch.rand(rows * cols, 3 * 8 * 8, generator=gen) * 2 - 1
        mask[i, : rows * cols] = 1
    return pixel_values, torch.tensor(grids), mask


MINICPM_IMAGE_START, MINICPM_IMAGE_END = 91, 92  # MiniCPM-V 4.7's <image>, </image>
MINICPM_SLICE_START, MINICPM_SLICE_END, MINICPM_NEWLINE = 93, 94, 95  # <slice>, </slice>, "\n"


def minicpmv4_6(seed: int = 0, vision_layers: int = 4, insert_layer: int = 1, v4_7: bool = False):
    """MiniCPM-V 4.6: a SigLIP-style NaViT tower (14 px patches, slices of their own h x w patches packed in one
    sequence, attention per slice), the window merger after layer ``insert_layer`` (2x2 patches -> 1 token), the
    MLP merger (2x2 -> 1): one language-model token per 4x4 patches; Qwen3.5 text (full-attention layers).
    ``v4_7``: MiniCPM-V 4.7 (the same model with canvas M-RoPE positions, anchored on its marker tokens)."""
    from transformers import MiniCPMV4_6Config, MiniCPMV4_6ForConditionalGeneration, MiniCPMV4_7Config, MiniCPMV4_7ForConditionalGeneration

    text = dict(
        model_type="qwen3_5_text", vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, layer_types=["full_attention"] * 2,
        max_position_embeddings=512, rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5,
                                                          mrope_section=[1, 1, 2], mrope_interleaved=True),
        linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
        pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers, num_attention_heads=4, image_size=112,
        patch_size=14, window_kernel_size=[2, 2], insert_layer_id=insert_layer,
    )
    common = dict(
        text_config=text, vision_config=vision, insert_layer_id=insert_layer, downsample_mode="16x",
        merge_kernel_size=[2, 2], merger_times=1, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, pad_token_id=PAD_TOKEN,
    )
    if v4_7:
        cfg = MiniCPMV4_7Config(
            **common, image_start_id=MINICPM_IMAGE_START, image_end_id=MINICPM_IMAGE_END, slice_start_id=MINICPM_SLICE_START,
            slice_end_id=MINICPM_SLICE_END, newline_id=MINICPM_NEWLINE,
        )
        return _finish(MiniCPMV4_7ForConditionalGeneration(cfg), seed)
    return _finish(MiniCPMV4_6ForConditionalGeneration(MiniCPMV4_6Config(**common, drop_vision_last_layer=False)), seed)


def minicpm_patches(sizes, seed: int = 1):
    """MiniCPM-V's NaViT-packed pixels for units (slices) of (h, w) patches of 14 px: [1, 3, 14, sum(h*w)*14], the
    patches of every unit in raster order, units one after another; and target sizes int32 [n, 2]."""
    gen = torch.Generator().manual_seed(seed)
    length = sum(h * w for h, w in sizes) * 14
    return torch.rand(1, 3, 14, length, generator=gen) * 2 - 1, torch.tensor(sizes, dtype=torch.int32)


def gemma4(seed: int = 0, vision_layers: int = 3):
    """Gemma 4: a vision tower on 8 px patches (flattened, (x, y) positions, padding last), pooled 2x2; Gemma 4 text
    with a sliding layer (bidirectional inside images: ``mm_token_type_ids``) and a full one."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig, Gemma4VisionConfig

    vision = Gemma4VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers, num_attention_heads=4, num_key_value_heads=4,
        head_dim=8, pooling_kernel_size=2, patch_size=8, position_embedding_size=64, standardize=True,
    )
    text = Gemma4TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
        vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=8, use_bidirectional_attention="vision",
        pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    cfg = Gemma4Config(
        text_config=text, vision_config=vision, audio_config=None, image_token_id=IMAGE_TOKEN, boi_token_id=START_IMAGE_TOKEN,
        eoi_token_id=END_IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, audio_token_id=88, boa_token_id=87, eoa_token_index=86,
    )
    return _finish(Gemma4ForConditionalGeneration(cfg), seed)


def gemma4_patches(grids, max_patches: int, seed: int = 1):
    """Gemma 4 processor-style inputs for images of (rows, columns) patch grids: pixel_values [n, max_patches, 192]
    (random values in [0, 1)) and image_position_ids [n, max_patches, 2] ((x, y); (-1, -1) padding at the end)."""
    gen = torch.Generator().manual_seed(seed)
    pixel_values = torch.zeros(len(grids), max_patches, 3 * 8 * 8)
    positions = torch.full((len(grids), max_patches, 2), -1, dtype=torch.long)
    for i, (rows, cols) in enumerate(grids):
        n = rows * cols
        pixel_values[i, :n] = torch.rand(n, 3 * 8 * 8, generator=gen)
        ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        positions[i, :n, 0], positions[i, :n, 1] = xs.flatten(), ys.flatten()
    return pixel_values, positions


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


# -- Qwen-VL: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5 ----------------------------------------------
VIDEO_TOKEN = 89
VISION_START_TOKEN = 91  # <|vision_start|> (InternVL's <img> id: the families never share a prompt)
VISION_END_TOKEN = 92
QWEN_PATCH = 14
QWEN_PATCH_VALUES = 3 * 2 * QWEN_PATCH * QWEN_PATCH  # channels x temporal patch x patch x patch


def _qwen_text(hidden: int = 64, layers: int = 2, **rope):
    return dict(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3], **rope),
        pad_token_id=PAD_TOKEN,
        bos_token_id=1,
        eos_token_id=2,
    )


_QWEN_TOKENS = dict(
    image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, vision_start_token_id=VISION_START_TOKEN, vision_end_token_id=VISION_END_TOKEN
)


def qwen2_vl(seed: int = 0, depth: int = 4):
    """Qwen2-VL: 14 px patches, 2x2 merge, full attention in every layer (no windows, no DeepStack);
    Qwen2-style text with M-RoPE sections (2, 3, 3) of a 16-dim head. (Its vision config names the
    tower's width ``embed_dim`` and the merger's output ``hidden_size``.)"""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vision = dict(
        depth=depth, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=4, patch_size=QWEN_PATCH, spatial_merge_size=2,
        temporal_patch_size=2,
    )
    cfg = Qwen2VLConfig(vision_config=vision, text_config=_qwen_text(), **_QWEN_TOKENS)
    return _finish(Qwen2VLForConditionalGeneration(cfg), seed)


def qwen2_5_vl(seed: int = 0, depth: int = 4, fullatt=(1, 3), window_size: int = 56):
    """Qwen2.5-VL: 14 px patches, 2x2 merge, windows of 56 px (2x2 merged tokens) in every layer
    except ``fullatt``; Qwen2-style text with M-RoPE sections (2, 3, 3) of a 16-dim head."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(
        depth=depth, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, fullatt_block_indexes=list(fullatt),
        window_size=window_size, patch_size=QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2,
    )
    cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=_qwen_text(), **_QWEN_TOKENS)
    return _finish(Qwen2_5_VLForConditionalGeneration(cfg), seed)


AUDIO_TOKEN, AUDIO_START_TOKEN, AUDIO_END_TOKEN = 86, 87, 88  # Qwen2.5-Omni's <|AUDIO|>, <|audio_bos|>, <|audio_eos|>


def qwen2_5_omni(seed: int = 0, depth: int = 4, fullatt=(1, 3)):
    """Qwen2.5-Omni's thinker (``Qwen2_5OmniThinkerForConditionalGeneration``): Qwen2.5-VL's tower (windows of
    56 px in every layer except ``fullatt``), a 2-layer audio tower on 16 mel bins, Qwen2-style M-RoPE text."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    vision = dict(
        depth=depth, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, fullatt_block_indexes=list(fullatt),
        window_size=56, patch_size=QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2,
    )
    audio = dict(
        num_mel_bins=16, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32, output_dim=64,
        n_window=4, max_source_positions=64,
    )
    text = _qwen_text()
    cfg = Qwen2_5OmniThinkerConfig(
        vision_config=vision, audio_config=audio, text_config=text, image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN, audio_token_index=AUDIO_TOKEN, audio_start_token_id=AUDIO_START_TOKEN,
        audio_end_token_id=AUDIO_END_TOKEN, vision_start_token_id=VISION_START_TOKEN,
        vision_end_token_id=VISION_END_TOKEN, position_id_per_seconds=25, seconds_per_chunk=2,
    )
    return _finish(Qwen2_5OmniThinkerForConditionalGeneration(cfg), seed)


def qwen3_omni(seed: int = 0, depth: int = 4, deepstack=(0, 2)):
    """Qwen3-Omni's thinker (``Qwen3OmniMoeThinkerForConditionalGeneration``): Qwen3-VL's tower (full attention,
    DeepStack features of ``deepstack``), a 2-layer audio tower, mixture-of-experts M-RoPE text (interleaved)."""
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    vision = dict(
        depth=depth, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
        deepstack_visual_indexes=list(deepstack), patch_size=QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2,
        num_position_embeddings=64,
    )
    audio = dict(
        num_mel_bins=16, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32, output_dim=64,
        n_window=50, n_window_infer=800, conv_chunksize=16, downsample_hidden_size=8, max_source_positions=64,
    )
    text = _qwen_text(mrope_interleaved=True)
    text["rope_parameters"]["mrope_section"] = [2, 3, 3]
    text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1, head_dim=16)
    cfg = Qwen3OmniMoeThinkerConfig(
        vision_config=vision, audio_config=audio, text_config=text, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
        audio_token_id=AUDIO_TOKEN, audio_start_token_id=AUDIO_START_TOKEN, audio_end_token_id=AUDIO_END_TOKEN,
        vision_start_token_id=VISION_START_TOKEN, vision_end_token_id=VISION_END_TOKEN, position_id_per_seconds=25,
    )
    return _finish(Qwen3OmniMoeThinkerForConditionalGeneration(cfg), seed)


def exaone4_5(seed: int = 0, depth: int = 4, fullatt=(1, 3)):
    """EXAONE 4.5: Qwen2.5-VL's tower with grouped-query vision attention (4 query heads, 2 key/value heads), windows
    of 56 px except ``fullatt``; EXAONE 4 text with plain 1-D positions."""
    from transformers import Exaone4_5_Config, Exaone4_5_ForConditionalGeneration

    vision = dict(
        depth=depth, hidden_size=32, intermediate_size=64, num_heads=4, num_key_value_heads=2, out_hidden_size=64,
        fullatt_block_indexes=list(fullatt), window_size=56, patch_size=QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2,
    )
    text = dict(
        model_type="exaone4", vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    cfg = Exaone4_5_Config(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN)
    return _finish(Exaone4_5_ForConditionalGeneration(cfg), seed)


def paddleocr_vl(seed: int = 0, depth: int = 4):
    """PaddleOCR-VL: a SigLIP-style NaViT tower (14 px patches [S, 3, 14, 14] in raster order, 2-D rotary
    q/k, learned positions resized from a 4x4 grid), the projector's 2x2 merge; ERNIE-style text with
    M-RoPE sections (2, 3, 3) of a 16-dim head."""
    from transformers import PaddleOCRVLConfig, PaddleOCRVLForConditionalGeneration

    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=depth, num_attention_heads=4, image_size=56,
        patch_size=QWEN_PATCH, spatial_merge_size=2,
    )
    text = dict(_qwen_text(), head_dim=16)
    cfg = PaddleOCRVLConfig(vision_config=vision, text_config=text, **_QWEN_TOKENS)
    return _finish(PaddleOCRVLForConditionalGeneration(cfg), seed)


def paddle_pixels(grids, seed: int = 1) -> torch.Tensor:
    """Random patches [sum t*h*w, 3, 14, 14] (PaddleOCR-VL's processor layout) for the given patch grids."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(int(t) * int(h) * int(w) for t, h, w in grids)
    return torch.randn(n, 3, QWEN_PATCH, QWEN_PATCH, generator=gen)


_TINY_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)  # the MoE variants' text blocks


def qwen3_vl(seed: int = 0, depth: int = 4, deepstack=(0, 2), text_layers: int = 3, moe: bool = False):
    """Qwen3-VL: 14 px patches, 2x2 merge, full attention in every layer, DeepStack features of
    vision layers ``deepstack`` injected after LLM blocks 0..len-1; interleaved M-RoPE. ``moe``:
    Qwen3-VL-MoE (the same tower, mixture-of-experts text blocks)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    vision = dict(
        depth=depth, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, deepstack_visual_indexes=list(deepstack),
        patch_size=QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
    )
    text = _qwen_text(layers=text_layers, mrope_interleaved=True)
    text["head_dim"] = 16
    if moe:
        cfg = Qwen3VLMoeConfig(vision_config=vision, text_config=dict(text, **_TINY_MOE), **_QWEN_TOKENS)
        return _finish(Qwen3VLMoeForConditionalGeneration(cfg), seed)
    cfg = Qwen3VLConfig(vision_config=vision, text_config=text, **_QWEN_TOKENS)
    return _finish(Qwen3VLForConditionalGeneration(cfg), seed)


def qwen3_5(seed: int = 0, depth: int = 4, text_layers: int = 4, moe: bool = False):
    """Qwen3.5: Qwen3-VL's vision tower without DeepStack (16 px patches in the release; 14 here),
    a hybrid language model (linear-attention layers, a full-attention layer every 4th) with
    interleaved M-RoPE; videos as Qwen3-VL writes them (one run per frame). ``moe``: Qwen3.5-MoE."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    vision = dict(
        depth=depth, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=QWEN_PATCH,
        spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
    )
    text = _qwen_text(layers=text_layers, mrope_interleaved=True, partial_rotary_factor=1.0)
    text.update(head_dim=16, linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4)
    if moe:
        text.update(_TINY_MOE, shared_expert_intermediate_size=32)
        cfg = Qwen3_5MoeConfig(vision_config=vision, text_config=text, **_QWEN_TOKENS)
        return _finish(Qwen3_5MoeForConditionalGeneration(cfg), seed)
    cfg = Qwen3_5Config(vision_config=vision, text_config=text, **_QWEN_TOKENS)
    return _finish(Qwen3_5ForConditionalGeneration(cfg), seed)


def glm4v(seed: int = 0, depth: int = 4, moe: bool = False, glm46v: bool = False, ocr: bool = False):
    """GLM-4.1V: a Qwen-VL-style packed tower (14 px patches, 2x2 blocks, full attention) whose 2x2
    blocks are merged by a norm, a 2x2 convolution and an MLP; M-RoPE text. ``moe``: GLM-4.5V (the
    same tower, mixture-of-experts text blocks after the first). ``glm46v``: GLM-4.6V's class
    (``Glm46VForConditionalGeneration``: the same tower and text model, built from their configs).
    ``ocr``: GLM-OCR (``GlmOcrForConditionalGeneration``: GLM-4.1V with q/k norms in the tower's
    attention and no learned position embedding)."""
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration, Glm4vMoeConfig, Glm4vMoeForConditionalGeneration

    vision = dict(
        depth=depth, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=QWEN_PATCH,
        spatial_merge_size=2, temporal_patch_size=2, image_size=56,
    )
    text = _qwen_text()
    text["rope_parameters"]["partial_rotary_factor"] = 1.0
    tokens = dict(image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, image_start_token_id=VISION_START_TOKEN,
                  image_end_token_id=VISION_END_TOKEN)
    if ocr:
        from transformers import GlmOcrConfig, GlmOcrForConditionalGeneration

        return _finish(GlmOcrForConditionalGeneration(GlmOcrConfig(vision_config=vision, text_config=text, **tokens)), seed)
    if glm46v:
        from transformers import Glm46VConfig, Glm46VForConditionalGeneration

        config = Glm46VConfig(
            vision_config=dict(vision, model_type="glm4v_vision"), text_config=dict(text, model_type="glm4v_text"), **tokens
        )
        return _finish(Glm46VForConditionalGeneration(config), seed)
    if moe:
        text.update(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1)
        return _finish(Glm4vMoeForConditionalGeneration(Glm4vMoeConfig(vision_config=vision, text_config=text, **tokens)), seed)
    return _finish(Glm4vForConditionalGeneration(Glm4vConfig(vision_config=vision, text_config=text, **tokens)), seed)


def qwen_visual_tokens(grid_thw) -> int:
    """Merged tokens (placeholders) of one image/video with patch grid (t, h, w)."""
    t, h, w = (int(v) for v in grid_thw)
    return t * (h // 2) * (w // 2)


def qwen_prompts(
    rows, *, per_frame_runs: bool = False, padding_side: str = "left", seed: int = 0, video_token: int = VIDEO_TOKEN
):
    """(input_ids, attention_mask, mm_token_type_ids) [B, S] in the processor's layout.

    rows: per row a list of visual items, ("image", (t, h, w)) or ("video", (t, h, w)); each item is
    <|vision_start|> + one placeholder per merged token + <|vision_end|>, with text before, between
    and after. ``per_frame_runs`` (Qwen3-VL's video layout): every frame of a video is its own run,
    preceded by a timestamp text token. ``video_token``: the placeholder of video frames (GLM-4V writes
    them with the image token, type 2). Rows differ in length so padding is exercised."""
    gen = torch.Generator().manual_seed(seed)

    def text(n):
        return torch.randint(3, 80, (n,), generator=gen).tolist()

    seqs, types = [], []
    for b, items in enumerate(rows):
        ids = text(2 + b)
        kinds = [0] * len(ids)
        for kind, grid in items:
            token, type_id = (IMAGE_TOKEN, 1) if kind == "image" else (video_token, 2)
            t = int(grid[0])
            runs = [qwen_visual_tokens((1, grid[1], grid[2]))] * t if kind == "video" and per_frame_runs else [qwen_visual_tokens(grid)]
            for n in runs:
                prefix = text(1) if kind == "video" and per_frame_runs else []
                ids += prefix + [VISION_START_TOKEN] + [token] * n + [VISION_END_TOKEN]
                kinds += [0] * (len(prefix) + 1) + [type_id] * n + [0]
            ids += text(1)
            kinds += [0]
        ids += text(3)
        kinds += [0] * 3
        seqs.append(ids)
        types.append(kinds)
    width = max(len(s) for s in seqs)
    out_ids = torch.full((len(seqs), width), PAD_TOKEN, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    type_ids = torch.zeros(len(seqs), width, dtype=torch.long)
    for b, (s, k) in enumerate(zip(seqs, types)):
        cols = slice(width - len(s), width) if padding_side == "left" else slice(0, len(s))
        out_ids[b, cols] = torch.tensor(s)
        mask[b, cols] = 1
        type_ids[b, cols] = torch.tensor(k)
    return out_ids, mask, type_ids


def qwen_pixels(grids, seed: int = 1) -> torch.Tensor:
    """Random flattened patches [sum t*h*w, 3*2*14*14] for the given patch grids."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(int(t) * int(h) * int(w) for t, h, w in grids)
    return torch.randn(n, QWEN_PATCH_VALUES, generator=gen)


ERNIE_PATCH_VALUES = 3 * QWEN_PATCH * QWEN_PATCH  # ERNIE 4.5-VL's patches have no temporal patch: one frame each
ERNIE_IMAGE_START, ERNIE_IMAGE_END, ERNIE_VIDEO_START, ERNIE_VIDEO_END = 91, 92, 93, 94


def ernie4_5_vl(seed: int = 0, depth: int = 4, text_layers: int = 2):
    """ERNIE 4.5-VL (``Ernie4_5_VLMoeForConditionalGeneration``): a Qwen2-VL-like tower (14 px patches of one
    frame, full attention per frame, 2x2 merge blocks) with a final LayerNorm, the resampler (spatial MLP on
    the 4C concatenation, temporal MLP on frame pairs, MLP, RMS norm); MoE text (block 0 dense, block 1 with
    text and vision experts, a shared expert) with 3-D positions, sections (3, 3, 2) of a 16-dim head."""
    from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

    vision = dict(
        depth=depth, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=QWEN_PATCH, spatial_merge_size=2,
        temporal_merge_size=2, rope_parameters=dict(rope_type="axial", rope_theta=10000.0),
    )
    text = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=text_layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[3, 3, 2]),
        moe_intermediate_size=[32, 16], moe_k=2, moe_num_experts=4, moe_num_shared_experts=1,
        pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
    )
    cfg = Ernie4_5_VLMoeConfig(
        vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
        image_start_token_id=ERNIE_IMAGE_START, image_end_token_id=ERNIE_IMAGE_END,
        video_start_token_id=ERNIE_VIDEO_START, video_end_token_id=ERNIE_VIDEO_END,
    )
    return _finish(Ernie4_5_VLMoeForConditionalGeneration(cfg), seed)


def ernie_prompts(rows, *, padding_side: str = "left", seed: int = 0):
    """(input_ids, attention_mask, mm_token_type_ids, moe_mm_token_type_ids) [B, S] in ERNIE 4.5-VL's layout.

    rows: per row a list of ("image", (1, h, w)) or ("video", (t, h, w)) (t frames, even): each item is a
    start marker, one placeholder per language-model token (image: h/2 * w/2; video: t/2 * h/2 * w/2) and an
    end marker, text around. ``moe_mm_token_type_ids`` is ``mm_token_type_ids`` with the markers typed as
    their item (the processor's ``create_moe_mm_token_type_ids``)."""
    markers = {"image": (ERNIE_IMAGE_START, ERNIE_IMAGE_END), "video": (ERNIE_VIDEO_START, ERNIE_VIDEO_END)}
    qwen_rows = [[(kind, (t // 2 if kind == "video" else t, h, w)) for kind, (t, h, w) in items] for items in rows]
    ids, mask, types = qwen_prompts(qwen_rows, padding_side=padding_side, seed=seed)
    ids = ids.clone()
    moe = types.clone()
    for b, items in enumerate(rows):  # the markers around each run of placeholders, in order
        starts = ((ids[b] == VISION_START_TOKEN) & mask[b].bool()).nonzero().flatten().tolist()
        ends = ((ids[b] == VISION_END_TOKEN) & mask[b].bool()).nonzero().flatten().tolist()
        for (kind, _), s, e in zip(items, starts, ends):
            ids[b, s], ids[b, e] = markers[kind]
            moe[b, s] = moe[b, e] = 1 if kind == "image" else 2
    return ids, mask, types, moe


def ernie_pixels(grids, seed: int = 1) -> torch.Tensor:
    """Random flattened patches [sum t*h*w, 3*14*14] (one frame per patch) for the given patch grids."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(int(t) * int(h) * int(w) for t, h, w in grids)
    return torch.randn(n, ERNIE_PATCH_VALUES, generator=gen)
