"""Running the same requests through vLLM (pruned architecture) and through transformers + ``apply()``.

``Engine`` starts one in-process vLLM engine on a tiny checkpoint with the switch on; ``greedy``
returns the generated token ids of several prompts submitted together, ``prompt_logprobs`` the
log-probability of every prompt token; ``selections`` reads (and clears) the pruned model's log of
kept indices. ``reference`` runs the same prompt and images through the transformers model of the
checkpoint under ``vtprune_kernels.apply`` and returns its greedy tokens and ``last_selection``;
``reference_logprobs`` its prompt-token log-probabilities.
"""
from __future__ import annotations

import gc
import operator
from typing import List, Optional, Sequence, Tuple

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


def video(frames: int, width: int, height: int, seed: int, fps: float = 2.0):
    """(random RGB frames [frames, height, width, 3], metadata) as vLLM takes a decoded video."""
    rng = np.random.default_rng(seed)
    metadata = {
        "fps": fps, "duration": frames / fps, "total_num_frames": frames, "frames_indices": list(range(frames)),
        "video_backend": "opencv", "do_sample_frames": False,
    }
    return rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8), metadata


def audio(seconds: float, seed: int, sampling_rate: int = 16000):
    """(random mono samples float32 [seconds * sampling_rate], sampling_rate) as vLLM takes an audio clip."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * sampling_rate)) * 0.3).astype(np.float32), sampling_rate


class Engine:
    """One vLLM engine (in-process) serving ``path`` with ``hf_overrides``."""

    def __init__(self, path: str, hf_overrides: dict, *, max_images: int = 2, max_videos: int = 0, max_audios: int = 0,
                 dtype: str = "float32", **engine_args):
        from vllm import LLM

        limits = {"image": max_images, "video": max_videos, **({"audio": max_audios} if max_audios else {})}

        self.llm = LLM(
            model=path,
            dtype=dtype,
            enforce_eager=True,
            max_model_len=512,
            max_num_batched_tokens=TOKEN_BUDGET,
            max_num_seqs=4,
            limit_mm_per_prompt=limits,
            hf_overrides=hf_overrides,
            seed=0,
            **engine_args,
        )

    def greedy(self, requests: Sequence[Tuple[str, List[Image.Image]]], videos=None, audios=None) -> List[Tuple[List[int], int]]:
        """Per request (prompt text, images): (generated token ids, prompt length in tokens).
        videos: per request, a list of ``video(...)`` items (None: no videos); audios: of ``audio(...)`` clips."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=MAX_NEW_TOKENS, temperature=0.0, ignore_eos=True, detokenize=False)
        outputs = self.llm.generate(_prompts(requests, videos, audios), params, use_tqdm=False)
        return [(list(o.outputs[0].token_ids), len(o.prompt_token_ids)) for o in outputs]

    def prompt_logprobs(self, requests: Sequence[Tuple[str, List[Image.Image]]], videos=None, audios=None) -> List[List[float]]:
        """Per request: the log-probability of each prompt token after the first, as vLLM computes it
        (every position of the pruned prompt enters these)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False, prompt_logprobs=0)
        outputs = self.llm.generate(_prompts(requests, videos, audios), params, use_tqdm=False)
        return [[d[t].logprob for d, t in zip(o.prompt_logprobs[1:], o.prompt_token_ids[1:])] for o in outputs]

    def selections(self) -> List[List[int]]:
        """Kept indices of each image encoded since the last call (oldest first); clears the log."""
        (log,) = self.llm.apply_model(operator.methodcaller("vtprune_selections", True))
        return [s.tolist() for s in log]

    def close(self):
        del self.llm
        gc.collect()
        from vllm.distributed import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()


class ReferenceProcessor:
    """A processor for the reference model whose outputs leave the named entries out (Gemma 3's
    ``token_type_ids``: transformers attends bidirectionally inside an image with them, vLLM's CPU
    attention does not) and rename others (``renames``: vLLM's own InternVL processor names the tiles
    ``pixel_values_flat``, the HF-native model takes ``pixel_values``)."""

    def __init__(self, processor, drops=(), renames=None):
        self._processor, self._drops, self._renames = processor, drops, dict(renames or {})

    def __call__(self, *args, **kwargs):
        out = self._processor(*args, **kwargs)
        for name in self._drops:
            out.pop(name, None)
        for old, new in self._renames.items():
            if old in out:
                out[new] = out.pop(old)
        return out

    def __getattr__(self, name):
        return getattr(self._processor, name)


def _prompts(requests, videos, audios=None):
    prompts = []
    for i, (text, images) in enumerate(requests):
        data = {"image": images} if images else {}
        if videos is not None and videos[i]:
            data["video"] = videos[i]
        if audios is not None and audios[i]:
            data["audio"] = audios[i]
        prompts.append({"prompt": text, "multi_modal_data": data})
    return prompts


def _processed(processor, text: str, images, videos=None, audios=None):
    """The checkpoint processor's tensors for one prompt (videos: ``video(...)`` items, frames as given; audios:
    ``audio(...)`` clips); bfloat16 pixels (Llama 4's processor normalises in bfloat16) cast to the float32 models
    here, as vLLM casts."""
    extra = {"audio": [samples for samples, _ in audios]} if audios else {}
    if not videos:
        out = processor(text=[text], images=images, return_tensors="pt", **extra)
    else:
        from transformers.video_utils import VideoMetadata

        metadata = [VideoMetadata(**{k: v for k, v in m.items() if k != "do_sample_frames"}) for _, m in videos]
        out = processor(
            text=[text], images=images or None, videos=[f for f, _ in videos], video_metadata=metadata,
            do_sample_frames=False, return_tensors="pt", **extra,
        )
    for name, value in out.items():
        if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
            out[name] = value.float()
    return out


def reference(
    model, processor, method, text: str, images: List[Image.Image], videos=None, audios=None
) -> Tuple[List[int], List[List[int]]]:
    """(greedy tokens, per-image kept indices) of transformers + ``apply(model, method)`` on the
    prompt as the checkpoint's processor builds it (image placeholders expanded to full counts)."""
    from vtprune_kernels import Random, apply

    if isinstance(method, Random):  # a fresh generator, as vLLM's per-image selection (encoder_pruning.py)
        method = Random(method.keep, seed=method.seed)
    inputs = _processed(processor, text, images, videos, audios)
    model.generation_config.eos_token_id = None  # as vLLM's ignore_eos
    with torch.no_grad(), apply(model, method) as handle:
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=0)
    return out[0, -MAX_NEW_TOKENS:].tolist(), [s.tolist() for s in handle.last_selection]


