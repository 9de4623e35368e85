"""vLLM engine with and without visual-token pruning, side by side: time to first token and requests/s.

Run from the vLLM venv (``make bench-vllm``, or ``.venv-vllm/bin/python benchmarks/vllm_serving.py``).

A checkpoint with random weights is written to a temporary folder (``--model``): LLaVA-1.5-shaped
(CLIP tower on 336 px images, 14 px patches: 576 visual tokens per image; Llama text model) or
Qwen2.5-VL-shaped (448 px images: 32 x 32 patches merged 2x2 into 256 visual tokens; windowed and
full-attention vision blocks; Qwen2 text model with M-RoPE) or Qwen3-VL-shaped (512 px images: 32 x 32
patches of 16 px, 256 visual tokens; DeepStack; Qwen3 text model with interleaved M-RoPE). Every request carries IMAGES
pictures, so visual tokens dominate the prompt. Two engines serve it in this one process (each
with its own engine-core process): the stock architecture and the plugin's pruned one
(VisPruner, KEEP tokens per image). Prefix caching and the
multimodal caches are off and every round uses new pictures, so each round encodes and prefills
everything. Rounds alternate between the engines (a, b, a, b, ...) so both see the same machine
load; the figures are the best round of each:
- TTFT: one request alone, ``max_tokens=1`` (encode + prefill + first token);
- requests/s: BATCH requests submitted together, ``max_tokens=NEW_TOKENS`` each.
Not a pytest file (it needs vLLM, which lives in its own venv): not collected by ``make bench``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="vtprune-vllm-bench-cache-"))

PATCH = 14
TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "vllm")


def llava_checkpoint(path: str):
    """(path, stock architecture, image placeholder, image side): CLIP 2 layers (feature layer -2),
    Llama 4 layers x 256."""
    sys.path.insert(0, TESTS)
    import checkpoints
    from transformers import CLIPVisionConfig, LlamaConfig

    side = 336
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=side, patch_size=PATCH, projection_dim=64)
    text = LlamaConfig(vocab_size=checkpoints.VOCAB_SIZE, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    checkpoints.llava(path, "clip", vision_config=vision, text_config=text)
    return path, "LlavaForConditionalGeneration", "<image>", side, (side // PATCH) ** 2


def qwen2_5_vl_checkpoint(path: str):
    """(path, stock architecture, image placeholder, image side): 4 vision blocks x 64 (full attention
    in blocks 1 and 3, 112 px windows in the others), Qwen2 4 layers x 256."""
    sys.path.insert(0, TESTS)
    import checkpoints
    from transformers import Qwen2Config

    side = 448
    vision = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=256,
                  fullatt_block_indexes=[1, 3], window_size=112, patch_size=PATCH, spatial_merge_size=2,
                  temporal_patch_size=2, tokens_per_second=2)
    text = Qwen2Config(vocab_size=checkpoints.VOCAB_SIZE, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    checkpoints.qwen2_5_vl(path, vision=vision, text_config=text, max_pixels=side * side)
    return path, "Qwen2_5_VLForConditionalGeneration", checkpoints.QWEN_IMAGE, side, (side // PATCH // 2) ** 2


def qwen3_vl_checkpoint(path: str):
    """(path, stock architecture, image placeholder, image side): 4 vision blocks x 64 (full attention
    in every block, DeepStack features of blocks 1 and 2), Qwen3 4 layers x 256."""
    sys.path.insert(0, TESTS)
    import checkpoints
    from transformers import Qwen2Config

    side, patch = 512, 16
    vision = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=256,
                  deepstack_visual_indexes=[1, 2], patch_size=patch, spatial_merge_size=2, temporal_patch_size=2,
                  num_position_embeddings=1024)
    text = Qwen2Config(vocab_size=checkpoints.VOCAB_SIZE, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    checkpoints.qwen3_vl(path, vision=vision, text_config=text, max_pixels=side * side)
    return path, "Qwen3VLForConditionalGeneration", checkpoints.QWEN_IMAGE, side, (side // patch // 2) ** 2


CHECKPOINTS = {"llava": llava_checkpoint, "qwen2_5_vl": qwen2_5_vl_checkpoint, "qwen3_vl": qwen3_vl_checkpoint}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags"))
        isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
        return f"{name} ({isa}), {os.cpu_count()} logical CPUs"
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(CHECKPOINTS), default="llava")
    parser.add_argument("--images", type=int, default=4, help="pictures per request")
    parser.add_argument("--keep", type=int, default=64, help="VisPruner tokens kept per image (of 576 / 256)")
    parser.add_argument("--batch", type=int, default=4, help="requests submitted together for requests/s")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image
    from vllm import LLM, SamplingParams

    from vtprune_kernels.integrations.vllm import hf_overrides

    rng = np.random.default_rng(0)
    path, architecture, placeholder, side, visual_tokens = CHECKPOINTS[args.model](tempfile.mkdtemp(prefix="vtprune-vllm-bench-"))

    def pictures(n):
        return [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(n)]

    def request():
        return {"prompt": "USER: " + f"{placeholder}\n" * args.images + "Describe the pictures. ASSISTANT:",
                "multi_modal_data": {"image": pictures(args.images)}}

    common = dict(model=path, dtype="float32", enforce_eager=True, max_model_len=4096, max_num_seqs=args.batch,
                  max_num_batched_tokens=4096, limit_mm_per_prompt={"image": args.images, "video": 0},
                  enable_prefix_caching=False,
                  mm_processor_cache_gb=0, seed=0)
    engines = {
        "unpruned": LLM(**common),
        f"VisPruner keep={args.keep}": LLM(**common, hf_overrides=hf_overrides(architecture, "vispruner", args.keep)),
    }
    first = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True, detokenize=False)
    many = SamplingParams(max_tokens=args.new_tokens, temperature=0.0, ignore_eos=True, detokenize=False)
    best = {name: {"ttft_s": float("inf"), "requests_per_s": 0.0, "prompt_tokens": None} for name in engines}
    for llm in engines.values():  # warm-up
        llm.generate([request()], first, use_tqdm=False)
    for _ in range(args.rounds):
        for name, llm in engines.items():
            start = time.perf_counter()
            (out,) = llm.generate([request()], first, use_tqdm=False)
            best[name]["ttft_s"] = min(best[name]["ttft_s"], time.perf_counter() - start)
            best[name]["prompt_tokens"] = len(out.prompt_token_ids)
            start = time.perf_counter()
            llm.generate([request() for _ in range(args.batch)], many, use_tqdm=False)
            best[name]["requests_per_s"] = max(best[name]["requests_per_s"], args.batch / (time.perf_counter() - start))

    machine = cpu_name()
    shape = {"llava": "LLaVA-1.5", "qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL"}[args.model]
    print(f"vLLM CPU engine, {shape}-shaped random checkpoint, {args.images} x {side} px images per request "
          f"({visual_tokens} visual tokens each), best of {args.rounds} alternating rounds; {machine}")
    print(f"{'engine':<22} {'prompt tokens':>13} {'TTFT ms':>9} {'requests/s':>11}")
    base = best["unpruned"]
    for name, r in best.items():
        speed = f"  ({base['ttft_s'] / r['ttft_s']:.2f}x TTFT, {r['requests_per_s'] / base['requests_per_s']:.2f}x req/s)"
        print(f"{name:<22} {r['prompt_tokens']:>13} {r['ttft_s'] * 1e3:>9.1f} {r['requests_per_s']:>11.2f}"
              + (speed if r is not base else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": best}, f, indent=1)


if __name__ == "__main__":
    main()
