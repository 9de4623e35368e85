"""vLLM plugin: pruned variants of vLLM's LLaVA-1.5, LLaVA-NeXT, LLaVA-NeXT-Video, LLaVA-OneVision, InternVL (both checkpoint formats), Cohere2 Vision, LFM2-VL, MiniCPM-V 4.6, EXAONE 4.5, PaddleOCR-VL, Gemma 3, Gemma 4, PaliGemma, Mistral 3, LightOnOCR, Llama 4, Idefics3, SmolVLM, Qwen2-VL, Qwen2.5-VL,
the Qwen2.5-Omni and Qwen3-Omni thinkers, Qwen3-VL (and -MoE), Qwen3.5 (and -MoE) and GLM-4.1V / 4.5V / GLM-OCR (docs/design.md section 4).

``register()`` is the ``vllm.general_plugins`` entry point (pyproject.toml): vLLM calls it in every
process it starts. It only adds thirty-one architectures to vLLM's model registry, by name (the classes
are imported when a model asks for them):

| stock architecture                  | pruned architecture                        |
|-------------------------------------|--------------------------------------------|
| LlavaForConditionalGeneration       | VTPruneLlavaForConditionalGeneration       |
| LlavaNextForConditionalGeneration   | VTPruneLlavaNextForConditionalGeneration   |
| LlavaNextVideoForConditionalGeneration (videos) | VTPruneLlavaNextVideoForConditionalGeneration |
| LlavaOnevisionForConditionalGeneration | VTPruneLlavaOnevisionForConditionalGeneration |
| Cohere2VisionForConditionalGeneration | VTPruneCohere2VisionForConditionalGeneration |
| Lfm2VlForConditionalGeneration      | VTPruneLfm2VLForConditionalGeneration      |
| MiniCPMV4_6ForConditionalGeneration | VTPruneMiniCPMV4_6ForConditionalGeneration |
| Exaone4_5_ForConditionalGeneration  | VTPruneExaone4_5_ForConditionalGeneration  |
| PaddleOCRVLForConditionalGeneration | VTPrunePaddleOCRVLForConditionalGeneration |
| InternVLForConditionalGeneration    | VTPruneInternVLForConditionalGeneration    |
| InternVLChatModel                   | VTPruneInternVLChatModel                   |
| Gemma3ForConditionalGeneration      | VTPruneGemma3ForConditionalGeneration      |
| PaliGemmaForConditionalGeneration   | VTPrunePaliGemmaForConditionalGeneration   |
| Gemma4ForConditionalGeneration      | VTPruneGemma4ForConditionalGeneration      |
| Mistral3ForConditionalGeneration    | VTPruneMistral3ForConditionalGeneration    |
| LightOnOCRForConditionalGeneration  | VTPruneLightOnOCRForConditionalGeneration  |
| Llama4ForConditionalGeneration      | VTPruneLlama4ForConditionalGeneration      |
| Idefics3ForConditionalGeneration    | VTPruneIdefics3ForConditionalGeneration    |
| SmolVLMForConditionalGeneration     | VTPruneSmolVLMForConditionalGeneration     |
| Qwen2VLForConditionalGeneration     | VTPruneQwen2VLForConditionalGeneration     |
| Qwen2_5_VLForConditionalGeneration  | VTPruneQwen2_5_VLForConditionalGeneration  |
| Qwen2_5OmniModel, Qwen2_5OmniForConditionalGeneration (thinker) | VTPruneQwen2_5OmniModel, VTPruneQwen2_5OmniForConditionalGeneration |
| Qwen3OmniMoeForConditionalGeneration (thinker) | VTPruneQwen3OmniMoeForConditionalGeneration |
| Qwen3VLForConditionalGeneration     | VTPruneQwen3VLForConditionalGeneration     |
| Qwen3VLMoeForConditionalGeneration  | VTPruneQwen3VLMoeForConditionalGeneration  |
| Qwen3_5ForConditionalGeneration     | VTPruneQwen3_5ForConditionalGeneration     |
| Qwen3_5MoeForConditionalGeneration  | VTPruneQwen3_5MoeForConditionalGeneration  |
| Glm4vForConditionalGeneration       | VTPruneGlm4vForConditionalGeneration       |
| Glm4vMoeForConditionalGeneration    | VTPruneGlm4vMoeForConditionalGeneration    |
| GlmOcrForConditionalGeneration      | VTPruneGlmOcrForConditionalGeneration      |

A model is pruned when its config is switched to the pruned architecture and carries the method
(``switch.py``): ``hf_overrides={"architectures": [...], "vtprune": {"method": ..., "keep": ...}}``.
Otherwise nothing of this package runs.

Each pruned class subclasses vLLM's own class and overrides only how image features are computed;
its processing info reports the kept count, so vLLM's prompt, encoder budget, profiling and
encoder cache all see the pruned images.
"""
from __future__ import annotations

