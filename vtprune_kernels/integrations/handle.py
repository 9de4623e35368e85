"""``apply(model, method)``: prune the visual tokens of a transformers 5.x VLM for every call.

While a handle is active, ``model(**inputs)`` / ``model.forward(...)`` and ``model.generate(**inputs)``
with processor-style inputs (N image placeholders per image, ``pixel_values``; Qwen-VL also
``pixel_values_videos``) are rewritten before they reach the unmodified model:

1. the family adapter runs the vision tower up to the needed layer, scoring the q/k (and the row
   log-sum-exp) that the tower's own attention kernel sees (``capture.py``: an attention function
   selected for the vision sub-config during the call, never attention maps), calls
   ``method.select_captured``, and projects the kept tokens;
2. the prompt surgery drops the pruned placeholders from ``input_ids`` / ``attention_mask`` /
   ``labels`` (padding side preserved, ``position_ids`` left to the model);
3. the model gets the kept features as ``mm_encoder_outputs={"image": ...}`` instead of ``pixel_values``
   (Qwen-VL: also ``"video"`` and DeepStack features, and ``position_ids`` holding the unpruned
   M-RoPE positions of the kept columns; see qwen_vl.py).

Calls without pixels (e.g. generate's decoding steps) pass through unchanged. The handle
installs two instance attributes on that model only (``forward`` and ``generate`` wrappers with the
originals' signatures; ``functools.wraps`` keeps ``inspect.signature`` working, which generate
relies on); ``remove()`` deletes them (or puts back instance attributes that were there before), so
the model is restored exactly. Nothing global is patched: two named attention functions are
registered in transformers' AttentionInterface at import (``"vtprune_capture"``, selected for the
vision sub-config only while a call's tower runs, its own implementation restored exactly after;
PTP's ``"vtprune_probe"``); see attention_capture.py and llm_probe.py for why that is harmless.

``generate`` returns what it returns without pruning: each row is the caller's own prompt
(``input_ids`` as passed, padding included) followed by the new tokens, so the usual
``out[:, inputs["input_ids"].shape[1]:]`` slices the new tokens. The model itself ran on the
shortened prompt, whose width is ``handle.last_prompt_length``; a returned cache
(``return_dict_in_generate=True``) holds that shortened prompt, and a streamer is fed it first.

Host synchronisation (CUDA): one per call, by design. The shortened prompt has as many
placeholders as the method kept, a count only the device knows, so the keep masks are read on the
host once, together with the prompt (``host_reads.HostReads``: every copy is asynchronous, one
stream synchronisation). Everything else (scores, selection, gathers of the kept features, the new
prompt's upload) is enqueued without waiting. Two cases read earlier, because host code needs the
prompt before the selection: PTP (its LLM probe slices each image's row of the prompt) and
LLaVA-NeXT with ``image_sizes`` on the GPU, Qwen-VL with ``image_grid_thw`` / ``video_grid_thw`` on
the GPU (the tile counts / grids decide what the tower sees; the unmodified model reads them the
same way); they synchronise twice. ``last_host_syncs`` reports the
count of the last call.
"""
from __future__ import annotations

import functools
import inspect
import threading
import warnings
from typing import List, Optional

import torch

from ..methods._device import from_host
from .host_reads import HostReads
from .prompt_surgery import locate_placeholders, plan_prompt
from .unpruned_copy import unpruned_deepcopy

# instance attributes a handle installs on its model (``__deepcopy__``: a deep copy made inside the
# block is an unpruned model, see unpruned_copy.py)
_INSTALLED = ("forward", "generate", "__deepcopy__")

