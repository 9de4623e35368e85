"""Model integrations for transformers 5.x (DESIGN.md section 4).

``apply(model, method)`` -> ``PruningHandle``: prunes LLaVA-1.5 (CLIP/SigLIP towers), LLaVA-NeXT,
InternVL, Qwen2.5-VL and Qwen3-VL calls (forward and generate) until the handle is removed or its
context exits.
"""
from .handle import PruningHandle, apply

__all__ = ["apply", "PruningHandle"]