from .switch import CONFIG_KEY, PRUNED_ARCHITECTURES, hf_overrides, method_from_config

_CLASSES = {
    "VTPruneLlavaForConditionalGeneration": "llava",
    "VTPruneLlavaNextForConditionalGeneration": "llava_next",
    "VTPruneLlavaNextVideoForConditionalGeneration": "llava_next_video",
    "VTPruneLlavaOnevisionForConditionalGeneration": "llava_onevision",
    "VTPruneCohere2VisionForConditionalGeneration": "cohere2_vision",
    "VTPruneLfm2VLForConditionalGeneration": "lfm2_vl",
    "VTPruneMiniCPMV4_6ForConditionalGeneration": "minicpmv",
    "VTPruneExaone4_5_ForConditionalGeneration": "exaone4_5",
    "VTPrunePaddleOCRVLForConditionalGeneration": "paddleocr_vl",
    "VTPruneInternVLForConditionalGeneration": "internvl",
    "VTPruneInternVLChatModel": "internvl",
    "VTPruneGemma3ForConditionalGeneration": "gemma3",
    "VTPrunePaliGemmaForConditionalGeneration": "paligemma",
    "VTPruneGemma4ForConditionalGeneration": "gemma4",
    "VTPruneMistral3ForConditionalGeneration": "mistral3",
    "VTPruneLightOnOCRForConditionalGeneration": "lightonocr",
    "VTPruneLlama4ForConditionalGeneration": "llama4",
    "VTPruneIdefics3ForConditionalGeneration": "idefics3",
    "VTPruneSmolVLMForConditionalGeneration": "idefics3",
    "VTPruneQwen2VLForConditionalGeneration": "qwen2_vl",
    "VTPruneQwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "VTPruneQwen2_5OmniModel": "qwen2_5_omni",
    "VTPruneQwen2_5OmniForConditionalGeneration": "qwen2_5_omni",
    "VTPruneQwen3OmniMoeForConditionalGeneration": "qwen3_omni",
    "VTPruneQwen3VLForConditionalGeneration": "qwen3_vl",
    "VTPruneQwen3VLMoeForConditionalGeneration": "qwen3_vl_moe",
    "VTPruneQwen3_5ForConditionalGeneration": "qwen3_5",
    "VTPruneQwen3_5MoeForConditionalGeneration": "qwen3_5",
    "VTPruneGlm4vForConditionalGeneration": "glm4v",
    "VTPruneGlm4vMoeForConditionalGeneration": "glm4v",
    "VTPruneGlmOcrForConditionalGeneration": "glm4v",
}


def register() -> None:
    """Add the pruned architectures to vLLM's model registry (lazily: by module path)."""
    from vllm import ModelRegistry

    supported = set(ModelRegistry.get_supported_archs())
    for arch, module in _CLASSES.items():
        if arch not in supported:
            ModelRegistry.register_model(arch, f"{__name__}.{module}:{arch}")


__all__ = ["register", "hf_overrides", "method_from_config", "CONFIG_KEY", "PRUNED_ARCHITECTURES"]
