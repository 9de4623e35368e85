"""The switch: which pruned architecture serves a model, and the method it prunes with.

Pruning is on for a model when its config names a pruned architecture AND carries the method:

    hf_overrides = {"architectures": ["VTPruneLlavaForConditionalGeneration"],
                    "vtprune": {"method": "vispruner", "keep": 64}}

(``vllm serve MODEL --hf-overrides '<that JSON>'`` or ``LLM(MODEL, hf_overrides=...)``;
``hf_overrides(...)`` below builds it). Without it vLLM never touches this package's classes: the
stock architectures stay registered as they are, so a model behaves exactly as stock vLLM.

Every configuration error is raised while the engine starts (the processor and the model read
the configuration through ``method_from_config``), never in a request.
"""
from __future__ import annotations

from typing import Dict

from ...methods import HIVTP, PTP, Random, Uniform, VisPruner

CONFIG_KEY = "vtprune"

# stock vLLM architecture -> the pruned one this plugin registers
PRUNED_ARCHITECTURES: Dict[str, str] = {
    "LlavaForConditionalGeneration": "VTPruneLlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration": "VTPruneLlavaNextForConditionalGeneration",
    "LlavaNextVideoForConditionalGeneration": "VTPruneLlavaNextVideoForConditionalGeneration",
    "LlavaOnevisionForConditionalGeneration": "VTPruneLlavaOnevisionForConditionalGeneration",
    "Cohere2VisionForConditionalGeneration": "VTPruneCohere2VisionForConditionalGeneration",
    "Lfm2VlForConditionalGeneration": "VTPruneLfm2VLForConditionalGeneration",
    "MiniCPMV4_6ForConditionalGeneration": "VTPruneMiniCPMV4_6ForConditionalGeneration",
    "Exaone4_5_ForConditionalGeneration": "VTPruneExaone4_5_ForConditionalGeneration",
    "PaddleOCRVLForConditionalGeneration": "VTPrunePaddleOCRVLForConditionalGeneration",
    "InternVLForConditionalGeneration": "VTPruneInternVLForConditionalGeneration",
    "InternVLChatModel": "VTPruneInternVLChatModel",
    "Gemma3ForConditionalGeneration": "VTPruneGemma3ForConditionalGeneration",
    "PaliGemmaForConditionalGeneration": "VTPrunePaliGemmaForConditionalGeneration",
    "Gemma4ForConditionalGeneration": "VTPruneGemma4ForConditionalGeneration",
    "Mistral3ForConditionalGeneration": "VTPruneMistral3ForConditionalGeneration",
    "LightOnOCRForConditionalGeneration": "VTPruneLightOnOCRForConditionalGeneration",
    "Llama4ForConditionalGeneration": "VTPruneLlama4ForConditionalGeneration",
    "Idefics3ForConditionalGeneration": "VTPruneIdefics3ForConditionalGeneration",
    "SmolVLMForConditionalGeneration": "VTPruneSmolVLMForConditionalGeneration",
    "Qwen2VLForConditionalGeneration": "VTPruneQwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration": "VTPruneQwen2_5_VLForConditionalGeneration",
    "Qwen2_5OmniModel": "VTPruneQwen2_5OmniModel",
    "Qwen2_5OmniForConditionalGeneration": "VTPruneQwen2_5OmniForConditionalGeneration",
    "Qwen3OmniMoeForConditionalGeneration": "VTPruneQwen3OmniMoeForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "VTPruneQwen3VLForConditionalGeneration",
    "Qwen3VLMoeForConditionalGeneration": "VTPruneQwen3VLMoeForConditionalGeneration",
    "Qwen3_5ForConditionalGeneration": "VTPruneQwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForConditionalGeneration": "VTPruneQwen3_5MoeForConditionalGeneration",
    "Glm4vForConditionalGeneration": "VTPruneGlm4vForConditionalGeneration",
    "Glm4vMoeForConditionalGeneration": "VTPruneGlm4vMoeForConditionalGeneration",
    "GlmOcrForConditionalGeneration": "VTPruneGlmOcrForConditionalGeneration",
}

_METHODS = {"vispruner": VisPruner, "random": Random, "uniform": Uniform}

# Methods that cannot run in vLLM, and why (vLLM fixes each image's placeholder count from the
# image size before the encoder runs, and caches encoder outputs by image, not by prompt).
_REFUSED = {
    "hivtp": (
        f"{HIVTP.__name__} keeps a number of tokens that depends on the image content (its window stage), but vLLM "
        "fixes each image's number of placeholder tokens from the image size before the vision encoder runs"
    ),
    "ptp": (
        f"{PTP.__name__} scores tokens with the prompt's instruction text, but vLLM encodes an image apart from its "
        "prompt and reuses the result for any prompt with the same image (encoder cache), and its per-tile budgets "
        "depend on the image content"
    ),
}


def method_from_config(hf_config, architecture: str):
    """The pruning method object named by ``hf_config.vtprune``; a clear ``ValueError`` otherwise.

    ``hf_config.vtprune`` = {"method": "vispruner" | "random" | "uniform", "keep": int >= 1, and
    the method's other arguments (VisPruner: important_ratio, step; Random: seed)}.
    """
    spec = getattr(hf_config, CONFIG_KEY, None)
    if spec is None:
        raise ValueError(
            f"{architecture} prunes visual tokens and needs the method in the model config: pass "
            f"hf_overrides={{'{CONFIG_KEY}': {{'method': 'vispruner', 'keep': 64}}, 'architectures': ['{architecture}']}}"
        )
    if not isinstance(spec, dict):
        raise ValueError(f"hf_overrides '{CONFIG_KEY}' must be a JSON object like {{'method': 'vispruner', 'keep': 64}}, got {spec!r}")
    spec = dict(spec)
    name = spec.pop("method", None)
    if not isinstance(name, str):
        raise ValueError(f"hf_overrides '{CONFIG_KEY}' needs 'method' (one of {sorted(_METHODS)}), got {name!r}")
    key = name.lower()
    if key in _REFUSED:
        raise ValueError(f"vtprune method {name!r} cannot run in vLLM: {_REFUSED[key]}. Use one of {sorted(_METHODS)}.")
    if key not in _METHODS:
        raise ValueError(f"unknown vtprune method {name!r}: vLLM supports {sorted(_METHODS)}")
    keep = spec.get("keep")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"hf_overrides '{CONFIG_KEY}': 'keep' must be an integer >= 1 (tokens kept per image, tile or video frame), got {keep!r}")
    try:
        return _METHODS[key](**spec)
    except TypeError as e:  # an argument the method does not take
        raise ValueError(f"hf_overrides '{CONFIG_KEY}': bad arguments for {_METHODS[key].__name__}: {e}") from None


def hf_overrides(architecture: str, method: str, keep: int, **method_args) -> dict:
    """The ``hf_overrides`` dict that switches pruning on for a model of stock ``architecture``
    (e.g. "LlavaForConditionalGeneration"). JSON-serialisable: ``json.dumps`` it for the CLI."""
    if architecture not in PRUNED_ARCHITECTURES:
        raise ValueError(f"vtprune has no pruned variant of {architecture!r}; supported: {sorted(PRUNED_ARCHITECTURES)}")
    return {"architectures": [PRUNED_ARCHITECTURES[architecture]], CONFIG_KEY: {"method": method, "keep": keep, **method_args}}
