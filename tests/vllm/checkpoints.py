"""Tiny random-weight checkpoints that vLLM loads from a folder (no hub): weights, config, a character
tokenizer with the models' special tokens, an image processor and a chat template.

- ``llava(path, tower="clip"|"siglip")``: LLaVA-1.5 shape (CLIP with [CLS], feature layer -2,
  strategy "default") or a SigLIP tower (no [CLS], feature layer -1, strategy "full").
- ``llava_next(path)``: LLaVA-NeXT, 42 x 42 tiles (3 x 3 patches), anyres pinpoints up to 84 x 126.
- ``llava_next_video(path)``: LLaVA-NeXT-Video, 56 x 56 frames (8 x 8 patches of 7 px) average-pooled 2x2 to 4 x 4.
- ``llava_onevision(path)``: LLaVA-OneVision, SigLIP tower, 42 x 42 tiles (3 x 3 patches), pinpoints up to
  4 x 4 tiles (big grids over 9 tiles' worth of tokens are bilinearly downsized); video frames pool to 2 x 2.
- ``cohere2_vision(path)``: Cohere2 Vision (Command A Vision), SigLIP 128 px tiles (8 x 8 patches of 16 px), pixel
  shuffle 2 -> 16 tokens per tile, up to 4 tiles plus a thumbnail.
- ``lfm2_vl(path)``: LFM2-VL, SigLIP2 NaFlex tiles of 8 x 8 patches (16 tokens after the unshuffle), 2 to 4 tiles plus
  a thumbnail for larger images, smaller ones at their own size; LFM2 hybrid text with one attention head.
- ``minicpmv4_6(path)``: MiniCPM-V 4.6, a NaViT tower (14 px patches, window merger after layer 1, 2x2 MLP merger:
  4 x 4 patches per token), slices of 224 px (16 tokens each) up to 4 plus the source image; Qwen3.5 text with
  full-attention layers only.
- ``gemma3(path)``: Gemma 3, SigLIP 112 px (8 x 8 patches) pooled 2x2 to 16 tokens per image.
- ``idefics3(path, smolvlm=False)``: Idefics3 (SmolVLM), 84 px tiles (6 x 6 patches), images split in
  tiles of up to 2 x 2 plus the global image, pixel shuffle 2 -> 9 tokens per tile.
- ``internvl(path)``: InternVL (HF-native format), 84 x 84 tiles, pixel shuffle 0.5 -> 9 tokens per tile.
- ``qwen2_vl(path)``: Qwen2-VL, 14 px patches merged 2x2, full attention in its 4 blocks.
- ``qwen2_5_vl(path)``: Qwen2.5-VL, 14 px patches merged 2x2, 56 px windows (2 x 2 merged tokens) in
  blocks 0 and 2, full attention in blocks 1 and 3; images of 4 to 64 merged tokens (56 px sides and up).
- ``qwen3_vl(path)``: Qwen3-VL, 16 px patches merged 2x2, full attention in its 4 blocks, DeepStack
  features of blocks 1 and 2, interleaved M-RoPE; images of 4 to 64 merged tokens (64 px sides and up).
- ``glm4v(path, moe=False)``: GLM-4.1V (GLM-4.5V with ``moe``), 14 px patches, 2x2 blocks merged by a
  norm, a 2x2 convolution and an MLP.
- ``qwen3_vl_moe(path)``: the same with mixture-of-experts text blocks; ``qwen3_5(path)``: Qwen3.5,
  the same tower without DeepStack and a hybrid (linear-attention) language model, served in bfloat16.
- ``qwen2_5_omni(path)``: Qwen2.5-Omni without talker (``enable_audio_output`` off): a thinker with ``qwen2_5_vl``'s
  tower, a 2-layer audio tower on 16 mel bins (Whisper features, clips up to 2 s); returns the transformers thinker.
- ``qwen3_omni(path)``: Qwen3-Omni without talker: a thinker with ``qwen3_vl``'s tower (DeepStack), a 2-layer audio
  tower on 16 mel bins and 2 mixture-of-experts text layers (4 experts); returns the transformers thinker.
- ``exaone4_5(path)``: EXAONE 4.5, Qwen2.5-VL's tower with grouped-query attention, EXAONE 4 text (1-D positions).
- ``paddleocr_vl(path)``: PaddleOCR-VL, a NaViT tower whose projector merges 2x2 blocks, ERNIE-4.5 text with M-RoPE.
- ``mistral3(path)``: Mistral 3 (Mistral-Small-3.1), Pixtral tower, 14 px patches merged 2x2 by the projector,
  images up to 112 px (4 x 4 merged tokens), each row of [IMG] ended by [IMG_BREAK], the last by [IMG_END].
- ``llava_pixtral(path)``: Pixtral-12B's LLaVA form: the Pixtral tower of ``mistral3`` without a merger, images up
  to 70 px (5 x 5 tokens) written row by row.
- ``llama4(path)``: Llama 4, 112 px tiles pixel-shuffled to 16 tokens, up to 4 tiles plus a global tile, MoE text.
- ``gemma4(path)``: Gemma 4, 8 px patches pooled 3x3 by position, images resized to 70 soft tokens' worth and padded
  to 630 patches, a sliding and a full text layer, untied head.
- ``internvl_chat(path)``: InternVL in its original format (``InternVLChatModel``, loaded with trust_remote_code: the
  folder carries its two configuration files), the weights of ``internvl`` renamed to that layout.

Weights are written in the hub layout vLLM loads: transformers 5.x saves a CLIP/SigLIP tower as
``vision_tower.*``, the hub checkpoints (and vLLM) use ``vision_tower.vision_model.*``.
"""
from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tiny_models import _finish  # noqa: E402  (the transformers tests' seeded weight init)

SPECIAL = [
    "<pad>", "<s>", "</s>", "<image>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<unk>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
    "<|image|>", "<|begin_of_image|>", "<|end_of_image|>", "<|video|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>", "<fake_token_around_image>", "<global-img>",
    "\n\n", "\n\n\n", "\n\n\n\n",  # never produced (characters are split), but vLLM's Gemma 3 looks them up
    "[IMG]", "[IMG_BREAK]", "[IMG_END]",  # Mistral 3 (Pixtral)
    "<|image_start|>", "<|image_end|>", "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>",  # Llama 4
    "<|image>", "<image|>", "<|audio>", "<audio|>", "<|audio|>",  # Gemma 4 (with <|image|>, <|video|> above)
]
CHARACTERS = ["\n"] + [chr(c) for c in range(32, 127)]
VOCAB_SIZE = len(SPECIAL) + len(CHARACTERS)  # every id the model can emit decodes
IMAGE_TOKEN = "<image>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' or c['type'] == 'image_url' %}{{ image_token }}{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def token_id(token: str) -> int:
    return SPECIAL.index(token)