_SUPPORTED = (
    "LlavaForConditionalGeneration (CLIP, SigLIP, DINOv2 or Pixtral vision tower)",
    "LlavaNextForConditionalGeneration (CLIP vision tower)",
    "LlavaNextVideoForConditionalGeneration (images and videos, CLIP vision tower)",
    "LlavaOnevisionForConditionalGeneration (images and videos)",
    "InternVLForConditionalGeneration",
    "Gemma3ForConditionalGeneration",
    "PaliGemmaForConditionalGeneration",
    "Mistral3ForConditionalGeneration (Mistral Small 3.1 / 3.2)",
    "LightOnOcrForConditionalGeneration (LightOnOCR)",
    "Llama4ForConditionalGeneration (Llama 4 Scout / Maverick)",
    "AyaVisionForConditionalGeneration",
    "Cohere2VisionForConditionalGeneration (Command A Vision)",
    "Lfm2VlForConditionalGeneration (LFM2-VL)",
    "MiniCPMV4_6ForConditionalGeneration (MiniCPM-V 4.6)",
    "MiniCPMV4_7ForConditionalGeneration (MiniCPM-V 4.7)",
    "Exaone4_5_ForConditionalGeneration (EXAONE 4.5)",
    "PaddleOCRVLForConditionalGeneration (PaddleOCR-VL)",
    "Gemma4ForConditionalGeneration (images and videos)",
    "Idefics3ForConditionalGeneration",
    "SmolVLMForConditionalGeneration",
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration (and Qwen3VLMoe)",
    "Qwen3_5ForConditionalGeneration (and Qwen3_5Moe)",
    "Glm4vForConditionalGeneration (and Glm4vMoe, Glm46V)",
    "GlmOcrForConditionalGeneration (GLM-OCR)",
    "Ernie4_5_VLMoeForConditionalGeneration (ERNIE 4.5-VL: images and videos)",
    "Qwen2_5OmniThinkerForConditionalGeneration, Qwen3OmniMoeThinkerForConditionalGeneration (the Omni thinkers: images and videos; audio passed through)",
)


QWEN_VL_CLASSES = (
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
    "Qwen3VLMoeForConditionalGeneration",
    "Qwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForConditionalGeneration",
    "Glm4vForConditionalGeneration",
    "Glm4vMoeForConditionalGeneration",
    "Glm46VForConditionalGeneration",
    "GlmOcrForConditionalGeneration",
)


# exact model class name -> (module of this package, its adapter class); imported when a model asks for it
_ADAPTERS_BY_CLASS = {
    "LlavaNextVideoForConditionalGeneration": ("llava_next_video", "LlavaNextVideoAdapter"),
    "PaliGemmaForConditionalGeneration": ("paligemma", "PaliGemmaAdapter"),
    "Gemma4ForConditionalGeneration": ("gemma4", "Gemma4Adapter"),
    "AyaVisionForConditionalGeneration": ("aya_vision", "AyaVisionAdapter"),
    "Cohere2VisionForConditionalGeneration": ("cohere2_vision", "Cohere2VisionAdapter"),
    "Exaone4_5_ForConditionalGeneration": ("exaone4_5", "Exaone45Adapter"),
    "PaddleOCRVLForConditionalGeneration": ("paddleocr_vl", "PaddleOCRVLAdapter"),
    "Ernie4_5_VLMoeForConditionalGeneration": ("ernie4_5_vl", "Ernie45VLAdapter"),
    "MiniCPMV4_6ForConditionalGeneration": ("minicpmv", "MiniCPMVAdapter"),
    "MiniCPMV4_7ForConditionalGeneration": ("minicpmv", "MiniCPMV47Adapter"),
    "Lfm2VlForConditionalGeneration": ("lfm2_vl", "Lfm2VlAdapter"),
    "Llama4ForConditionalGeneration": ("llama4", "Llama4Adapter"),
    "Mistral3ForConditionalGeneration": ("mistral3", "Mistral3Adapter"),
    "LightOnOcrForConditionalGeneration": ("mistral3", "LightOnOcrAdapter"),
    "Idefics3ForConditionalGeneration": ("idefics3", "Idefics3Adapter"),
    "SmolVLMForConditionalGeneration": ("idefics3", "Idefics3Adapter"),
    "Qwen2_5OmniThinkerForConditionalGeneration": ("qwen_omni", "QwenOmniAdapter"),
    "Qwen3OmniMoeThinkerForConditionalGeneration": ("qwen_omni", "QwenOmniAdapter"),
    **{name: ("qwen_vl", "QwenVLAdapter") for name in QWEN_VL_CLASSES},
}


def _adapter_for(model):
    import importlib

    from transformers import (
        Gemma3ForConditionalGeneration,
        InternVLForConditionalGeneration,
        LlavaForConditionalGeneration,
        LlavaNextForConditionalGeneration,
        LlavaOnevisionForConditionalGeneration,
    )

    entry = _ADAPTERS_BY_CLASS.get(type(model).__name__)
    if entry is not None:
        module, adapter = entry
        return getattr(importlib.import_module(f".{module}", __package__), adapter)(model)
    # the base classes below also take their subclasses
    if isinstance(model, LlavaNextForConditionalGeneration):
        from .llava_next import LlavaNextAdapter

        return LlavaNextAdapter(model)
    if isinstance(model, LlavaOnevisionForConditionalGeneration):
        from .llava_onevision import LlavaOnevisionAdapter

        return LlavaOnevisionAdapter(model)
    if isinstance(model, LlavaForConditionalGeneration) and type(model.model.vision_tower).__name__ == "PixtralVisionModel":
        from .mistral3 import PixtralLlavaAdapter

        return PixtralLlavaAdapter(model)
    if isinstance(model, LlavaForConditionalGeneration):
        from .llava import LlavaAdapter

        return LlavaAdapter(model)
    if isinstance(model, InternVLForConditionalGeneration):
        from .internvl import InternVLAdapter

        return InternVLAdapter(model)
    if isinstance(model, Gemma3ForConditionalGeneration):
        from .gemma3 import Gemma3Adapter

        return Gemma3Adapter(model)
    raise TypeError(
        f"vtprune_kernels.apply does not support {type(model).__name__}; supported models: " + "; ".join(_SUPPORTED)
    )


