"""Model integrations for transformers 5.x (docs/design.md section 4).

``apply(model, method)`` -> ``PruningHandle``: prunes LLaVA-1.5 (CLIP/SigLIP towers), LLaVA-NeXT,
InternVL, Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5 (and their MoE variants) calls (forward and
generate) until the handle is removed or its context exits;
``remove(model)`` restores a model whose handle was dropped.
"""
from .handle import PruningHandle, apply, remove

__all__ = ["apply", "remove", "PruningHandle"]