LLAVA_INTERNVL_TOKENS = {
    "image_token": "<image>",
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
QWEN_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def tokenizer(special_tokens: dict = LLAVA_INTERNVL_TOKENS):
    """A character-level fast tokenizer: the special tokens, then '\\n' and printable ASCII.
    ``special_tokens``: the named special tokens the model family's processor reads."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=dict(special_tokens),
    )


def tiny_text_config(kind: str):
    from transformers import LlamaConfig, Qwen2Config

    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind]
    return config_class(
        # head_dim 64: vLLM's CPU attention kernels support no head size below 32
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )


def _clip(image_size: int, layers: int = 3, patch_size: int = 14):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, projection_dim=32,
    )


def _save(model, processor, path: str, hub_tower_prefix: bool):
    """save_pretrained, then rename CLIP/SigLIP tower keys to the hub layout vLLM loads.
    Returns (path, model): the in-memory transformers model holds the same weights."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(path)
    processor.save_pretrained(path)
    if hub_tower_prefix:
        weights = os.path.join(path, "model.safetensors")
        state = load_file(weights)
        renamed = {
            ("vision_tower.vision_model." + k[len("vision_tower.") :] if k.startswith("vision_tower.") else k): v
            for k, v in state.items()
        }
        save_file(renamed, weights, metadata={"format": "pt"})
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config["torch_dtype"] = "float32"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return path, model


def llava(path: str, tower: str = "clip", seed: int = 0, vision_config=None, text_config=None):
    """``vision_config`` / ``text_config`` replace the tiny defaults (a CLIP config for tower="clip")."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, SiglipVisionConfig

    if tower == "clip":
        vision = vision_config or _clip(70)  # 5 x 5 patches by default
        feature_layer, strategy, size = -2, "default", vision.image_size
    else:
        size = 56  # 4 x 4 patches
        vision = SiglipVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=size, patch_size=14
        )
        feature_layer, strategy = -1, "full"
    config = LlavaConfig(
        vision_config=vision, text_config=text_config or tiny_text_config("llama" if tower == "clip" else "qwen2"),
        image_token_index=token_id(IMAGE_TOKEN), vision_feature_layer=feature_layer,
        vision_feature_select_strategy=strategy, image_seq_length=(size // 14) ** 2,
    )
    torch.manual_seed(seed)
    model = _finish(LlavaForConditionalGeneration(config), seed)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True, do_resize=True
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer(), patch_size=14,
        vision_feature_select_strategy=strategy, num_additional_image_tokens=1 if tower == "clip" else 0,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", IMAGE_TOKEN),
    )
    return _save(model, processor, path, hub_tower_prefix=True)


PINPOINTS = [[42, 84], [84, 42], [84, 84], [84, 126], [126, 84]]


def llava_next(path: str, seed: int = 0):
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor

    config = LlavaNextConfig(
        vision_config=_clip(42), text_config=tiny_text_config("llama"), image_token_index=token_id(IMAGE_TOKEN),
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_grid_pinpoints=PINPOINTS,
        image_seq_length=9,
    )
    torch.manual_seed(seed)
    model = _finish(LlavaNextForConditionalGeneration(config), seed)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 42}, crop_size={"height": 42, "width": 42}, image_grid_pinpoints=PINPOINTS
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer(), patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", IMAGE_TOKEN),
    )
    return _save(model, processor, path, hub_tower_prefix=True)


def llava_next_video(path: str, seed: int = 0):
    """56 px frames of 7 px patches (vLLM's resampler needs image_size >= patch_size ** 2, as 336 >= 14 ** 2)."""
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    config = LlavaNextVideoConfig(
        vision_config=_clip(56, patch_size=7), text_config=tiny_text_config("llama"),
        image_token_index=token_id(IMAGE_TOKEN), video_token_index=token_id("<video>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", image_grid_pinpoints=[[56 * a, 56 * b] for a, b in [(1, 2), (2, 1), (2, 2)]],
        spatial_pool_mode="average", spatial_pool_stride=2,
    )
    torch.manual_seed(seed)
    model = _finish(LlavaNextVideoForConditionalGeneration(config), seed)
    size, crop = {"shortest_edge": 56}, {"height": 56, "width": 56}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(size=size, crop_size=crop),
        image_processor=LlavaNextImageProcessor(size=size, crop_size=crop, image_grid_pinpoints=config.image_grid_pinpoints),
        tokenizer=tokenizer(), patch_size=7, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", IMAGE_TOKEN),
    )
    return _save(model, processor, path, hub_tower_prefix=True)


ONEVISION_PINPOINTS = [[42 * a, 42 * b] for a, b in [(1, 2), (2, 1), (2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 3), (4, 4)]]


def llava_onevision(path: str, seed: int = 0):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=42, patch_size=14
    )
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=tiny_text_config("qwen2"), image_token_index=token_id(IMAGE_TOKEN),
        video_token_index=token_id("<video>"), vision_feature_layer=-1, vision_feature_select_strategy="full",
        image_grid_pinpoints=ONEVISION_PINPOINTS, vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(seed)
    model = _finish(LlavaOnevisionForConditionalGeneration(config), seed)
    size = {"height": 42, "width": 42}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=ONEVISION_PINPOINTS),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer(), num_image_tokens=9, vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", IMAGE_TOKEN), vision_aspect_ratio="anyres_max_9",
    )
    return _save(model, processor, path, hub_tower_prefix=True)


COHERE2_VISION_TOKENS = {  # the character tokenizer's specials stand in for Command A Vision's
    "image_token": IMAGE_TOKEN,  # <|IMG_PATCH|>
    "boi_token": "<start_of_image>",  # <|START_OF_IMG|>
    "eoi_token": "<end_of_image>",  # <|END_OF_IMG|>
    "img_line_break_token": "[IMG_BREAK]",  # <|IMG_LINE_BREAK|>
}