def reference_logprobs(
    model, processor, method, text: str, images: List[Image.Image], videos=None, skip_targets=(), audios=None
) -> List[Optional[float]]:
    """The log-probability of each token of the pruned prompt after the first under transformers +
    ``apply(model, method)`` (one forward over the pruned prompt); None for tokens in ``skip_targets``."""
    from vtprune_kernels import apply

    inputs = _processed(processor, text, images, videos, audios)
    with torch.no_grad(), apply(model, method) as handle:
        pruned = handle.prepare_inputs(**inputs)
        logits = model(**pruned).logits[0].float()  # the unmodified model on the pruned inputs
    ids = pruned["input_ids"][0]
    logprobs = torch.log_softmax(logits[:-1], -1).gather(1, ids[1:, None])[:, 0].tolist()
    return [None if int(t) in skip_targets else p for t, p in zip(ids[1:], logprobs)]


def run_prompts(engine: Engine, prompts, logprobs: bool):
    """``engine.prompt_logprobs`` (``logprobs``) or ``engine.greedy`` on prompts (text, images, videos, audios)."""
    requests = [(text, images) for text, images, _, _ in prompts]
    videos, audios = [v for _, _, v, _ in prompts], [a for _, _, _, a in prompts]
    if logprobs:
        return engine.prompt_logprobs(requests, videos=videos, audios=audios)
    return engine.greedy(requests, videos=videos, audios=audios)


def worst(a, b) -> float:
    """The largest absolute difference of two equally long sequences of numbers."""
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


class VideoFps:
    """A checkpoint's processor that samples videos at ``fps`` (vLLM takes it from ``mm_processor_kwargs``)."""

    def __init__(self, processor, fps: float):
        self._processor, self._fps = processor, fps

    def __call__(self, *args, **kwargs):
        if kwargs.get("videos") is not None:
            kwargs["fps"] = self._fps
        return self._processor(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._processor, name)
