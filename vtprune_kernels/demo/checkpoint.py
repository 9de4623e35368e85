"""Load a real checkpoint from a local folder (``vtprune demo --model PATH``), never from a hub.

Supported: transformers-native ("-hf") LLaVA-1.5 (``llava``), LLaVA-NeXT (``llava_next``),
InternVL (``internvl``), Gemma 3 (``gemma3``), Qwen2-VL (``qwen2_vl``), Qwen2.5-VL (``qwen2_5_vl``), Qwen3-VL (``qwen3_vl``,
``qwen3_vl_moe``) and Qwen3.5 (``qwen3_5``, ``qwen3_5_moe``) folders, loaded
with ``AutoProcessor`` / ``AutoModelForImageTextToText`` and ``local_files_only=True``. Qwen-VL
processors need torchvision (transformers builds their video processor with it).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Optional

import torch

from .errors import DemoInputError

DYNAMIC_RESOLUTION = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
SUPPORTED_MODEL_TYPES = ("llava", "llava_next", "internvl", "gemma3") + DYNAMIC_RESOLUTION  # visual tokens follow the image's size


@dataclasses.dataclass
class LoadedModel:
    """A model ready for the demo: ``model`` (eval), ``processor``, the visual tokens of one tile
    (None for dynamic-resolution models: they follow the image, see ``visual_tokens_per_tile``)."""

    name: str
    model: object
    processor: object
    tokens_per_tile: Optional[int]


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def tokens_per_tile(config) -> Optional[int]:
    """Visual tokens one tile gives the language model (after InternVL's pixel shuffle, Gemma 3's
    pooling); None for dynamic-resolution models (Qwen-VL), whose count depends on the image."""
    if config.model_type in DYNAMIC_RESOLUTION:
        return None
    if config.model_type == "gemma3":
        return int(config.mm_tokens_per_image)
    vision = config.vision_config
    (ih, iw), (ph, pw) = _pair(vision.image_size), _pair(vision.patch_size)
    tokens = (ih // ph) * (iw // pw)
    if config.model_type == "internvl":
        tokens = int(round(tokens * config.downsample_ratio**2))
    return tokens


def load_checkpoint(path: str, device="cpu", dtype: Optional[torch.dtype] = None) -> LoadedModel:
    """Model and processor from the local folder ``path``. dtype defaults to bfloat16 on CUDA,
    float32 on the CPU. Raises DemoInputError for a missing folder or an unsupported model type."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise DemoInputError(f"--model {path!r} is not a local model folder (it needs a config.json); nothing is downloaded")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise DemoInputError(
            f"--model {path!r} is a {config.model_type!r} checkpoint; supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
            "(transformers-native -hf folders)"
        )
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    except (AttributeError, ImportError) as err:
        if config.model_type in DYNAMIC_RESOLUTION and importlib.util.find_spec("torchvision") is None:
            raise DemoInputError(
                f"--model {path!r}: transformers builds the {config.model_type} processor with torchvision, "
                "which is not installed (pip install torchvision matching your torch)"
            ) from err
        raise
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=dtype)
    model = model.to(device).eval()
    return LoadedModel(
        name=os.path.basename(os.path.normpath(path)),
        model=model,
        processor=processor,
        tokens_per_tile=tokens_per_tile(model.config),
    )


def visual_tokens_per_tile(loaded: LoadedModel, inputs) -> int:
    """Visual tokens of one tile of the demo input: the model's constant, or for dynamic-resolution
    models the image's own count (its placeholders in the prompt)."""
    if loaded.tokens_per_tile is not None:
        return loaded.tokens_per_tile
    return int((inputs["input_ids"] == loaded.model.config.image_token_id).sum())


def build_inputs(processor, image, prompt: str, device="cpu"):
    """Processor inputs for one image and one user turn. Uses the processor's chat template when it
    has one (real checkpoints), else LLaVA-1.5's plain "USER: <image>\\n... ASSISTANT:" format."""
    template = getattr(processor, "chat_template", None)
    if template:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        image_token = getattr(processor, "image_token", "<image>")
        text = f"USER: {image_token}\n{prompt} ASSISTANT:"
    inputs = processor(images=image, text=text, return_tensors="pt")
    return inputs.to(torch.device(device))