def cohere2_vision(path: str, seed: int = 0):
    """Cohere2 Vision: SigLIP 128 px tiles / 16 px patches (8 x 8, post_layernorm applied), pixel shuffle 2 -> 16
    tokens per tile, up to 4 tiles plus a thumbnail; Cohere2 text with a sliding and a full layer.

    ``logit_scale`` 1: transformers' Cohere2VisionForConditionalGeneration never applies it, vLLM's Cohere2 does.
    ``sliding_window`` 1024 > max_model_len: transformers lets a token see ``sliding_window`` tokens, vLLM's Cohere2
    ``sliding_window + 1``. The image processor exists only with torchvision (the vLLM venv has it)."""
    from safetensors.torch import load_file, save_file
    from transformers import (
        Cohere2Config,
        Cohere2VisionConfig,
        Cohere2VisionForConditionalGeneration,
        Cohere2VisionImageProcessor,
        Cohere2VisionProcessor,
        SiglipVisionConfig,
    )

    text = Cohere2Config(
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, sliding_window=1024,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=0, bos_token_id=1, eos_token_id=2,
        logit_scale=1.0, tie_word_embeddings=True,
    )
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=128, patch_size=16,
        vision_use_head=False,
    )
    config = Cohere2VisionConfig(
        vision_config=vision, text_config=text, downsample_factor=2, image_token_id=token_id(IMAGE_TOKEN),
        alignment_intermediate_size=128, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = _finish(Cohere2VisionForConditionalGeneration(config), seed)
    model.save_pretrained(path)
    image_processor = Cohere2VisionImageProcessor(
        size={"height": 128, "width": 128}, crop_to_patches=True, min_patches=1, max_patches=4, patch_size=4,
    )  # patch_size: tokens per tile side
    Cohere2VisionProcessor(
        image_processor=image_processor, tokenizer=tokenizer(COHERE2_VISION_TOKENS),
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", IMAGE_TOKEN),
    ).save_pretrained(path)
    weights = os.path.join(path, "model.safetensors")  # vLLM loads model.vision_tower.vision_model.*
    prefix = "model.vision_tower."
    state = {
        (prefix + "vision_model." + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in load_file(weights).items()
    }
    save_file(state, weights, metadata={"format": "pt"})
    with open(os.path.join(path, "config.json")) as f:
        saved = json.load(f)
    saved["torch_dtype"] = "float32"
    saved["text_config"]["architectures"] = ["Cohere2ForCausalLM"]  # vLLM builds the text model from it
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(saved, f, indent=1)
    return path, model


LFM2_VL_TILE_MARKERS = [f"<|img_row_{r}_col_{c}|>" for r in range(1, 5) for c in range(1, 5)]
LFM2_VL_TOKENS = {
    "image_token": IMAGE_TOKEN, "image_start_token": "<|image_start|>", "image_end_token": "<|image_end|>",
    "image_thumbnail_token": "<|img_thumbnail|>",
}


def lfm2_vl(path: str, seed: int = 0, heads: int = 1):
    """LFM2-VL: a SigLIP2 NaFlex tower (8 px patches, 3 layers, post_layernorm), pixel unshuffle 2, LayerNorm + MLP;
    64 px tiles (8 x 8 patches -> 16 tokens), 2 to 4 tiles plus a thumbnail of at most 16 tokens for images over half
    the 16-token budget, smaller images at their own size (4 to 16 tokens); every tile padded to 64 patches. LFM2
    text: conv, attention, conv, attention layers.

    - ONE attention head of 128 (``heads``): vLLM's CPU rotary kernel mis-rotates the [tokens, heads, head_dim]
      queries LFM2's attention gives it when there are several heads (the prompt log-probabilities drift by ~0.7
      from stock transformers' otherwise); with more heads, serve with
      ``compilation_config={"custom_ops": ["-rotary_embedding"]}`` (vLLM's native rotary).
    - ``max_pixels_tolerance`` 0.5 (released: 2.0): vLLM sizes its encoder cache from a profiling image of the
      token budget, which is then itself tiled (80 tokens, the most an image gets here); at 2.0 it is not, and a
      tiled image would not fit the cache of the tests' 32-token steps.
    - ``block_auto_adjust_ff_dim`` off (transformers and vLLM round the adjusted size differently); the text config
      carries ``block_dim`` / ``conv_dim``, which vLLM reads; tied embeddings (vLLM always ties).
    - The thumbnail and tile markers are added after the character vocabulary (every other id unchanged).
    The image processor exists only with torchvision (the vLLM venv has it)."""
    from safetensors.torch import load_file, save_file
    from transformers import Lfm2Config, Lfm2VlConfig, Lfm2VlForConditionalGeneration, Siglip2VisionConfig
    from transformers.models.lfm2_vl import Lfm2VlImageProcessor, Lfm2VlProcessor

    tok = tokenizer(LFM2_VL_TOKENS)
    tok.add_tokens(["<|img_thumbnail|>"] + LFM2_VL_TILE_MARKERS, special_tokens=True)
    text = Lfm2Config(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=heads,
        num_key_value_heads=heads, max_position_embeddings=1024, norm_eps=1e-5, conv_bias=False, conv_L_cache=3,
        block_auto_adjust_ff_dim=False, block_multiple_of=256, block_ffn_dim_multiplier=1.0,
        layer_types=["conv", "full_attention", "conv", "full_attention"], tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    vision = Siglip2VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, patch_size=8, num_patches=64,
        vision_use_head=False, layer_norm_eps=1e-6,
    )
    config = Lfm2VlConfig(
        vision_config=vision, text_config=text, image_token_id=token_id(IMAGE_TOKEN), projector_hidden_act="gelu",
        projector_hidden_size=64, projector_bias=True, projector_use_layernorm=True, downsample_factor=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = _finish(Lfm2VlForConditionalGeneration(config), seed)
    image_processor = Lfm2VlImageProcessor(
        downsample_factor=2, encoder_patch_size=8, tile_size=64, min_tiles=2, max_tiles=4, use_thumbnail=True,
        do_image_splitting=True, min_image_tokens=4, max_image_tokens=16, max_pixels_tolerance=0.5,
    )
    chat_template = CHAT_TEMPLATE.replace("{{ image_token }}", IMAGE_TOKEN)
    model.save_pretrained(path)
    Lfm2VlProcessor(image_processor=image_processor, tokenizer=tok, chat_template=chat_template).save_pretrained(path)
    weights = os.path.join(path, "model.safetensors")  # vLLM loads model.vision_tower.vision_model.*
    prefix = "model.vision_tower."
    state = {
        (prefix + "vision_model." + k[len(prefix):] if k.startswith(prefix) and not k.startswith(prefix + "vision_model.") else k): v
        for k, v in load_file(weights).items()
    }
    save_file(state, weights, metadata={"format": "pt"})
    with open(os.path.join(path, "config.json")) as f:
        saved = json.load(f)
    saved["torch_dtype"] = "float32"
    saved["text_config"].update(architectures=["Lfm2ForCausalLM"], block_dim=128, conv_dim=128)  # read by vLLM's LFM2
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(saved, f, indent=1)
    return path, model


MINICPMV_TOKENS = {  # the names MiniCPM-V's processor reads -> stand-ins from SPECIAL (the real token after #)
    "image_token": "<|image_pad|>",  # <|image_pad|>
    "video_token": "<|video_pad|>",  # <|video_pad|>
    "image_start_token": "<img>",  # <image>
    "image_end_token": "</img>",  # </image>
    "slice_start_token": "<|vision_start|>",  # <slice>
    "slice_end_token": "<|vision_end|>",  # </slice>
    "image_id_start_token": "<|begin_of_image|>",  # <image_id>
    "image_id_end_token": "<|end_of_image|>",  # </image_id>
}
MINICPMV_IMAGE = "<|image_pad|>"
MINICPMV_VIDEO = "<|video_pad|>"


def minicpmv4_6(path: str, seed: int = 0):
    """MiniCPM-V 4.6 (``MiniCPMV4_6ForConditionalGeneration``): a SigLIP-like NaViT tower (no [CLS], 14 px patches,
    4 layers of 32, a 16 x 16 position table), the window merger after layer ``insert_layer_id`` 1 (layers 0-1 see
    patches, 2-3 2x2-merged tokens), post_layernorm and one 2x2 MLP merger: a token per 4 x 4 patches. Slices of
    224 px (16 x 16 patches: 16 tokens for a square slice), at most 4 (``max_slice_nums``), after the source image.

    - Text: Qwen3.5 (vLLM always builds ``Qwen3_5ForCausalLM``) with full-attention layers only: vLLM's CPU
      linear-attention kernels run in bfloat16 only; head_dim 64, partial rotary 0.25, interleaved M-RoPE sections
      (all channels equal in 4.6: plain 1-D positions). Serve with ``enable_prefix_caching=False``: with it vLLM
      turns on mamba_cache_mode="align", which asserts that a hybrid model has linear-attention layers.
    - The prompt holds ``<|image_pad|>`` once per image; both processors expand it to the image id, the source
      image's run between ``<img>``/``</img>`` and the slices row by row (MINICPMV_TOKENS: stand-in markers).
    - ``max_slice_nums`` is also written to config.json: vLLM's profiler sizes the largest image from it.
    Stock vLLM 0.32 and transformers agree on this checkpoint to 5e-5 in prompt log-probabilities.
    The video processor exists only with torchvision (the vLLM venv has it)."""
    from transformers import (
        MiniCPMV4_6Config,
        MiniCPMV4_6ForConditionalGeneration,
        MiniCPMV4_6ImageProcessor,
        MiniCPMV4_6Processor,
        MiniCPMV4_6VideoProcessor,
    )

    head_dim = 64
    rotary_half = int(head_dim * 0.25) // 2  # 8 frequencies, split 3:3:2 over (t, h, w)
    text = dict(
        model_type="qwen3_5_text", vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim,
        layer_types=["full_attention"] * 2, max_position_embeddings=1024, rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25,
                             mrope_section=[3, 3, rotary_half - 6], mrope_interleaved=True),
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, image_size=224, patch_size=14,
        layer_norm_eps=1e-6, window_kernel_size=[2, 2],
    )
    config = MiniCPMV4_6Config(
        text_config=text, vision_config=vision, insert_layer_id=1, image_size=224, drop_vision_last_layer=False,
        downsample_mode="16x", merge_kernel_size=[2, 2], merger_times=1,
        image_token_id=token_id(MINICPMV_IMAGE), video_token_id=token_id(MINICPMV_VIDEO),
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = _finish(MiniCPMV4_6ForConditionalGeneration(config), seed)
    common = dict(scale_resolution=224, patch_size=14, max_slice_nums=4, slice_mode=True, downsample_mode="16x", use_image_id=True)
    processor = MiniCPMV4_6Processor(
        image_processor=MiniCPMV4_6ImageProcessor(**common), video_processor=MiniCPMV4_6VideoProcessor(**common),
        tokenizer=tokenizer(MINICPMV_TOKENS), chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", MINICPMV_IMAGE),
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    with open(os.path.join(path, "config.json")) as f:
        saved = json.load(f)
    saved.update(torch_dtype="float32", max_slice_nums=common["max_slice_nums"])
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(saved, f, indent=1)
    return path, model


GEMMA3_TOKENS = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
GEMMA3_IMAGE = "<start_of_image>"


def gemma3(path: str, seed: int = 0):
    """Gemma 3: SigLIP 112 px / 14 px patches (8 x 8), average-pooled 2x2 to 4 x 4 = 16 tokens per image;
    a sliding-window (8) and a full-attention text layer (head_dim 64: vLLM's CPU attention minimum is 32)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor, Gemma3TextConfig
    from transformers import SiglipVisionConfig

    text = Gemma3TextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64, max_position_embeddings=1024, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=112, patch_size=14,
        vision_use_head=False,
    )
    config = Gemma3Config(
        vision_config=vision, text_config=text, mm_tokens_per_image=16, image_token_id=token_id("<image_soft_token>"),
        boi_token_id=token_id("<start_of_image>"), eoi_token_id=token_id("<end_of_image>"),
    )
    torch.manual_seed(seed)
    model = _finish(Gemma3ForConditionalGeneration(config), seed)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 112, "width": 112}), tokenizer=tokenizer(GEMMA3_TOKENS),
        image_seq_length=16, chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", GEMMA3_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=True)


IDEFICS3_TOKENS = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>"}


def idefics3(path: str, seed: int = 0, smolvlm: bool = False, image_splitting: bool = True):
    """Idefics3 (or SmolVLM): SigLIP-like tower on 84 px tiles (6 x 6 patches), pixel shuffle 2 -> 3 x 3 = 9
    tokens per tile; the image processor splits an image into tiles of 84 px (up to 168 px: 2 x 2 tiles)
    plus a global image; Llama text."""
    if smolvlm:
        from transformers import SmolVLMConfig as Config, SmolVLMForConditionalGeneration as Model
        from transformers import SmolVLMImageProcessor as ImageProcessor, SmolVLMProcessor as Processor
        from transformers import SmolVLMVisionConfig as Vision
    else:
        from transformers import Idefics3Config as Config, Idefics3ForConditionalGeneration as Model
        from transformers import Idefics3ImageProcessor as ImageProcessor, Idefics3Processor as Processor
        from transformers import Idefics3VisionConfig as Vision

    vision = Vision(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=84, patch_size=14)
    config = Config(vision_config=vision.to_dict(), text_config=tiny_text_config("llama").to_dict(), scale_factor=2,
                    image_token_id=token_id("<image>"))
    torch.manual_seed(seed)
    model = _finish(Model(config), seed)
    image_processor = ImageProcessor(
        size={"longest_edge": 168}, max_image_size={"longest_edge": 84}, do_image_splitting=image_splitting
    )
    extra = {}
    if smolvlm:
        from transformers import SmolVLMVideoProcessor

        extra["video_processor"] = SmolVLMVideoProcessor(size={"longest_edge": 84}, max_image_size={"longest_edge": 84})
    processor = Processor(
        image_processor=image_processor, tokenizer=tokenizer(IDEFICS3_TOKENS), image_seq_len=9,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", IMAGE_TOKEN), **extra,
    )
    return _save(model, processor, path, hub_tower_prefix=False)


def internvl(path: str, seed: int = 0):
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
    )

    vision = InternVLVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=[84, 84],
        patch_size=[14, 14], use_qk_norm=True, use_absolute_position_embeddings=True, norm_type="layer_norm",
    )
    config = InternVLConfig(
        vision_config=vision, text_config=tiny_text_config("qwen2"), image_token_id=token_id("<IMG_CONTEXT>"),
        image_seq_length=9, downsample_ratio=0.5, vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = _finish(InternVLForConditionalGeneration(config), seed)
    image_processor = GotOcr2ImageProcessor(
        size={"height": 84, "width": 84}, crop_to_patches=True, min_patches=1, max_patches=4
    )
    processor = InternVLProcessor(
        image_processor=image_processor, tokenizer=tokenizer(), image_seq_length=9,
        video_processor=InternVLVideoProcessor(size={"height": 84, "width": 84}),
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<image>"),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


def _mrope_text(text_config, sections, **rope) -> dict:
    """The text config as a dict with M-RoPE: ``sections(head_dim)`` -> the (t, h, w) rotary sections."""
    text = (text_config or tiny_text_config("qwen2")).to_dict()
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    text["rope_parameters"] = dict(rope_type="default", rope_theta=10000.0, mrope_section=sections(head_dim), **rope)
    return text


def _qwen(path: str, seed: int, classes, vision: dict, text: dict, max_pixels: int, **processor_args):
    """A Qwen-VL checkpoint: ``classes`` = (config, model, processor, video processor) classes; the
    image processor is Qwen2-VL's; images of 4 merged tokens up to ``max_pixels``."""
    from transformers import Qwen2VLImageProcessor

    config_class, model_class, processor_class, video_processor_class = classes
    config = config_class(
        vision_config=vision, text_config=text, image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"), vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = _finish(model_class(config), seed)
    patch = vision["patch_size"]
    pixels = {"shortest_edge": (2 * patch) ** 2 * 4, "longest_edge": max_pixels}  # 4.. merged tokens per image
    common = dict(size=pixels, patch_size=patch, temporal_patch_size=2, merge_size=2, **processor_args)
    processor = processor_class(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=video_processor_class(**common),
        tokenizer=tokenizer(QWEN_TOKENS),
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", QWEN_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


def qwen2_vl(path: str, seed: int = 0):
    """Qwen2-VL: 14 px patches merged 2x2, full attention in its 4 blocks (its vision config calls the
    blocks' width ``embed_dim`` and the merger's output ``hidden_size``); images of 4 to 64 merged tokens."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor

    text = _mrope_text(None, lambda d: [d // 8, 3 * d // 16, 3 * d // 16])
    vision = dict(depth=4, embed_dim=32, hidden_size=text["hidden_size"], mlp_ratio=2, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    classes = (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor)
    return _qwen(path, seed, classes, vision, text, 28 * 28 * 64)


def qwen2_5_vl(path: str, seed: int = 0, vision: dict = None, text_config=None, max_pixels: int = 28 * 28 * 64):
    """``vision`` (Qwen2.5-VL vision config entries) / ``text_config`` replace the tiny defaults;
    ``max_pixels``: the processor's largest image (default 64 merged tokens)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    vision = vision or dict(
        depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=128, fullatt_block_indexes=[1, 3],
        window_size=56, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2,
    )
    text = _mrope_text(text_config, lambda d: [d // 8, 3 * d // 16, 3 * d // 16])  # Qwen2.5-VL's 16:24:24 of a 128-dim head
    classes = (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLVideoProcessor)
    return _qwen(path, seed, classes, vision, text, max_pixels)


def exaone4_5(path: str, seed: int = 0):
    """EXAONE 4.5: Qwen2.5-VL's tower (14 px patches merged 2x2, 56 px windows in blocks 0 and 2) with grouped-query
    attention (4 query heads, 2 key/value heads); EXAONE 4 text with 1-D positions; Qwen2-VL's processors."""
    from transformers import Exaone4_5_Config, Exaone4_5_ForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    from transformers.models.exaone4_5 import Exaone4_5_Processor

    vision = dict(
        depth=4, hidden_size=32, intermediate_size=64, num_heads=4, num_key_value_heads=2, out_hidden_size=128,
        fullatt_block_indexes=[1, 3], window_size=56, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
    )
    text = dict(
        model_type="exaone4", vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=1024, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    config = Exaone4_5_Config(
        vision_config=vision, text_config=text, image_token_id=token_id("<|image_pad|>"), video_token_id=token_id("<|video_pad|>"),
    )
    torch.manual_seed(seed)
    model = _finish(Exaone4_5_ForConditionalGeneration(config), seed)
    common = dict(size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}, patch_size=14, temporal_patch_size=2, merge_size=2)
    processor = Exaone4_5_Processor(
        image_processor=Qwen2VLImageProcessor(**common), video_processor=Qwen2VLVideoProcessor(**common),
        tokenizer=tokenizer(QWEN_TOKENS), chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", QWEN_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


def paddleocr_vl(path: str, seed: int = 0):
    """PaddleOCR-VL: a SigLIP-style NaViT tower (14 px patches in raster order, 2-D rotary q/k, learned 4x4
    positions resized per image), the projector's 2x2 merge, ERNIE-4.5 text with M-RoPE; images of 4 to 64
    merged tokens. (transformers before 5.24 resizes the position grid with align_corners=True, vLLM 0.32 and
    transformers 5.24 with False: ``paddle_reference`` sets the latter on the reference model.)"""
    from transformers import PaddleOCRVLConfig, PaddleOCRVLForConditionalGeneration, PaddleOCRVLImageProcessor, PaddleOCRVLProcessor

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, image_size=56, patch_size=14,
                  spatial_merge_size=2)
    text = _mrope_text(None, lambda d: [d // 8, 3 * d // 16, 3 * d // 16])
    text.pop("model_type", None)
    text.update(head_dim=text["hidden_size"] // text["num_attention_heads"], vocab_size=VOCAB_SIZE)
    config = PaddleOCRVLConfig(
        vision_config=vision, text_config=text, image_token_id=token_id("<|image_pad|>"), video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"), vision_end_token_id=token_id("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = paddle_reference(_finish(PaddleOCRVLForConditionalGeneration(config), seed))
    processor = PaddleOCRVLProcessor(
        image_processor=PaddleOCRVLImageProcessor(size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}),
        tokenizer=tokenizer(QWEN_TOKENS), chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", QWEN_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


def paddle_reference(model):
    """The transformers PaddleOCR-VL resizing its learned position grid as vLLM 0.32 (and transformers 5.24) do:
    bilinear with align_corners=False (transformers 5.19 uses True; one instance attribute of this model)."""
    model.model.visual.vision_model.embeddings.interpolation_align_corners = False
    return model


_QWEN3_VISION = dict(
    depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=128, deepstack_visual_indexes=[1, 2],
    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
)


def qwen3_vl(path: str, seed: int = 0, vision: dict = None, text_config=None, max_pixels: int = 32 * 32 * 64):
    """``vision`` (Qwen3-VL vision config entries) / ``text_config`` replace the tiny defaults;
    ``max_pixels``: the processor's largest image (default 64 merged tokens). The image and video
    processors normalise alike (mean = std = 0.5, as the released Qwen3-VL): vLLM normalises every
    frame on the device with the image processor's constants."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    vision = vision or _QWEN3_VISION
    # Qwen3-VL's 24:20:20 of a 128-dim head, interleaved
    text = _mrope_text(text_config, lambda d: [3 * d // 16, 5 * d // 32, 5 * d // 32], mrope_interleaved=True)
    text["head_dim"] = text["hidden_size"] // text["num_attention_heads"]
    classes = (Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor)
    return _qwen(path, seed, classes, vision, text, max_pixels, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def qwen3_vl_moe(path: str, seed: int = 0):
    """Qwen3-VL-MoE: ``qwen3_vl``'s tower and processor, text blocks of 4 experts (2 per token)."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    text = _mrope_text(None, lambda d: [3 * d // 16, 5 * d // 32, 5 * d // 32], mrope_interleaved=True)
    text.update(head_dim=text["hidden_size"] // text["num_attention_heads"], num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                norm_topk_prob=True)  # vLLM reads norm_topk_prob, which this transformers config lacks
    classes = (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor)
    path, model = _qwen(path, seed, classes, _QWEN3_VISION, text, 32 * 32 * 64, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    _fused_experts_in_hub_layout(path)
    return path, model


def _fused_experts_in_hub_layout(path: str):
    """transformers 5.x saves fused expert weights as [E, out, in]; the hub checkpoints (and vLLM's
    loader) hold them as [E, in, out]: transpose them in the saved file."""
    from safetensors.torch import load_file, save_file

    weights = os.path.join(path, "model.safetensors")
    state = load_file(weights)
    fused = ("experts.gate_up_proj", "experts.down_proj")
    state = {k: (v.transpose(1, 2).contiguous() if k.endswith(fused) else v) for k, v in state.items()}
    save_file(state, weights, metadata={"format": "pt"})


def qwen3_5(path: str, seed: int = 0, moe: bool = False):
    """Qwen3.5: Qwen3-VL's tower without DeepStack, a hybrid language model (3 linear-attention
    layers, then a full-attention one; vLLM's CPU kernels for them need bfloat16 and 128-dim heads).
    ``moe``: Qwen3.5-MoE (4 experts, 2 per token, and a shared expert)."""
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForConditionalGeneration,
        Qwen3_5MoeConfig,
        Qwen3_5MoeForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    text = _mrope_text(None, lambda d: [3 * d // 16, 5 * d // 32, 5 * d // 32], mrope_interleaved=True, partial_rotary_factor=1.0)
    text.update(head_dim=text["hidden_size"] // text["num_attention_heads"], num_hidden_layers=4, layer_types=None,
                linear_key_head_dim=128, linear_value_head_dim=128, linear_num_key_heads=2, linear_num_value_heads=4)
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=64)
    vision = {k: v for k, v in _QWEN3_VISION.items() if k != "deepstack_visual_indexes"}
    classes = (Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration) if moe else (Qwen3_5Config, Qwen3_5ForConditionalGeneration)
    classes += (Qwen3VLProcessor, Qwen3VLVideoProcessor)
    return _qwen(path, seed, classes, vision, text, 32 * 32 * 64, image_mean=[0.5] * 3, image_std=[0.5] * 3)


GLM_TOKENS = {
    "image_token": "<|image|>", "video_token": "<|video|>",  # the delimiters too: vLLM matches a video by them
    "image_start_token": "<|begin_of_image|>", "image_end_token": "<|end_of_image|>",
    "video_start_token": "<|begin_of_video|>", "video_end_token": "<|end_of_video|>",
}
GLM_IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"
GLM_VIDEO = "<|begin_of_video|><|video|><|end_of_video|>"


def glm4v(path: str, seed: int = 0, moe: bool = False, ocr: bool = False):
    """GLM-4.1V: 14 px patches, 2x2 blocks merged by a norm, a 2x2 convolution and an MLP, full
    attention in its 4 blocks; images of 4 to 64 merged tokens. ``moe``: GLM-4.5V (4 routed experts,
    2 per token, a shared one; the first text block dense). The text config says ``attention_bias``
    (and, for -MoE, ``use_qk_norm``): transformers' GLM-4V keeps no such fields, vLLM reads them, as
    the released configs carry them. ``ocr``: GLM-OCR (q/k norms in the tower's attention, no learned
    position embedding; vLLM sizes its merger from the text config's ``intermediate_size``,
    transformers from ``out_hidden_size * in_channels``, equal in the release: 3 x 128 here)."""
    from transformers import (
        Glm4vConfig,
        Glm4vForConditionalGeneration,
        Glm4vImageProcessor,
        Glm4vMoeConfig,
        Glm4vMoeForConditionalGeneration,
        Glm4vProcessor,
        Glm4vVideoProcessor,
    )

    text = tiny_text_config("qwen2").to_dict()
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    text["rope_parameters"] = dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5,
                                   mrope_section=[head_dim // 16, 3 * head_dim // 32, 3 * head_dim // 32])  # 8:12:12 of 128
    text["attention_bias"] = True
    if moe:
        text.update(head_dim=head_dim, use_qk_norm=False, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                    first_k_dense_replace=1, n_shared_experts=1)
    vision = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=text["hidden_size"],
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, image_size=56)
    config_class, model_class = (Glm4vMoeConfig, Glm4vMoeForConditionalGeneration) if moe else (Glm4vConfig, Glm4vForConditionalGeneration)
    if ocr:
        from transformers import GlmOcrConfig, GlmOcrForConditionalGeneration

        text.update(intermediate_size=3 * text["hidden_size"], attention_bias=False)  # GLM-OCR's text q/k/v have no bias
        config_class, model_class = GlmOcrConfig, GlmOcrForConditionalGeneration
    config = config_class(
        vision_config=vision, text_config=text, image_token_id=token_id("<|image|>"), video_token_id=token_id("<|video|>"),
        image_start_token_id=token_id("<|begin_of_image|>"), image_end_token_id=token_id("<|end_of_image|>"),
        video_start_token_id=token_id("<|begin_of_video|>"), video_end_token_id=token_id("<|end_of_video|>"),
    )
    torch.manual_seed(seed)
    model = _finish(model_class(config), seed)
    pixels = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}
    common = dict(size=pixels, patch_size=14, temporal_patch_size=2, merge_size=2)
    processor = Glm4vProcessor(
        image_processor=Glm4vImageProcessor(**common), video_processor=Glm4vVideoProcessor(**common),
        tokenizer=tokenizer(GLM_TOKENS), chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", GLM_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


def _pixtral_vision():
    """The tests' Pixtral tower: 14 px patches, 3 blocks of width 32, images up to 112 px."""
    from transformers import PixtralVisionConfig

    return PixtralVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=112, patch_size=14,
        hidden_act="silu", head_dim=8,
    )


MISTRAL3_TOKENS = {"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}
MISTRAL3_IMAGE = "[IMG]"


def mistral3(path: str, seed: int = 0):
    """Mistral 3 (Mistral-Small-3.1): a Pixtral tower (14 px patches, 2-D rotary positions, 3 blocks),
    the projector's RMS norm, 2x2 patch merger and MLP, Mistral text; images resized to fit 112 px, in
    28 px steps (up to 4 x 4 merged tokens), written row by row: [IMG] per merged token, [IMG_BREAK]
    after each row but the last, [IMG_END] after it. The text config's ``rms_norm_eps`` is 1e-5:
    transformers' projector norm takes it, vLLM's is fixed at 1e-5. Untied embeddings, said at the top
    level (transformers ties by Mistral3Config's ``tie_word_embeddings``, default True, not the text
    config's). A prompt holds one [IMG] per image; both processors expand it to the rows."""
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessor,
        PixtralProcessor,
    )

    llama = tiny_text_config("llama")
    text = MistralConfig(
        vocab_size=VOCAB_SIZE, hidden_size=llama.hidden_size, intermediate_size=llama.intermediate_size,
        num_hidden_layers=llama.num_hidden_layers, num_attention_heads=llama.num_attention_heads,
        num_key_value_heads=llama.num_key_value_heads, head_dim=llama.hidden_size // llama.num_attention_heads,
        max_position_embeddings=1024, rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    vision = _pixtral_vision()
    config = Mistral3Config(
        vision_config=vision, text_config=text, image_token_index=token_id("[IMG]"), spatial_merge_size=2,
        projector_hidden_act="gelu", multimodal_projector_bias=False, vision_feature_layer=-1, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = _finish(Mistral3ForConditionalGeneration(config), seed)
    processor = PixtralProcessor(
        image_processor=PixtralImageProcessor(size={"longest_edge": 112}, patch_size={"height": 14, "width": 14}),
        tokenizer=tokenizer(MISTRAL3_TOKENS), patch_size=14, spatial_merge_size=2,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", MISTRAL3_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


def lighton_ocr(path: str, seed: int = 0):
    """LightOnOCR: ``mistral3``'s Pixtral tower and projector (no biases) with Qwen3 text; an image is its merged
    tokens alone (no [IMG_BREAK] / [IMG_END]). Saved as the released checkpoints are: transformers'
    ``LightOnOcrForConditionalGeneration`` weights under a Mistral 3 config (``model_type`` "mistral3", the
    architecture vLLM registers, ``LightOnOCRForConditionalGeneration``, and the Mistral 3 fields vLLM reads);
    the returned in-memory model is transformers' LightOnOCR with the same weights."""
    from transformers import (
        LightOnOcrConfig,
        LightOnOcrForConditionalGeneration,
        LightOnOcrProcessor,
        PixtralImageProcessor,
        Qwen3Config,
    )

    qwen = tiny_text_config("qwen2")
    text = Qwen3Config(
        vocab_size=VOCAB_SIZE, hidden_size=qwen.hidden_size, intermediate_size=qwen.intermediate_size,
        num_hidden_layers=qwen.num_hidden_layers, num_attention_heads=qwen.num_attention_heads,
        num_key_value_heads=qwen.num_key_value_heads, head_dim=qwen.hidden_size // qwen.num_attention_heads,
        max_position_embeddings=1024, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    vision = _pixtral_vision()
    image = token_id("[IMG]")
    config = LightOnOcrConfig(
        vision_config=vision, text_config=text, image_token_id=image, spatial_merge_size=2, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = _finish(LightOnOcrForConditionalGeneration(config), seed)
    processor = LightOnOcrProcessor(  # images resized to whole merged tokens (28 px), as vLLM counts them
        image_processor=PixtralImageProcessor(size={"longest_edge": 112}, patch_size={"height": 28, "width": 28}),
        tokenizer=tokenizer(MISTRAL3_TOKENS), patch_size=14, spatial_merge_size=2,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", MISTRAL3_IMAGE),
    )
    _save(model, processor, path, hub_tower_prefix=False)
    with open(os.path.join(path, "config.json")) as f:
        saved = json.load(f)
    saved.update(
        architectures=["LightOnOCRForConditionalGeneration"], model_type="mistral3", image_token_index=image,
        projector_hidden_act="gelu", multimodal_projector_bias=False, vision_feature_layer=-1,
    )
    saved["text_config"]["model_type"] = "qwen3"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(saved, f, indent=1)
    return path, model


def llava_pixtral(path: str, seed: int = 0):
    """Pixtral-12B's LLaVA form: ``mistral3``'s Pixtral tower and text without the merger (every 14 px patch a
    token), LLaVA's projector on the last layer (strategy "full"); images resized to fit 70 px (up to 5 x 5
    tokens), written row by row as Mistral 3's."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, PixtralImageProcessor, PixtralProcessor

    donor = mistral3(os.path.join(path, "donor"), seed)[1].config
    donor.vision_config.image_size = 70  # vLLM counts an image's rows from the tower's size, the processor resizes
    config = LlavaConfig(
        vision_config=donor.vision_config, text_config=donor.text_config, image_token_index=token_id("[IMG]"),
        vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = _finish(LlavaForConditionalGeneration(config), seed)
    processor = PixtralProcessor(
        image_processor=PixtralImageProcessor(size={"longest_edge": 70}, patch_size={"height": 14, "width": 14}),
        tokenizer=tokenizer(MISTRAL3_TOKENS), patch_size=14, spatial_merge_size=1,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", MISTRAL3_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


LLAMA4_TOKENS = {
    "image_token": "<|image|>", "boi_token": "<|image_start|>", "eoi_token": "<|image_end|>", "patch_token": "<|patch|>",
    "tile_x_separator_token": "<|tile_x_separator|>", "tile_y_separator_token": "<|tile_y_separator|>",
}
LLAMA4_IMAGE = "<|image|>"


def llama4(path: str, seed: int = 0):
    """Llama 4 (Scout / Maverick shape): a tower on 112 px tiles (8 x 8 patches of 14 px, a [CLS] appended,
    2-D rotary positions), pixel shuffle 0.5 and an MLP (its input width, ``intermediate_size``, is 4 x the
    hidden size) -> 4 x 4 = 16 <|patch|> tokens per tile; the image processor splits an image into up to
    4 tiles (``max_patches``) plus a global tile when there are several. A prompt holds one <|image|> per
    image; both processors expand it to <|image_start|>, the tiles row by row (<|tile_x_separator|> between
    tiles of a row, <|tile_y_separator|> after each row), <|image|>, the global tile's <|patch|> tokens,
    <|image_end|>. Pixel values come in bfloat16 (normalised so, as the original): cast them for float32.
    Text: layer 0 dense with RoPE, QK norm and chunked attention (chunks of 128: vLLM's CPU block size
    must divide it), layer 1 NoPE (full attention) with 2 experts (top 1) and the shared expert. Attention
    temperature tuning is off: vLLM turns it on only past 32K tokens of context or by the engine's
    ``override_generation_config`` (transformers 5.x drops the key from generation_config.json)."""
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4ImageProcessor,
        Llama4Processor,
        Llama4TextConfig,
        Llama4VisionConfig,
    )

    llama = tiny_text_config("llama")
    text = Llama4TextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=llama.hidden_size, intermediate_size=128, intermediate_size_mlp=llama.intermediate_size,
        num_hidden_layers=2, num_attention_heads=llama.num_attention_heads, num_key_value_heads=llama.num_key_value_heads,
        head_dim=llama.hidden_size // llama.num_attention_heads, max_position_embeddings=1024, num_local_experts=2,
        num_experts_per_tok=1, interleave_moe_layer_step=2, no_rope_layers=[1, 0], attention_chunk_size=128,
        use_qk_norm=True, attn_temperature_tuning=False, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    vision = Llama4VisionConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=112, patch_size=14,
        pixel_shuffle_ratio=0.5, projector_input_dim=64, projector_output_dim=64, vision_output_dim=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, vision_feature_layer=-1,  # as the hub configs
    )
    config = Llama4Config(
        vision_config=vision, text_config=text, image_token_index=token_id("<|patch|>"),
        boi_token_index=token_id("<|image_start|>"), eoi_token_index=token_id("<|image_end|>"), tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = _finish(Llama4ForConditionalGeneration(config), seed)
    processor = Llama4Processor(
        image_processor=Llama4ImageProcessor(size={"height": 112, "width": 112}, max_patches=4),
        tokenizer=tokenizer(LLAMA4_TOKENS), patch_size=14, pixel_shuffle_ratio=0.5,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", LLAMA4_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


# The original InternVL checkpoints ship their config classes as remote code (vLLM registers none for
# "internvl_chat"): these two files, written for the tiny checkpoint, hold just what loading needs.
_INTERN_VIT_CONFIG_PY = '''from transformers import PretrainedConfig


class InternVisionConfig(PretrainedConfig):
    model_type = "intern_vit_6b"

    def __init__(self, num_channels=3, patch_size=14, image_size=224, qkv_bias=False, hidden_size=3200,
                 num_attention_heads=25, intermediate_size=12800, qk_normalization=True, num_hidden_layers=48,
                 use_flash_attn=False, hidden_act="gelu", norm_type="rms_norm", layer_norm_eps=1e-6, dropout=0.0,
                 drop_path_rate=0.0, attention_dropout=0.0, initializer_range=0.02, initializer_factor=0.1, **kwargs):
        super().__init__(**kwargs)
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
'''

_INTERNVL_CHAT_CONFIG_PY = '''from transformers import CONFIG_MAPPING, PretrainedConfig

from .configuration_intern_vit import InternVisionConfig

_LLM_MODEL_TYPES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}


class InternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"
    is_composition = True

    def __init__(self, vision_config=None, llm_config=None, use_backbone_lora=0, use_llm_lora=0, select_layer=-1,
                 force_image_size=None, downsample_ratio=0.5, template=None, dynamic_image_size=False,
                 use_thumbnail=False, ps_version="v1", min_dynamic_patch=1, max_dynamic_patch=6, pad2square=False,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(vision_config, PretrainedConfig):
            self.vision_config = vision_config
        else:
            self.vision_config = InternVisionConfig(**(vision_config or {}))
        if isinstance(llm_config, PretrainedConfig):
            self.llm_config = llm_config
        else:
            llm_config = dict(llm_config or {"architectures": ["Qwen2ForCausalLM"]})
            architecture = (llm_config.get("architectures") or ["Qwen2ForCausalLM"])[0]
            model_type = llm_config.pop("model_type", None) or _LLM_MODEL_TYPES[architecture]
            self.llm_config = CONFIG_MAPPING[model_type](**llm_config)
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.pad2square = pad2square
'''


def _internvl_original_state(model) -> dict:
    """The HF-native InternVL weights (``model.state_dict()``) renamed to the original InternVL
    layout: ``vision_model.*`` (InternViT: q, k, v fused into ``attn.qkv``), ``mlp1.{0,1,3}``,
    ``language_model.{model,lm_head}.*`` (the lm_head written out even when tied)."""
    state = model.state_dict()
    out = {}
    vision = {
        "embeddings.cls_token": "embeddings.class_embedding",
        "embeddings.patch_embeddings.projection.weight": "embeddings.patch_embedding.weight",
        "embeddings.patch_embeddings.projection.bias": "embeddings.patch_embedding.bias",
        "embeddings.position_embeddings": "embeddings.position_embedding",
    }
    layer = {
        "attention.q_norm.weight": "attn.q_norm.weight", "attention.k_norm.weight": "attn.k_norm.weight",
        "attention.projection_layer.weight": "attn.proj.weight", "attention.projection_layer.bias": "attn.proj.bias",
        "lambda_1": "ls1", "lambda_2": "ls2", "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
        "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
        "layernorm_before.weight": "norm1.weight", "layernorm_before.bias": "norm1.bias",
        "layernorm_after.weight": "norm2.weight", "layernorm_after.bias": "norm2.bias",
    }
    projector = {"layer_norm": "0", "linear_1": "1", "linear_2": "3"}
    for name, value in state.items():
        value = value.detach().clone().contiguous()
        if name.startswith("model.vision_tower."):
            rest = name[len("model.vision_tower."):]
            if rest in vision:
                out["vision_model." + vision[rest]] = value
                continue
            _, _, index, sub = rest.split(".", 3)  # encoder.layer.N.<sub>
            prefix = f"vision_model.encoder.layers.{index}."
            if sub.startswith(("attention.q_proj.", "attention.k_proj.", "attention.v_proj.")):
                if sub.startswith("attention.q_proj."):  # fused once, at q
                    kind = sub.rsplit(".", 1)[1]
                    base = f"model.vision_tower.encoder.layer.{index}.attention."
                    out[prefix + "attn.qkv." + kind] = torch.cat(
                        [state[base + p + "_proj." + kind] for p in "qkv"]
                    ).contiguous()
                continue
            out[prefix + layer[sub]] = value
        elif name.startswith("model.multi_modal_projector."):
            module, kind = name[len("model.multi_modal_projector."):].split(".")
            out[f"mlp1.{projector[module]}.{kind}"] = value
        elif name.startswith("model.language_model."):
            out["language_model.model." + name[len("model.language_model."):]] = value
        elif name == "lm_head.weight":
            out["language_model.lm_head.weight"] = value
        else:
            raise KeyError(name)
    return out


def internvl_chat(path: str, seed: int = 0):
    """InternVL in the original (OpenGVLab) format, architecture ``InternVLChatModel``, model type
    ``internvl_chat`` (vLLM serves it natively, with trust_remote_code=True for the config classes
    written here as configuration_*.py): ``internvl``'s weights (seeded alike) renamed to the original
    layout, an InternViT config (84 px tiles, 14 px patches, QK norm, layer norms, eps 1e-6 as
    transformers' fixed QK-norm eps), a Qwen2 ``llm_config``, pixel shuffle 0.5 (v2) -> 9 tokens per
    tile, up to 4 tiles plus a thumbnail. vLLM's own processor (the checkpoint ships none) expands each
    "<image>" of a prompt to <img>, 9 <IMG_CONTEXT> per tile (tiles row by row, thumbnail last), </img>.
    Returns (path, model): ``model`` is the HF-native InternVLForConditionalGeneration with the same weights."""
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as native:
        _, model = internvl(native, seed)
    vision, text = model.config.vision_config, model.config.text_config
    assert vision.layer_norm_eps == 1e-6 and vision.use_mean_pooling and model.config.vision_feature_layer == -1
    os.makedirs(path, exist_ok=True)
    llm = text.to_dict()
    llm.update(architectures=["Qwen2ForCausalLM"], tie_word_embeddings=False)  # the lm_head is written out
    llm.pop("transformers_version", None)
    config = {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"},
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size, "num_attention_heads": vision.num_attention_heads,
            "num_hidden_layers": vision.num_hidden_layers, "image_size": vision.image_size[0],
            "patch_size": vision.patch_size[0], "num_channels": 3, "qkv_bias": vision.attention_bias,
            "qk_normalization": vision.use_qk_norm, "norm_type": vision.norm_type, "layer_norm_eps": vision.layer_norm_eps,
            "hidden_act": vision.hidden_act, "drop_path_rate": 0.0, "dropout": 0.0, "attention_dropout": 0.0,
            "use_flash_attn": False, "initializer_range": 0.02, "initializer_factor": vision.layer_scale_init_value,
        },
        "llm_config": llm,
        "downsample_ratio": model.config.downsample_ratio, "select_layer": -1, "ps_version": "v2",
        "template": "internvl2_5", "force_image_size": vision.image_size[0], "dynamic_image_size": True,
        "min_dynamic_patch": 1, "max_dynamic_patch": 4, "use_thumbnail": True, "pad2square": False,
        "use_backbone_lora": 0, "use_llm_lora": 0, "tie_word_embeddings": False, "torch_dtype": "float32",
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    for name, source in (("configuration_intern_vit.py", _INTERN_VIT_CONFIG_PY),
                         ("configuration_internvl_chat.py", _INTERNVL_CHAT_CONFIG_PY)):
        with open(os.path.join(path, name), "w") as f:
            f.write(source)
    save_file(_internvl_original_state(model), os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    tok = tokenizer()
    tok.chat_template = CHAT_TEMPLATE.replace("{{ image_token }}", IMAGE_TOKEN)
    tok.save_pretrained(path)
    return path, model


def internvl_chat_processor(path: str):
    """The processor of an ``internvl_chat`` checkpoint for the HF-native reference model: vLLM's own
    InternVL processor (the checkpoint ships none; unpruned: T placeholders per tile) called like a
    transformers processor, its tiles renamed ``pixel_values`` and the per-image tile counts dropped."""
    from harness import ReferenceProcessor
    from transformers import AutoTokenizer
    from vllm.transformers_utils.processors.internvl import InternVLImageProcessor, InternVLProcessor

    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    vision = config["vision_config"]
    image_processor = InternVLImageProcessor(
        image_size=config["force_image_size"], min_dynamic_patch=config["min_dynamic_patch"],
        max_dynamic_patch=config["max_dynamic_patch"], dynamic_image_size=config["dynamic_image_size"],
        use_thumbnail=config["use_thumbnail"],
    )
    tokens = int((config["force_image_size"] // vision["patch_size"]) ** 2 * config["downsample_ratio"] ** 2)
    processor = InternVLProcessor(tokenizer=AutoTokenizer.from_pretrained(path), image_processor=image_processor,
                                  image_seq_length=tokens)
    return ReferenceProcessor(processor, drops=("image_num_patches",), renames={"pixel_values_flat": "pixel_values"})


def paligemma(path: str, seed: int = 0):
    """PaliGemma (1): SigLIP 84 px / 14 px patches (6 x 6 = 36 tokens per image, no pooling head), a linear
    projector, Gemma text (head_dim 64: vLLM's CPU attention minimum is 32); tied embeddings; one image per
    prompt (vLLM's limit). A prompt holds no image placeholder: both processors put the image first and write
    ``<image>`` x 36, ``<s>``, the text, then "\\n" (vLLM appends it unless the prompt ends with one; a prompt
    without an image gets neither the BOS nor the newline from vLLM).
    ``use_bidirectional_attention=False``: PaliGemmaConfig turns an unset value into True, and transformers'
    Gemma attention then runs SDPA with ``is_causal=False`` whenever the causal mask is skipped (no padding,
    no token_type_ids): every prompt token sees the whole prompt, even text-only. vLLM's Gemma ignores the
    field and is causal. With False here, transformers (SDPA or eager) matches stock vLLM to ~1e-4 per
    prompt token, provided the reference drops the processor's ``token_type_ids`` (all 0 for a prompt
    without suffix: transformers then attends bidirectionally over the whole prefix, vLLM's CPU attention
    does not) and ``labels``."""
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers import SiglipImageProcessor, SiglipVisionConfig

    text = GemmaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=64, max_position_embeddings=1024, use_bidirectional_attention=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=84, patch_size=14,
        vision_use_head=False,
    )
    config = PaliGemmaConfig(
        vision_config=vision, text_config=text, image_token_index=token_id(IMAGE_TOKEN), vocab_size=VOCAB_SIZE,
        projection_dim=text.hidden_size, hidden_size=text.hidden_size,
    )
    torch.manual_seed(seed)
    model = _finish(PaliGemmaForConditionalGeneration(config), seed)
    image_processor = SiglipImageProcessor(size={"height": 84, "width": 84})
    image_processor.image_seq_length = (84 // 14) ** 2  # PaliGemmaProcessor reads it (saved with the processor)
    processor = PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer({"image_token": IMAGE_TOKEN}),
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", ""),
    )
    return _save(model, processor, path, hub_tower_prefix=True)


GEMMA4_TOKENS = {
    "image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
    # Gemma4Processor raises on any prompt when the tokenizer lacks boa/eoa tokens, audio or not
    "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>",
}
GEMMA4_IMAGE = "<|image|>"
GEMMA4_VIDEO = "<|video|>"


def gemma4(path: str, seed: int = 0, bidirectional: bool = False):
    """Gemma 4: a vision tower on 8 px patches (flattened, (x, y) positions, 2-D RoPE, padding last), average-pooled
    3x3 by patch position, standardized; Gemma 4 text with a sliding-window (8) and a full-attention layer (head_dim 64
    / global_head_dim 128: vLLM's CPU attention minimum is 32), per-layer inputs (PLE, 8 per layer), an untied lm_head
    (tied, this random model predicts each prompt token as the next one, so greedy output ignores the images).
    Images are always resized (aspect kept) to the budget of max_soft_tokens = 70 (the smallest value both processors
    accept) x 9 patches: a square image becomes 192 x 192 px, 24 x 24 patches, 8 x 8 = 64 soft tokens; other aspect
    ratios give up to 70 (vLLM computes the count from the vision config's ``default_output_length``, set to 70 as the
    image processor's ``max_soft_tokens``). Every image is padded to 630 patches by the processor.
    The prompt holds ``<|image|>`` once per image; both processors expand it to ``<|image>``, ``<|image|>`` x N,
    ``<image|>``. No audio tower (the audio tokens and the default audio feature extractor are there only because
    Gemma4Processor requires them).
    ``bidirectional``: ``use_bidirectional_attention="vision"`` (as some released configs): transformers, given the
    processor's ``mm_token_type_ids``, lets the soft tokens of an image attend to each other in the sliding layer;
    vLLM turns on its mm-prefix mode, which its CPU attention ignores (causal): stock vLLM then matches transformers
    only when the reference drops ``mm_token_type_ids`` (with them, prompt log-probs differ by nats). Default None:
    causal everywhere in both, stock vLLM matches transformers to ~4e-5 per prompt token with or without them."""
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4Config,
        Gemma4ForConditionalGeneration,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4TextConfig,
        Gemma4VideoProcessor,
        Gemma4VisionConfig,
    )

    text = Gemma4TextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=64, global_head_dim=128, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], vocab_size_per_layer_input=VOCAB_SIZE,
        hidden_size_per_layer_input=8, use_bidirectional_attention="vision" if bidirectional else None,
        max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    vision = Gemma4VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
        head_dim=8, pooling_kernel_size=3, patch_size=8, position_embedding_size=256, standardize=True,
        default_output_length=70,
    )
    config = Gemma4Config(
        text_config=text, vision_config=vision, audio_config=None, image_token_id=token_id("<|image|>"),
        boi_token_id=token_id("<|image>"), eoi_token_id=token_id("<image|>"), video_token_id=token_id("<|video|>"),
        audio_token_id=token_id("<|audio|>"), boa_token_id=token_id("<|audio>"), eoa_token_index=token_id("<audio|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = _finish(Gemma4ForConditionalGeneration(config), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # buffers _finish leaves at zeros / ones
        tower = model.model.vision_tower
        tower.std_bias.copy_(torch.randn(tower.std_bias.shape, generator=gen) * 0.5)
        tower.std_scale.copy_(1.0 + torch.rand(tower.std_scale.shape, generator=gen))
    patches = dict(patch_size=8, max_soft_tokens=70, pooling_kernel_size=3)
    processor = Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(), image_processor=Gemma4ImageProcessor(**patches),
        video_processor=Gemma4VideoProcessor(**patches), tokenizer=tokenizer(GEMMA4_TOKENS), image_seq_length=70,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", GEMMA4_IMAGE),
    )
    return _save(model, processor, path, hub_tower_prefix=False)


# Qwen2.5-Omni's named tokens, mapped onto the test vocabulary (its audio tokens are Gemma 4's three)
QWEN_OMNI_TOKENS = {
    "image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "audio_token": "<|audio|>",
    "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio>", "audio_eos_token": "<audio|>",
}
QWEN_OMNI_AUDIO = "<|audio><|audio|><audio|>"
OMNI_MEL_BINS = 16


def qwen2_5_omni(path: str, seed: int = 0):
    """Qwen2.5-Omni (``Qwen2_5OmniForConditionalGeneration``, no talker: ``enable_audio_output`` off): its thinker
    holds Qwen2.5-VL's tower of ``qwen2_5_vl`` (56 px windows in blocks 0 and 2), a 2-layer audio tower on 16 mel
    bins and Qwen2 M-RoPE text; Whisper features of clips up to 2 s. Returns (path, the transformers thinker)."""
    from transformers import (
        Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniProcessor, Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor, WhisperFeatureExtractor,
    )

    text = _mrope_text(None, lambda d: [d // 8, 3 * d // 16, 3 * d // 16])
    vision = dict(
        depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=text["hidden_size"],
        fullatt_block_indexes=[1, 3], window_size=56, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
    )
    audio = dict(
        num_mel_bins=OMNI_MEL_BINS, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
        output_dim=text["hidden_size"], n_window=4, max_source_positions=64,
    )
    thinker = dict(
        vision_config=vision, audio_config=audio, text_config=text, image_token_index=token_id("<|image_pad|>"),
        video_token_index=token_id("<|video_pad|>"), audio_token_index=token_id("<|audio|>"),
        audio_start_token_id=token_id("<|audio>"), audio_end_token_id=token_id("<audio|>"),
        vision_start_token_id=token_id("<|vision_start|>"), vision_end_token_id=token_id("<|vision_end|>"),
        position_id_per_seconds=25, seconds_per_chunk=2,
    )
    config = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    torch.manual_seed(seed)
    model = _finish(Qwen2_5OmniForConditionalGeneration(config), seed)
    common = dict(size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}, patch_size=14, temporal_patch_size=2, merge_size=2)
    processor = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common),
        feature_extractor=WhisperFeatureExtractor(feature_size=OMNI_MEL_BINS, chunk_length=2),
        tokenizer=tokenizer(QWEN_OMNI_TOKENS),
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", QWEN_IMAGE),
    )
    _save(model, processor, path, hub_tower_prefix=False)
    return path, model.thinker


def qwen3_omni(path: str, seed: int = 0):
    """Qwen3-Omni (``Qwen3OmniMoeForConditionalGeneration``, no talker: ``enable_audio_output`` off): its thinker
    holds ``qwen3_vl``'s tower (16 px patches, DeepStack features of blocks 1 and 2), a 2-layer audio tower on 16 mel
    bins and 2 mixture-of-experts text layers (4 experts, 2 per token, interleaved M-RoPE); Whisper features of clips
    up to 2 s. Returns (path, the transformers thinker)."""
    from transformers import (
        Qwen2VLImageProcessor, Qwen2VLVideoProcessor, Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration,
        Qwen3OmniMoeProcessor, WhisperFeatureExtractor,
    )

    text = _mrope_text(None, lambda d: [3 * d // 16, 5 * d // 32, 5 * d // 32], mrope_interleaved=True)
    text.update(head_dim=text["hidden_size"] // text["num_attention_heads"], num_experts=4, num_experts_per_tok=2,
                moe_intermediate_size=64, decoder_sparse_step=1, norm_topk_prob=True)
    # vLLM's tower also reads image_size (its learned position grid: 8 x 8 patches) and apply_vit_abs_pos_embed
    vision = dict(_QWEN3_VISION, out_hidden_size=text["hidden_size"], image_size=128, apply_vit_abs_pos_embed=True)
    audio = dict(
        num_mel_bins=OMNI_MEL_BINS, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
        output_dim=text["hidden_size"], n_window=50, n_window_infer=800, conv_chunksize=16, downsample_hidden_size=8,
        max_source_positions=64,
    )
    thinker = dict(
        vision_config=vision, audio_config=audio, text_config=text, image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"), audio_token_id=token_id("<|audio|>"),
        audio_start_token_id=token_id("<|audio>"), audio_end_token_id=token_id("<audio|>"),
        vision_start_token_id=token_id("<|vision_start|>"), vision_end_token_id=token_id("<|vision_end|>"),
        position_id_per_seconds=25,
    )
    config = Qwen3OmniMoeConfig(thinker_config=thinker, enable_audio_output=False)
    torch.manual_seed(seed)
    model = _finish(Qwen3OmniMoeForConditionalGeneration(config), seed)
    pixels = {"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 64}
    common = dict(size=pixels, patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common),
        feature_extractor=WhisperFeatureExtractor(feature_size=OMNI_MEL_BINS, chunk_length=2),
        tokenizer=tokenizer(QWEN_OMNI_TOKENS),
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", QWEN_IMAGE),
    )
    _save(model, processor, path, hub_tower_prefix=False)
    return path, model.thinker
