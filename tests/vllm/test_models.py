"""The pruned vLLM models give the kept indices and greedy tokens of transformers + ``apply()``.

One engine per (model, method), started once for all its tests. Every engine runs with a token
budget of 32 per step, smaller than every prompt here: all prefills are chunked. Per engine:
- several requests with different images submitted together (one batch);
- two images in one prompt;
- a repeated image served from vLLM's encoder cache (the encoder does not run again, the output is
  still the pruned one);
- the kept count per image is what the processor announced (prompt length);
- the log-probability of every prompt token equals ``apply()``'s forward (so every position of the
  pruned prompt is right: for the Qwen-VL models, each kept token's M-RoPE position from the
  unpruned layout).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Tuple

import pytest

import checkpoints
from harness import TOKEN_BUDGET, ReferenceProcessor, Engine, image, reference, reference_logprobs, video
from vtprune_kernels import Random, Uniform, VisPruner


@dataclasses.dataclass
class Case:
    build: Callable  # checkpoints builder: path -> (path, transformers model)
    architecture: str
    config: dict  # hf_overrides["vtprune"]
    method: object  # the same method for apply()
    placeholder: str
    sizes: List[Tuple[int, int]]  # (width, height) of the test images
    two_images: bool = True  # False for Random: vLLM selects each image alone, apply() as a batch row
    videos: bool = False  # the engine takes a video per prompt too (test_video_and_image_match_apply)
    video_placeholder: str = "<|vision_start|><|video_pad|><|vision_end|>"
    video_with_image: bool = True  # False: the model takes a video or images per prompt, not both (GLM-4V)
    # the reference leaves these processor outputs out: Gemma 3's token_type_ids make transformers attend
    # bidirectionally inside an image, which vLLM's CPU attention does not (stock vLLM matches transformers
    # without them to 2e-5)
    reference_drops: Tuple[str, ...] = ()
    # prompt tokens whose own log-probability is not compared: Mistral 3's pruned prompt in vLLM holds
    # [IMG] where apply()'s holds [IMG_BREAK] (the same embedding there, the encoder output; a different id)
    logprob_skips: Tuple[str, ...] = ()
    processor: Optional[Callable] = None  # path -> the reference's processor (None: the checkpoint's AutoProcessor)
    images_per_prompt: int = 2  # PaliGemma: vLLM takes one image per prompt
    engine_args: dict = dataclasses.field(default_factory=dict)


CASES = {
    "llava-clip-vispruner": Case(
        lambda p: checkpoints.llava(p, "clip"), "LlavaForConditionalGeneration",
        {"method": "vispruner", "keep": 7, "step": 2}, VisPruner(keep=7, step=2), "<image>", [(70, 70)] * 3,
    ),
    "llava-siglip-vispruner": Case(
        lambda p: checkpoints.llava(p, "siglip"), "LlavaForConditionalGeneration",
        {"method": "vispruner", "keep": 6, "step": 2}, VisPruner(keep=6, step=2), "<image>", [(56, 56)] * 3,
    ),
    "llava-clip-random": Case(
        lambda p: checkpoints.llava(p, "clip"), "LlavaForConditionalGeneration",
        {"method": "random", "keep": 6, "seed": 3}, Random(keep=6, seed=3), "<image>", [(70, 70)] * 3, two_images=False,
    ),
    "llava-next-vispruner": Case(
        checkpoints.llava_next, "LlavaNextForConditionalGeneration",
        {"method": "vispruner", "keep": 4, "step": 2}, VisPruner(keep=4, step=2), "<image>", [(120, 70), (40, 40), (84, 84)],
    ),
    "llava-next-uniform": Case(
        checkpoints.llava_next, "LlavaNextForConditionalGeneration",
        {"method": "uniform", "keep": 4}, Uniform(keep=4), "<image>", [(120, 70), (70, 120), (40, 40)],
    ),
    # images of 4x4 tiles (12x12 patches, downsized to 9x9: each tile keeps among its share), 2x3 and
    # 1x2 tiles unpadded; video frames pooled to 2x2, keep 3 per frame
    "llava-onevision-vispruner": Case(
        checkpoints.llava_onevision, "LlavaOnevisionForConditionalGeneration",
        {"method": "vispruner", "keep": 3, "step": 2}, VisPruner(keep=3, step=2), "<image>", [(168, 168), (120, 70), (40, 40)],
        videos=True, video_placeholder="<video>",
    ),
    "llava-onevision-uniform": Case(
        checkpoints.llava_onevision, "LlavaOnevisionForConditionalGeneration",
        {"method": "uniform", "keep": 2}, Uniform(keep=2), "<image>", [(120, 70), (168, 126), (40, 40)],
    ),
    # the projector's 2x2 pooled grid (8x8 patches -> 4x4 tokens): keep 5 of 16 per image
    # 1, 2 x 2 + thumbnail, 1 x 2 + thumbnail tiles of 16 tokens
    "cohere2_vision-vispruner": Case(
        checkpoints.cohere2_vision, "Cohere2VisionForConditionalGeneration",
        {"method": "vispruner", "keep": 6, "step": 2}, VisPruner(keep=6, step=2), "<image>", [(128, 128), (250, 260), (256, 120)],
    ),
    # 2 x 2 tiles + a 3 x 4 thumbnail (128x96), one image of 3 x 2 tokens (48x32), 4 x 1 tiles + thumbnail (220x60)
    "lfm2_vl-vispruner": Case(
        checkpoints.lfm2_vl, "Lfm2VlForConditionalGeneration",
        {"method": "vispruner", "keep": 5, "step": 2}, VisPruner(keep=5, step=2), "<image>", [(128, 96), (48, 32), (220, 60)],
    ),
    "lfm2_vl-random": Case(
        checkpoints.lfm2_vl, "Lfm2VlForConditionalGeneration",
        {"method": "random", "keep": 4, "seed": 3}, Random(keep=4, seed=3), "<image>", [(220, 60), (128, 96), (48, 32)],
        two_images=False,
    ),
    "gemma3-vispruner": Case(
        checkpoints.gemma3, "Gemma3ForConditionalGeneration",
        {"method": "vispruner", "keep": 5, "step": 2}, VisPruner(keep=5, step=2), checkpoints.GEMMA3_IMAGE,
        [(112, 84), (84, 140), (200, 200)], reference_drops=("token_type_ids",),
    ),
    "gemma3-random": Case(
        checkpoints.gemma3, "Gemma3ForConditionalGeneration",
        {"method": "random", "keep": 6, "seed": 3}, Random(keep=6, seed=3), checkpoints.GEMMA3_IMAGE,
        [(112, 84), (200, 200), (84, 140)], two_images=False, reference_drops=("token_type_ids",),
    ),
    # split tiles (2x2, 2x1, 1x2) plus the global image, 9 tokens each after the pixel shuffle
    "idefics3-vispruner": Case(
        checkpoints.idefics3, "Idefics3ForConditionalGeneration",
        {"method": "vispruner", "keep": 4, "step": 2}, VisPruner(keep=4, step=2), "<image>", [(120, 70), (168, 60), (60, 168)],
    ),
    "smolvlm-uniform": Case(
        lambda p: checkpoints.idefics3(p, smolvlm=True), "SmolVLMForConditionalGeneration",
        {"method": "uniform", "keep": 3}, Uniform(keep=3), "<image>", [(168, 60), (120, 70), (60, 168)],
    ),
    # merged grids 3x4 (4 columns, 3 rows), 4x3 and 4x4: each keeps 5 and every row its break
    "mistral3-vispruner": Case(
        checkpoints.mistral3, "Mistral3ForConditionalGeneration",
        {"method": "vispruner", "keep": 5, "step": 2}, VisPruner(keep=5, step=2), checkpoints.MISTRAL3_IMAGE,
        [(100, 70), (60, 90), (112, 112)], logprob_skips=("[IMG]", "[IMG_BREAK]"),
    ),
    # Pixtral-12B's LLaVA form: every patch a token (5 x 4, 3 x 5, 5 x 5 tokens)
    "llava_pixtral-vispruner": Case(
        checkpoints.llava_pixtral, "LlavaForConditionalGeneration",
        {"method": "vispruner", "keep": 6, "step": 2}, VisPruner(keep=6, step=2), checkpoints.MISTRAL3_IMAGE,
        [(70, 56), (40, 66), (70, 70)], logprob_skips=("[IMG]", "[IMG_BREAK]"),
    ),
    # LightOnOCR: Mistral 3's tower and projector, an image written as its kept [IMG] tokens alone
    "lighton_ocr-vispruner": Case(
        checkpoints.lighton_ocr, "LightOnOCRForConditionalGeneration",
        {"method": "vispruner", "keep": 5, "step": 2}, VisPruner(keep=5, step=2), checkpoints.MISTRAL3_IMAGE,
        [(100, 70), (60, 90), (112, 112)],
    ),
    "mistral3-random": Case(
        checkpoints.mistral3, "Mistral3ForConditionalGeneration",
        {"method": "random", "keep": 3, "seed": 3}, Random(keep=3, seed=3), checkpoints.MISTRAL3_IMAGE,
        [(112, 112), (100, 70), (60, 90)], two_images=False, logprob_skips=("[IMG]", "[IMG_BREAK]"),
    ),
    # tiles of 16 tokens: 1 tile (100x90), 1x2 tiles + global (220x110), 2x2 + global (150x260); keep 5 per tile
    "llama4-vispruner": Case(
        checkpoints.llama4, "Llama4ForConditionalGeneration",
        {"method": "vispruner", "keep": 5, "step": 2}, VisPruner(keep=5, step=2), checkpoints.LLAMA4_IMAGE,
        [(220, 110), (100, 90), (150, 260)],
    ),
    "llama4-uniform": Case(
        checkpoints.llama4, "Llama4ForConditionalGeneration",
        {"method": "uniform", "keep": 3}, Uniform(keep=3), checkpoints.LLAMA4_IMAGE, [(150, 260), (220, 110), (100, 90)],
    ),
    # the original format (InternVLChatModel, trust_remote_code), vLLM's own processor: tiles 1x2 + thumbnail, 1, 2x1
    # images resized to the 70-soft-token budget (pooled grids of 63, 60, 65 tokens), padded to 630 patches; keep 20
    "gemma4-vispruner": Case(
        checkpoints.gemma4, "Gemma4ForConditionalGeneration",
        {"method": "vispruner", "keep": 20, "step": 4}, VisPruner(keep=20, step=4), checkpoints.GEMMA4_IMAGE,
        [(64, 48), (200, 120), (60, 150)], videos=True, video_placeholder=checkpoints.GEMMA4_VIDEO,
    ),
    "gemma4-uniform": Case(
        checkpoints.gemma4, "Gemma4ForConditionalGeneration",
        {"method": "uniform", "keep": 16}, Uniform(keep=16), checkpoints.GEMMA4_IMAGE, [(200, 120), (60, 150), (64, 48)],
    ),
    # every patch a token (6x6); vLLM puts the image first (no placeholder in the text), one per prompt; transformers
    # attends bidirectionally over the prefix with token_type_ids, vLLM's CPU attention causally (see checkpoints.paligemma)
    "paligemma-vispruner": Case(
        checkpoints.paligemma, "PaliGemmaForConditionalGeneration",
        {"method": "vispruner", "keep": 7, "step": 2}, VisPruner(keep=7, step=2), "", [(84, 84), (120, 60), (60, 120)],
        reference_drops=("token_type_ids", "labels"), images_per_prompt=1,
    ),
    "internvl_chat-vispruner": Case(
        checkpoints.internvl_chat, "InternVLChatModel",
        {"method": "vispruner", "keep": 5, "step": 2}, VisPruner(keep=5, step=2), "<image>", [(168, 84), (84, 84), (84, 168)],
        processor=checkpoints.internvl_chat_processor, engine_args={"trust_remote_code": True},
    ),
    "internvl-vispruner": Case(
        checkpoints.internvl, "InternVLForConditionalGeneration",
        {"method": "vispruner", "keep": 5, "step": 2}, VisPruner(keep=5, step=2), "<IMG_CONTEXT>", [(168, 84), (84, 84), (84, 168)],
    ),
    # every block attends over the whole frame (no windows); a video and an image in one prompt too
    "qwen2_vl-vispruner": Case(
        checkpoints.qwen2_vl, "Qwen2VLForConditionalGeneration",
        {"method": "vispruner", "keep": 10, "step": 2}, VisPruner(keep=10, step=2), checkpoints.QWEN_IMAGE,
        [(112, 84), (84, 140), (168, 168)], videos=True,
    ),
    # merged grids 3x4, 5x3, 6x6: keep 10 prunes each, and in the two-image prompt the second image's
    # placeholders straddle the 32-token chunk boundary
    "qwen2_5_vl-vispruner": Case(
        checkpoints.qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration",
        {"method": "vispruner", "keep": 10, "step": 2}, VisPruner(keep=10, step=2), checkpoints.QWEN_IMAGE,
        [(112, 84), (84, 140), (168, 168)], videos=True,
    ),
    # scores a windowed block (attention inside 2x2-merged-token windows); keep 20 >= 12 and 15: those keep all
    "qwen2_5_vl-vispruner-windowed-block": Case(
        checkpoints.qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration",
        {"method": "vispruner", "keep": 20, "step": 2, "score_layer": 2}, VisPruner(keep=20, step=2, score_layer=2),
        checkpoints.QWEN_IMAGE, [(168, 168), (112, 84), (224, 140)],
    ),
    # 16 px patches: merged grids 3x4, 5x3, 6x6 for these sizes (the same counts as Qwen2.5-VL above);
    # every DeepStack level keeps what the main features keep
    "qwen3_vl-vispruner": Case(
        checkpoints.qwen3_vl, "Qwen3VLForConditionalGeneration",
        {"method": "vispruner", "keep": 10, "step": 2}, VisPruner(keep=10, step=2), checkpoints.QWEN_IMAGE,
        [(128, 96), (96, 160), (192, 192)], videos=True,
    ),
    # Qwen3-VL's tower and DeepStack with mixture-of-experts text blocks
    "qwen3_vl_moe-vispruner": Case(
        checkpoints.qwen3_vl_moe, "Qwen3VLMoeForConditionalGeneration",
        {"method": "vispruner", "keep": 10, "step": 2}, VisPruner(keep=10, step=2), checkpoints.QWEN_IMAGE,
        [(128, 96), (96, 160), (192, 192)],
    ),
    "qwen3_vl-uniform": Case(
        checkpoints.qwen3_vl, "Qwen3VLForConditionalGeneration",
        {"method": "uniform", "keep": 5}, Uniform(keep=5), checkpoints.QWEN_IMAGE, [(192, 192), (128, 96), (96, 160)],
    ),
    # GLM-4.1V: Qwen2-VL's packing, a 2x2 convolution merges each kept block; a video's frames are
    # written as images (each at its own base position, after its timestamp)
    "glm4v-vispruner": Case(
        checkpoints.glm4v, "Glm4vForConditionalGeneration",
        {"method": "vispruner", "keep": 10, "step": 2}, VisPruner(keep=10, step=2), checkpoints.GLM_IMAGE,
        [(112, 84), (84, 140), (168, 168)], videos=True, video_placeholder=checkpoints.GLM_VIDEO, video_with_image=False,
    ),
    "glm4v_moe-random": Case(
        lambda p: checkpoints.glm4v(p, moe=True), "Glm4vMoeForConditionalGeneration",
        {"method": "random", "keep": 6, "seed": 3}, Random(keep=6, seed=3), checkpoints.GLM_IMAGE,
        [(112, 84), (168, 168), (84, 140)], two_images=False,
    ),
    # GLM-OCR: GLM-4.1V's tower with q/k norms in its attention
    "glm_ocr-vispruner": Case(
        lambda p: checkpoints.glm4v(p, ocr=True), "GlmOcrForConditionalGeneration",
        {"method": "vispruner", "keep": 8, "step": 2}, VisPruner(keep=8, step=2), checkpoints.GLM_IMAGE,
        [(84, 140), (112, 84), (168, 168)],
    ),
    # units (source image, slices) of 4x4 patches per token: 448x336 -> 5 units of 3x5 tokens; 300x500 -> 5x3 + 6
    # slices of 4x4 / 2x7; 200x150 -> one unit of 4x4; units of different sizes run as padded rows of one batch.
    # VisPruner scores the last layer (after the window merger: 2x2-merged tokens); video frames are units too
    "minicpmv4_6-vispruner": Case(
        checkpoints.minicpmv4_6, "MiniCPMV4_6ForConditionalGeneration",
        {"method": "vispruner", "keep": 6, "step": 2}, VisPruner(keep=6, step=2), checkpoints.MINICPMV_IMAGE,
        [(448, 336), (300, 500), (200, 150)], videos=True, video_placeholder=checkpoints.MINICPMV_VIDEO,
        engine_args={"enable_prefix_caching": False},
    ),
    # layer 1, before the window merger: the patches' scores pooled 4x4
    "minicpmv4_6-vispruner-patch-layer": Case(
        checkpoints.minicpmv4_6, "MiniCPMV4_6ForConditionalGeneration",
        {"method": "vispruner", "keep": 5, "step": 1, "score_layer": 1}, VisPruner(keep=5, step=1, score_layer=1),
        checkpoints.MINICPMV_IMAGE, [(300, 500), (200, 150), (448, 336)], engine_args={"enable_prefix_caching": False},
    ),
    "minicpmv4_6-random": Case(
        checkpoints.minicpmv4_6, "MiniCPMV4_6ForConditionalGeneration",
        {"method": "random", "keep": 4, "seed": 3}, Random(keep=4, seed=3), checkpoints.MINICPMV_IMAGE,
        [(640, 200), (448, 336), (200, 150)], two_images=False, engine_args={"enable_prefix_caching": False},
    ),
    # EXAONE 4.5: Qwen2.5-VL's grouped-query tower, 1-D text positions (no position channels)
    "exaone4_5-vispruner": Case(
        checkpoints.exaone4_5, "Exaone4_5_ForConditionalGeneration",
        {"method": "vispruner", "keep": 10, "step": 2}, VisPruner(keep=10, step=2), checkpoints.QWEN_IMAGE,
        [(112, 84), (84, 140), (168, 168)], videos=True,
    ),
    # PaddleOCR-VL: raster-order NaViT patches, the projector's 2x2 merge; merged grids 3x4, 5x3, 6x6, keep 10
    "paddleocr_vl-vispruner": Case(
        checkpoints.paddleocr_vl, "PaddleOCRVLForConditionalGeneration",
        {"method": "vispruner", "keep": 10, "step": 2}, VisPruner(keep=10, step=2), checkpoints.QWEN_IMAGE,
        [(112, 84), (84, 140), (168, 168)],
    ),
    "paddleocr_vl-random": Case(
        checkpoints.paddleocr_vl, "PaddleOCRVLForConditionalGeneration",
        {"method": "random", "keep": 6, "seed": 3}, Random(keep=6, seed=3), checkpoints.QWEN_IMAGE,
        [(112, 84), (168, 168), (84, 140)], two_images=False,
    ),
    "qwen2_5_vl-random": Case(
        checkpoints.qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration",
        {"method": "random", "keep": 6, "seed": 3}, Random(keep=6, seed=3), checkpoints.QWEN_IMAGE,
        [(112, 84), (168, 168), (84, 140)], two_images=False,
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def served(request, checkpoint_dir):
    from vtprune_kernels.integrations.vllm import hf_overrides

    case = CASES[request.param]
    path, model = case.build(f"{checkpoint_dir}/{request.param}")
    from transformers import AutoProcessor

    processor = case.processor(path) if case.processor else AutoProcessor.from_pretrained(path)
    if case.reference_drops:
        processor = ReferenceProcessor(processor, case.reference_drops)
    engine = Engine(
        path, hf_overrides(case.architecture, **case.config), max_images=case.images_per_prompt,
        max_videos=1 if case.videos else 0, **case.engine_args,
    )
    engine.selections()  # drop the start-up profiling's dummy images
    yield case, engine, model, processor
    engine.close()


def _prompt(case: Case, n_images: int, prefix: str = "USER: ") -> str:
    return prefix + f"{case.placeholder}\n" * n_images + "What is shown here? ASSISTANT:"


def test_batch_of_requests_matches_apply(served):
    """Three requests with different images, submitted together; each prompt is prefilled in chunks."""
    case, engine, model, processor = served
    requests = [(_prompt(case, 1), [image(w, h, seed=10 + i)]) for i, (w, h) in enumerate(case.sizes)]
    got = engine.greedy(requests)
    selections = engine.selections()
    expected = [reference(model, processor, case.method, text, images) for text, images in requests]
    assert [tokens for tokens, _ in got] == [tokens for tokens, _ in expected]
    assert sorted(selections) == sorted(sel for _, sels in expected for sel in sels)
    assert all(length > TOKEN_BUDGET for _, length in got), "test precondition: prompts must be chunked"


@pytest.mark.parametrize("served", [name for name in CASES if name.startswith(("qwen", "paddleocr"))], indirect=True)
def test_announced_count_is_the_prompts(served):
    """The count vLLM plans with (``get_num_image_tokens``: encoder budget, profiling) is, from the image
    size alone, the number of placeholders the prompt holds and min(keep, merged tokens)."""
    from vllm.multimodal import MULTIMODAL_REGISTRY

    case, engine, model, processor = served
    info = MULTIMODAL_REGISTRY.create_processor(engine.llm.llm_engine.model_config).info
    requests = [(_prompt(case, 1), [image(w, h, seed=90 + i)]) for i, (w, h) in enumerate(case.sizes)]
    lengths = [length for _, length in engine.greedy(requests)]
    engine.selections()
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for (text, (picture,)), length in zip(requests, lengths):
        ids = processor(text=[text], images=[picture], return_tensors="pt")["input_ids"][0]
        full = int((ids == pad).sum())
        announced = info.get_num_image_tokens(
            image_width=picture.width, image_height=picture.height, image_processor=info.get_image_processor(), mm_kwargs={}
        )
        assert announced == min(case.config["keep"], full)
        assert length == ids.numel() - full + announced


def test_two_images_in_one_prompt_match_apply(served):
    case, engine, model, processor = served
    if case.images_per_prompt < 2:
        pytest.skip(f"{case.architecture} takes one image per prompt")
    text, images = _prompt(case, 2), [image(*case.sizes[0], seed=20), image(*case.sizes[-1], seed=21)]
    ((tokens, _),) = engine.greedy([(text, images)])
    selections = engine.selections()
    if case.two_images:
        expected_tokens, expected_selection = reference(model, processor, case.method, text, images)
        assert tokens == expected_tokens
        assert selections == expected_selection
    else:
        # Random: vLLM selects each image on its own, i.e. as apply() on that image alone (one call
        # with both would draw the second image's tokens from row 1 of the generator)
        alone = [sel for picture in images for sel in reference(model, processor, case.method, _prompt(case, 1), [picture])[1]]
        assert selections == alone
        assert engine.greedy([(text, images)])[0][0] == tokens  # deterministic


def test_repeated_image_comes_from_the_encoder_cache(served):
    """The same image after another prompt prefix: no new encoder run, same pruned features."""
    case, engine, model, processor = served
    picture = image(*case.sizes[0], seed=30)
    first = engine.greedy([(_prompt(case, 1), [picture])])
    first_tokens, first_selection = reference(model, processor, case.method, _prompt(case, 1), [picture])
    assert engine.selections() == first_selection  # one encode (one entry per image; per tile on Idefics3)
    text = _prompt(case, 1, prefix="Q: look. ")
    ((tokens, _),) = engine.greedy([(text, [picture])])
    assert engine.selections() == [], "the repeated image was encoded again instead of read from the encoder cache"
    assert tokens == reference(model, processor, case.method, text, [picture])[0]
    assert first[0][0] == first_tokens


def test_prompt_logprobs_match_apply(served):
    """Every prompt token's log-probability equals apply()'s forward on the pruned prompt, for one image
    and (where vLLM and apply() select alike) two images with text between them."""
    case, engine, model, processor = served
    requests = [(_prompt(case, 1), [image(*case.sizes[-1], seed=70)])]
    if case.two_images and case.images_per_prompt >= 2:
        requests.append((_prompt(case, 2), [image(*case.sizes[0], seed=71), image(*case.sizes[1], seed=72)]))
    got = engine.prompt_logprobs(requests)
    engine.selections()  # these encodes are not the subject here
    skips = [processor.tokenizer.convert_tokens_to_ids(t) for t in case.logprob_skips]
    for (text, images), logprobs in zip(requests, got):
        expected = reference_logprobs(model, processor, case.method, text, images, skip_targets=skips)
        assert len(logprobs) == len(expected)
        worst = max(abs(a - b) for a, b in zip(logprobs, expected) if b is not None)
        assert worst < 1e-3, f"prompt log-probabilities differ from apply() by up to {worst}"


@pytest.mark.parametrize("served", [name for name, case in CASES.items() if case.videos], indirect=True)
def test_video_and_image_match_apply(served):
    """A video (pruned per frame, budget per frame; Qwen2(.5)-VL: temporal positions at frame * fps step,
    Qwen3-VL: each frame between its timestamp and delimiters, at its own base) and an image in one
    prompt: kept indices, greedy tokens and prompt log-probabilities as apply()."""
    case, engine, model, processor = served
    text = f"USER: {case.video_placeholder} then {case.placeholder}\nWhat happens? ASSISTANT:"
    clip, pictures = video(4, 112, 84, seed=80), [image(*case.sizes[1], seed=81)]
    if not case.video_with_image:
        text, pictures = f"USER: {case.video_placeholder}\nWhat happens? ASSISTANT:", []
    ((tokens, _),) = engine.greedy([(text, pictures)], videos=[[clip]])
    selections = engine.selections()
    (logprobs,) = engine.prompt_logprobs([(text, pictures)], videos=[[clip]])
    engine.selections()
    expected_tokens, expected_selection = reference(model, processor, case.method, text, pictures, [clip])
    assert tokens == expected_tokens
    assert sorted(selections) == sorted(expected_selection)  # vLLM encodes the image and the video apart
    expected = reference_logprobs(model, processor, case.method, text, pictures, [clip])
    assert max(abs(a - b) for a, b in zip(logprobs, expected)) < 1e-3 and len(logprobs) == len(expected)
