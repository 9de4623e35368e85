"""LLaVA-1.5-shaped VLMs built from configs (the demo's embedded models and the benchmarks'
CLIP-L-shaped models).

Geometry follows LLaVA-1.5 where it matters for pruning: 336 px images with 14 px patches (a
24 x 24 grid, 576 visual tokens plus [CLS]), features from the second-to-last layer, the
"default" strategy (the [CLS] token dropped), a Llama language model, and a ``LlavaProcessor``
with a byte-level tokenizer.

- ``build_llava(spec)``: a CLIP tower with random weights. ``TINY`` (the default ``LlavaSpec``)
  has small widths so the whole demo runs on two CPU cores in seconds.
- ``build_llava_dinov2(spec)``: the real, pretrained DINOv2-small encoder
  (``dinov2_weights``) as the vision tower; the projector and the language model are random.

The random weights are seeded: every build is bit-identical, and nothing is downloaded.
"""
from __future__ import annotations

import dataclasses

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from .byte_tokenizer import byte_tokenizer


@dataclasses.dataclass(frozen=True)
class LlavaSpec:
    """Sizes of a model (defaults: the demo's embedded tiny model)."""

    image_size: int = 336
    patch_size: int = 14
    vision_hidden: int = 64
    vision_layers: int = 12
    vision_heads: int = 4
    text_hidden: int = 512
    text_layers: int = 4
    text_heads: int = 8
    text_intermediate: int = 1376
    # CLIP's init scales attention weights by this factor; > 1 makes the random tower's
    # attention peaked instead of near-uniform, so its scores follow the image content.
    vision_init_factor: float = 4.0
    # Std of the language model's random weights: 0.1 (not Llama's 0.02) so greedy decoding
    # wanders instead of repeating one token, and pruned prompts visibly change the text.
    text_init_std: float = 0.1

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2


TINY = LlavaSpec()


def unprintable_token_ids(tokenizer) -> list:
    """Ids the demo never generates: every byte outside printable ASCII and the specials but
    </s>, so the random model's text prints as plain characters."""
    eos = tokenizer.eos_token_id
    ids = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        printable = len(text) == 1 and 0x20 <= ord(text) < 0x7F and i not in tokenizer.all_special_ids
        if not printable and i != eos:
            ids.append(i)
    return ids


def _text_config(spec: LlavaSpec, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads,
        max_position_embeddings=2048,
        initializer_range=spec.text_init_std,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _assemble(vision_config, spec: LlavaSpec, seed: int, image_mean=None, image_std=None):
    """``(model, processor)`` of a LLaVA with this vision config (random weights, seeded)."""
    tokenizer = byte_tokenizer()
    grid = spec.image_size // spec.patch_size
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=_text_config(spec, tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=grid * grid,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    config.pad_token_id = tokenizer.pad_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.suppress_tokens = unprintable_token_ids(tokenizer)

    normalisation = {} if image_mean is None else {"image_mean": list(image_mean), "image_std": list(image_std)}
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        **normalisation,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, processor


def build_llava(spec: LlavaSpec = LlavaSpec(), seed: int = 0):
    """Build ``(model, processor)``: a ``LlavaForConditionalGeneration`` with a random CLIP tower,
    in eval mode (fp32, CPU; its generation config suppresses unprintable bytes) and a
    ``LlavaProcessor`` (CLIP image processor + byte-level tokenizer) that expands one ``<image>``
    into (image_size / patch_size)**2 placeholders."""
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=4 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
        initializer_factor=spec.vision_init_factor,
    )
    return _assemble(vision, spec, seed)


def build_llava_dinov2(spec: LlavaSpec = LlavaSpec(), seed: int = 0):
    """Build ``(model, processor)`` as ``build_llava``, with the pretrained DINOv2-small encoder as
    the vision tower (its 12 layers, 6 heads, hidden 384; ``spec``'s vision sizes are not used;
    ImageNet normalisation). Raises ``dinov2_weights.WeightsUnavailable`` when the weights'
    packages are missing."""
    from .dinov2_weights import IMAGE_MEAN, IMAGE_STD, dinov2_small_config, load_into, onnx_path, read_state_dict

    if spec.patch_size != 14:
        raise ValueError(f"DINOv2-small has 14 px patches, got patch_size={spec.patch_size}")
    state = read_state_dict(onnx_path())  # first: a missing package fails before any model is built
    # the position embeddings stay at their trained 37 x 37 grid (518 px); the model interpolates them
    model, processor = _assemble(dinov2_small_config(), spec, seed, IMAGE_MEAN, IMAGE_STD)
    load_into(model.model.vision_tower, state)
    return model, processor
