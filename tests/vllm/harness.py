"""Running the same requests through vLLM (pruned architecture) and through transformers + ``apply()``.

``Engine`` starts one in-process vLLM engine on a tiny checkpoint with the switch on; ``greedy``
returns the generated token ids of several prompts submitted together; ``selections`` reads (and
clears) the pruned model's log of kept indices. ``reference`` runs the same prompt and images
through the transformers model of the checkpoint under ``vtprune_kernels.apply`` and returns its
greedy tokens and ``last_selection``.
"""
from __future__ import annotations

import gc
import operator
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

# chunked prefill: every test prompt is longer than this many tokens
TOKEN_BUDGET = 32
MAX_NEW_TOKENS = 6


def image(width: int, height: int, seed: int) -> Image.Image:
    """A random RGB picture (smooth enough that neighbouring patches differ, never constant)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


class Engine:
    """One vLLM engine (in-process) serving ``path`` with ``hf_overrides``."""

    def __init__(self, path: str, hf_overrides: dict, *, max_images: int = 2, **engine_args):
        from vllm import LLM

        self.llm = LLM(
            model=path,
            dtype="float32",
            enforce_eager=True,
            max_model_len=512,
            max_num_batched_tokens=TOKEN_BUDGET,
            max_num_seqs=4,
            limit_mm_per_prompt={"image": max_images},
            hf_overrides=hf_overrides,
            seed=0,
            **engine_args,
        )

    def greedy(self, requests: Sequence[Tuple[str, List[Image.Image]]]) -> List[Tuple[List[int], int]]:
        """Per request (prompt text, images): (generated token ids, prompt length in tokens)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=MAX_NEW_TOKENS, temperature=0.0, ignore_eos=True, detokenize=False)
        prompts = [{"prompt": text, "multi_modal_data": {"image": images}} for text, images in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [(list(o.outputs[0].token_ids), len(o.prompt_token_ids)) for o in outputs]

    def selections(self) -> List[List[int]]:
        """Kept indices of each image encoded since the last call (oldest first); clears the log."""
        (log,) = self.llm.apply_model(operator.methodcaller("vtprune_selections", True))
        return [s.tolist() for s in log]

    def close(self):
        del self.llm
        gc.collect()
        from vllm.distributed import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()


def reference(model, processor, method, text: str, images: List[Image.Image]) -> Tuple[List[int], List[List[int]]]:
    """(greedy tokens, per-image kept indices) of transformers + ``apply(model, method)`` on the
    prompt as the checkpoint's processor builds it (image placeholders expanded to full counts)."""
    from vtprune_kernels import Random, apply

    if isinstance(method, Random):  # a fresh generator, as vLLM's per-image selection (encoder_pruning.py)
        method = Random(method.keep, seed=method.seed)
    inputs = processor(text=[text], images=images, return_tensors="pt")
    model.generation_config.eos_token_id = None  # as vLLM's ignore_eos
    with torch.no_grad(), apply(model, method) as handle:
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=0)
    return out[0, -MAX_NEW_TOKENS:].tolist(), [s.tolist() for s in handle.last_selection]