def _tensor_or_none(value) -> Optional[torch.Tensor]:
    return value if isinstance(value, torch.Tensor) else None


def _as_kwargs(signature: inspect.Signature, args, kwargs) -> dict:
    """Positional + keyword arguments of a call as one keyword dict (``**kwargs`` flattened)."""
    if not args:
        return dict(kwargs)
    bound = signature.bind_partial(*args, **kwargs)
    out = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def with_original_prompt(out, prompt: torch.Tensor, shortened_length: int):
    """``generate``'s output with the shortened prompt (the first ``shortened_length`` columns of
    every row) replaced by the caller's ``prompt`` [B, S]. ``out`` is a sequences tensor [B*n, L] or
    a generate output with ``sequences``; rows repeated by ``num_return_sequences`` / beams (n per
    sample, consecutive) get their sample's prompt."""
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    repeats = sequences.shape[0] // prompt.shape[0]
    prompt = prompt.to(device=sequences.device, dtype=sequences.dtype)
    if repeats != 1:
        prompt = prompt.repeat_interleave(repeats, dim=0)
    full = torch.cat([prompt, sequences[:, shortened_length:]], dim=1)
    if isinstance(out, torch.Tensor):
        return full
    out.sequences = full
    return out


class PruningHandle:
    """An active pruning of one model (from ``apply``). Context manager; ``remove()`` restores the model.

    last_selection: after a call with images, per image (in ``pixel_values`` order) an int64 tensor of
        the kept indices into that image's unpruned visual tokens, increasing. Index space: LLaVA:
        patch index in the tile's raster order (N = h*w); LLaVA-NeXT: tile * h*w + patch over the
        image's tiles in the tower's order (base tile first; newline tokens are not indexed, they are
        always kept); InternVL: tile * T + token over the image's tiles (thumbnail last), token = index
        on the pixel-shuffled grid of T tokens.
    last_num_tokens: per image, the size of that index space.
    last_num_newlines: per image, the newline tokens among its placeholders (LLaVA-NeXT keeps one
        per row of the unpadded grid; they are not counted in a method's ``keep``); 0 elsewhere.
    last_host_syncs: host synchronisations of the last call with images (1 by design; see the module doc).
    last_prompt_length: width of the shortened prompt (``input_ids.shape[1]``) that the model ran on
        in the last call with images.
    """

    def __init__(self, model, method, adapter, backend: str):
        self.model = model
        self.method = method
        self.backend = backend
        self._adapter = adapter
        self.last_selection: Optional[List[torch.Tensor]] = None
        self.last_num_tokens: Optional[List[int]] = None
        self.last_num_newlines: Optional[List[int]] = None
        self.last_host_syncs: Optional[int] = None
        self._warned_non_finite = False
        self.last_prompt_length: Optional[int] = None
        self._lock = threading.Lock()
        self._saved = {name: model.__dict__[name] for name in _INSTALLED if name in model.__dict__}
        self._active = True
        self._install()

    # -- installation -------------------------------------------------------------------------
    def _install(self):
        model = self.model
        original_forward = model.forward
        original_generate = model.generate
        forward_sig = inspect.signature(original_forward)
        generate_sig = inspect.signature(original_generate)

        @functools.wraps(original_forward)
        def forward(*args, **kwargs):
            call = _as_kwargs(forward_sig, args, kwargs)
            if not self._adapter.has_pixels(call):
                return original_forward(*args, **kwargs)
            return original_forward(**self.prepare_inputs(**call))

        @functools.wraps(original_generate)
        def generate(*args, **kwargs):
            call = _as_kwargs(generate_sig, args, kwargs)
            if not self._adapter.has_pixels(call):
                return original_generate(*args, **kwargs)
            if call.get("inputs") is not None:
                if call.get("input_ids") is not None:
                    raise ValueError("generate: pass the prompt as `inputs` or `input_ids`, not both")
                call["input_ids"] = call.pop("inputs")
            prompt = call["input_ids"]
            with torch.no_grad():
                pruned = self.prepare_inputs(**call)
            out = original_generate(**pruned)
            return with_original_prompt(out, prompt, pruned["input_ids"].shape[1])

        forward._vtprune_handle = self
        generate._vtprune_handle = self
        model.forward = forward
        model.generate = generate
        model.__deepcopy__ = functools.partial(unpruned_deepcopy, model, _INSTALLED, self._saved)

    def remove(self):
        """Restore the model exactly (idempotent)."""
        if not self._active:
            return
        for name in _INSTALLED:
            if name in self._saved:
                setattr(self.model, name, self._saved[name])
            else:
                self.model.__dict__.pop(name, None)
        self._active = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    # -- the rewrite -----------------------------------------------------------------------------
    def prepare_inputs(self, **inputs) -> dict:
        """The model inputs after pruning: input_ids / attention_mask / labels with the kept placeholder
        counts, ``mm_encoder_outputs`` holding the kept features, ``pixel_values`` (and the vision
        arguments it used) removed. Also updates ``last_selection``. Inputs without pixel_values are
        returned unchanged. One host synchronisation on CUDA (see the module doc)."""
        if not self._adapter.has_pixels(inputs):
            return dict(inputs)
        input_ids = inputs.get("input_ids")
        if input_ids is None or inputs.get("inputs_embeds") is not None:
            raise ValueError("pruning rewrites the prompt: pass input_ids (not inputs_embeds) together with pixel_values")
        if inputs.get("position_ids") is not None:
            raise ValueError("pruning shortens the prompt: leave position_ids=None (the model derives them)")
        if inputs.get("mm_encoder_outputs"):
            raise ValueError("pass either pixels or mm_encoder_outputs, not both")
        for name in ("past_key_values", "cache"):
            cache = inputs.get(name)
            if cache is not None and cache.get_seq_length() > 0:
                raise ValueError(f"pruning rewrites the prompt: it cannot continue from a filled {name}")

        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # the prompt's host copies start now; the adapter's one read of the keep masks completes them
        reads = HostReads(
            input_ids=input_ids,
            attention_mask=inputs.get("attention_mask"),
            labels=inputs.get("labels"),
            **{name: _tensor_or_none(inputs.get(name)) for name in self._adapter.host_inputs},
            # read with the keep masks (no extra sync): NaN/inf pixels make every score meaningless
            pixels_finite=self._adapter.pixels_finite(inputs),
        )
        pruned = self._adapter.prune(inputs, self.method, self.backend, reads)
        self._warn_non_finite(reads.get("pixels_finite"))
        # host bookkeeping on the host copies, then the new prompt goes up without a sync
        host_ids, host_mask = reads.get("input_ids"), reads.get("attention_mask")
        tokens = pruned.placeholder_tokens or [self._adapter.image_token_id] * len(pruned.placeholder_keep)
        entries = locate_placeholders(host_ids, tokens, [k.numel() for k in pruned.placeholder_keep])
        layout = plan_prompt(host_ids, host_mask, entries, pruned.placeholder_keep)
        out = {k: v for k, v in inputs.items() if k not in self._adapter.consumed_kwargs}
        out["input_ids"] = from_host(layout.gather(host_ids, self._pad_token_id(host_ids, host_mask)), input_ids.device)
        if layout.masked:
            dtype = host_mask.dtype if host_mask is not None else torch.long
            out["attention_mask"] = from_host(layout.attention_mask(dtype), input_ids.device)
        if inputs.get("labels") is not None:
            labels = reads.get("labels")
            if labels.shape != host_ids.shape:
                raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(host_ids.shape)}")
            out["labels"] = from_host(layout.gather(labels, -100), inputs["labels"].device)
        encoder_outputs = pruned.encoder_outputs
        if encoder_outputs is None:
            encoder_outputs = {"image": BaseModelOutputWithPooling(pooler_output=pruned.pooler_output)}
        out["mm_encoder_outputs"] = encoder_outputs
        self._adapter.finish(out, inputs, reads, layout)
        with self._lock:
            self.last_selection = pruned.selection
            self.last_num_tokens = pruned.num_tokens
            self.last_num_newlines = pruned.num_newlines or [0] * len(pruned.num_tokens)
            self.last_host_syncs = reads.syncs
            self.last_prompt_length = int(out["input_ids"].shape[1])
        return out

    def _warn_non_finite(self, finite: torch.Tensor):
        """Warn once per handle when pixel_values held NaN or inf (``finite``: host bool scalar)."""
        if bool(finite) or self._warned_non_finite:
            return
        self._warned_non_finite = True
        warnings.warn(
            "vtprune_kernels: pixel_values contain NaN or infinite values; the vision scores are not "
            "meaningful and the kept tokens are arbitrary (NaN scores rank last). Check the image "
            "preprocessing. (Warned once per pruning handle.)",
            RuntimeWarning,
            stacklevel=4,
        )

    def _pad_token_id(self, input_ids, attention_mask) -> int:
        """The padding token: the one in the padded positions, else the config's (host tensors)."""
        if attention_mask is not None and bool((attention_mask == 0).any()):
            return int(input_ids[attention_mask == 0][0])
        text = getattr(self.model.config, "text_config", self.model.config)
        pad = getattr(text, "pad_token_id", None)
        return 0 if pad is None else int(pad)


