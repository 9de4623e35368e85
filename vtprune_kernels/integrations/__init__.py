"""Model integrations for transformers 5.x (docs/design.md section 4).

``apply(model, method)`` -> ``PruningHandle``: prunes LLaVA-1.5 (CLIP/SigLIP towers), LLaVA-NeXT,
LLaVA-NeXT-Video, LLaVA-OneVision, InternVL, Gemma 3, Gemma 4 (images and videos), PaliGemma, Mistral 3, Llama 4, Aya Vision, Cohere2 Vision, LFM2-VL, MiniCPM-V 4.6, Idefics3 /
SmolVLM, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5 (and
their MoE variants), the Qwen2.5-Omni / Qwen3-Omni thinkers, EXAONE 4.5, PaddleOCR-VL and GLM-4.1V / 4.5V / 4.6V calls (forward and generate) until the handle is removed or
its context exits;
``remove(model)`` restores a model whose handle was dropped.
"""
from .handle import PruningHandle, apply, remove

__all__ = ["apply", "remove", "PruningHandle"]
