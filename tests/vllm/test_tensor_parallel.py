"""Tensor parallelism (TP=2 on the CPU backend): each rank holds half of the vision tower's heads (CLIP;
the packed towers of Qwen2-VL, Qwen2.5-VL and Qwen3-VL, scored per frame; Idefics3's; the SigLIP towers of LLaVA-OneVision and
Gemma 3; Mistral 3's Pixtral tower; Llama 4's tower; MiniCPM-V's padded Idefics2 rows; the InternViT of original-format InternVL; PaddleOCR-VL's NaViT); the head-mean scores are
all-reduced, so both ranks keep the tokens ``apply()`` keeps, and the sharded merger/projector (and
Qwen3-VL's DeepStack mergers) run on them."""
from __future__ import annotations

import operator

import pytest

import checkpoints
from harness import ReferenceProcessor, Engine, image, reference
from vtprune_kernels import VisPruner
from vtprune_kernels.integrations.vllm import hf_overrides

CASES = {  # builder, stock architecture, prompt, image (width, height)
    "llava-clip": (lambda p: checkpoints.llava(p, "clip"), "LlavaForConditionalGeneration", "USER: <image>\n", (70, 70)),
    "qwen2_vl": (checkpoints.qwen2_vl, "Qwen2VLForConditionalGeneration", f"USER: {checkpoints.QWEN_IMAGE}\n", (168, 84)),
    "qwen2_5_vl": (checkpoints.qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration", f"USER: {checkpoints.QWEN_IMAGE}\n", (168, 84)),
    "qwen3_vl": (checkpoints.qwen3_vl, "Qwen3VLForConditionalGeneration", f"USER: {checkpoints.QWEN_IMAGE}\n", (192, 96)),
    # the Idefics2 tower of Idefics3 / SmolVLM (per tile after the pixel shuffle), LLaVA-OneVision's
    # downsized packing (a SigLIP tower)
    "idefics3": (checkpoints.idefics3, "Idefics3ForConditionalGeneration", "USER: <image>\n", (120, 70)),
    "llava-onevision": (checkpoints.llava_onevision, "LlavaOnevisionForConditionalGeneration", "USER: <image>\n", (168, 168)),
    # Gemma 3's pooled grid (SigLIP); its reference leaves token_type_ids out, as in test_models.py
    "cohere2_vision": (checkpoints.cohere2_vision, "Cohere2VisionForConditionalGeneration", "USER: <image>\n", (250, 260)),
    # LFM2-VL's SigLIP2 tiles packed in one sequence: 2 x 2 tiles + a thumbnail (2 text heads to split; see ENGINE_ARGS)
    "lfm2_vl": (lambda p: checkpoints.lfm2_vl(p, heads=2), "Lfm2VlForConditionalGeneration", "USER: <image>\n", (128, 96)),
    # MiniCPM-V 4.6: units of different sizes (a 5x3 source image, 4x4 and 2x7 slices) as padded rows of the Idefics2
    # tower (the fused q/k/v projection's local heads hooked)
    "minicpmv4_6": (checkpoints.minicpmv4_6, "MiniCPMV4_6ForConditionalGeneration", f"USER: {checkpoints.MINICPMV_IMAGE}\n", (300, 500)),
    # EXAONE 4.5: grouped-query vision attention, its key heads split over the ranks too
    "exaone4_5": (checkpoints.exaone4_5, "Exaone4_5_ForConditionalGeneration", f"USER: {checkpoints.QWEN_IMAGE}\n", (168, 84)),
    # PaddleOCR-VL: its NaViT tower's heads split over the ranks (all-gathered q/k/v, then sliced), run per image
    "paddleocr_vl": (checkpoints.paddleocr_vl, "PaddleOCRVLForConditionalGeneration", f"USER: {checkpoints.QWEN_IMAGE}\n", (168, 84)),
    "gemma3": (checkpoints.gemma3, "Gemma3ForConditionalGeneration", f"USER: {checkpoints.GEMMA3_IMAGE}\n", (112, 84)),
    # Mistral 3's Pixtral tower; the row breaks are the sharded language model's own embedding
    "mistral3": (checkpoints.mistral3, "Mistral3ForConditionalGeneration", f"USER: {checkpoints.MISTRAL3_IMAGE}\n", (100, 70)),
    # Llama 4: [CLS] row last, 1x2 tiles + a global tile
    "llama4": (checkpoints.llama4, "Llama4ForConditionalGeneration", f"USER: {checkpoints.LLAMA4_IMAGE}\n", (220, 110)),
    # original-format InternVL: vLLM's InternViT (its own attention class), 1x2 tiles + thumbnail
    "internvl_chat": (checkpoints.internvl_chat, "InternVLChatModel", "USER: <image>\n", (168, 84)),
}
REFERENCE_DROPS = {"gemma3": ("token_type_ids",)}
REFERENCE_PROCESSORS = {"internvl_chat": checkpoints.internvl_chat_processor}  # else the checkpoint's AutoProcessor
ENGINE_ARGS = {
    "internvl_chat": {"trust_remote_code": True},
    # vLLM's CPU rotary kernel mis-rotates LFM2's multi-head queries: its native rotary instead (checkpoints.lfm2_vl)
    "lfm2_vl": {"compilation_config": {"custom_ops": ["-rotary_embedding"]}},
    "minicpmv4_6": {"enable_prefix_caching": False},  # see checkpoints.minicpmv4_6
}


@pytest.mark.parametrize("name", list(CASES))
def test_tp2_ranks_select_like_apply(name, checkpoint_dir, monkeypatch):
    import os

    cpus = sorted(os.sched_getaffinity(0))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # TP ranks are worker processes
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model sends a callable to the ranks
    # one NUMA node here: vLLM's automatic binding wants one per rank, so bind the ranks by hand
    half = max(1, len(cpus) // 2)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "|".join(
        ",".join(str(c) for c in part) for part in (cpus[:half], cpus[half:] or cpus[:half])))
    from transformers import AutoProcessor

    build, architecture, prefix, size = CASES[name]
    path, model = build(f"{checkpoint_dir}/tp2-{name}")
    processor = REFERENCE_PROCESSORS[name](path) if name in REFERENCE_PROCESSORS else AutoProcessor.from_pretrained(path)
    if name in REFERENCE_DROPS:
        processor = ReferenceProcessor(processor, REFERENCE_DROPS[name])
    engine = Engine(
        path, hf_overrides(architecture, "vispruner", 7, step=2), tensor_parallel_size=2, distributed_executor_backend="mp",
        **ENGINE_ARGS.get(name, {}),
    )
    try:
        heads = engine.llm.apply_model(operator.attrgetter("vtprune.layout.local_heads", "vtprune.layout.total_heads"))
        assert heads == [(2, 4), (2, 4)], "test precondition: each rank must hold half of the vision heads"
        engine.llm.apply_model(operator.methodcaller("vtprune_selections", True))
        text = prefix + "What is shown here? ASSISTANT:"
        pictures = [image(*size, seed=50)]
        ((tokens, _),) = engine.greedy([(text, pictures)])
        per_rank = [[s.tolist() for s in log] for log in engine.llm.apply_model(operator.methodcaller("vtprune_selections"))]
    finally:
        engine.close()
    expected_tokens, expected_selection = reference(model, processor, VisPruner(keep=7, step=2), text, pictures)
    assert per_rank == [expected_selection, expected_selection]
    assert tokens == expected_tokens