def _active_handle(model) -> Optional[PruningHandle]:
    """The handle installed on ``model`` by ``apply`` and not yet removed, else None."""
    return getattr(model.__dict__.get("forward"), "_vtprune_handle", None)


def _check_method(method):
    if isinstance(method, type):
        name = method.__name__
        raise TypeError(f"apply() takes a method object, e.g. {name}(...), not the class {name} itself")
    for attr in ("needs", "select_captured"):
        if not callable(getattr(method, attr, None)):
            raise TypeError(f"method must provide {attr}(...) (a vtprune_kernels.methods object), got {type(method).__name__}")


def _check_backend(backend, model):
    from ..ops import _ATTENTION_BACKENDS as known  # the backends attention_scores takes

    if backend not in known:
        raise ValueError(f"backend must be one of {known}, got {backend!r}")
    param = next(model.parameters(), None)
    device = torch.device("cpu") if param is None else param.device
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' runs the C++ CPU kernels, but the model is on {device}: use 'auto'")
    if backend == "triton":
        from .. import _library

        if not _library.HAS_TRITON:
            raise ValueError("backend='triton' needs the triton package: use 'auto'")
        from .._triton_backend import INTERPRETED

        if device.type != "cuda" and not INTERPRETED:  # the interpreter (TRITON_INTERPRET=1) runs on CPU tensors
            raise ValueError(f"backend='triton' runs on CUDA, but the model is on {device}: use 'auto'")


def apply(model, method, *, backend: str = "auto") -> PruningHandle:
    """Prune the visual tokens of ``model`` with ``method`` until the handle is removed.

    model: LlavaForConditionalGeneration (CLIP/SigLIP/DINOv2 tower), LlavaNextForConditionalGeneration,
        LlavaNextVideoForConditionalGeneration, LlavaOnevisionForConditionalGeneration, InternVLForConditionalGeneration, Gemma3ForConditionalGeneration,
        Gemma4ForConditionalGeneration (images, videos), PaliGemmaForConditionalGeneration, Mistral3ForConditionalGeneration,
        Llama4ForConditionalGeneration, AyaVisionForConditionalGeneration, Cohere2VisionForConditionalGeneration,
        Lfm2VlForConditionalGeneration, MiniCPMV4_6ForConditionalGeneration, Exaone4_5_ForConditionalGeneration,
        PaddleOCRVLForConditionalGeneration, Idefics3ForConditionalGeneration,
        SmolVLMForConditionalGeneration, Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration, Qwen3_5ForConditionalGeneration,
        Glm4vForConditionalGeneration or their MoE variants, Ernie4_5_VLMoeForConditionalGeneration (transformers 5.x). method: a ``vtprune_kernels.methods``
        object (``needs(has_cls)`` / ``select_captured(captured)``), e.g. ``VisPruner(keep=64)``.
        backend: forwarded to ``vtprune_kernels.ops.attention_scores`` ("auto", "cpu", "reference",
        "triton"); checked here against the model's device.

    Usage: ``with apply(model, VisPruner(keep=64)) as h: model.generate(**inputs)``; then
    ``h.last_selection``. Without a ``with`` block, ``h.remove()`` or
    ``vtprune_kernels.remove(model)`` restores the model.
    """
    if _active_handle(model) is not None:
        raise RuntimeError("this model already has an active vtprune_kernels handle: remove it first (vtprune_kernels.remove(model))")
    _check_method(method)
    _check_backend(backend, model)
    adapter = _adapter_for(model)
    return PruningHandle(model, method, adapter, backend)


def remove(model) -> bool:
    """Restore ``model`` from the ``apply`` handle it carries (when the handle itself was dropped).
    Returns True if a handle was removed, False if the model had none."""
    handle = _active_handle(model)
    if handle is None:
        return False
    handle.remove()
    return True
