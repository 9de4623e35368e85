"""Independent hand-pruned pipeline for the Qwen-VL models (tests/test_integration_qwen_vl.py), EXAONE 4.5 and
PaddleOCR-VL (whose raster-order patches are regrouped per 2x2 block as its projector groups them).

Nothing here uses ``vtprune_kernels.integrations``:
- scores: dense softmax maps recomputed from each scored attention module's inputs (its own
  ``qkv`` and the model file's ``apply_rotary_pos_emb_vision``), per attention segment
  (``cu_seqlens``), head mean and row mean, un-permuted with the model's own ``argsort(window_index)``,
  then averaged over each merged token's 4 consecutive patches;
- features: the model's own ``get_image_features`` / ``get_video_features`` on every token (its
  merger and DeepStack mergers on all tokens), rows picked afterwards;
- selection: the methods' own ``select`` on frames grouped by merged grid (images, then videos);
- language model: the model's own unpruned ``inputs_embeds`` (placeholders scattered), its
  ``get_rope_index`` positions and DeepStack inputs, from which the pruned columns are dropped,
  run through ``language_model`` + ``lm_head``.
"""
from __future__ import annotations

import inspect
import sys
from typing import Dict, List, Sequence, Tuple

import torch

from integration_oracles import BACKEND, method_keep
from vtprune_kernels.methods import HIVTP, Random, Uniform, VisPruner

# GLM-4V classes (GLM-4.1V / 4.5V / 4.6V): each video frame is written and encoded as an image
GLM_CLASSES = ("Glm4v", "Glm46V", "GlmOcr")
# models whose language model numbers the prompt's columns (1-D positions), not M-RoPE
ONE_D_POSITION_CLASSES = ("Exaone4_5_ForConditionalGeneration",)
# PaddleOCR-VL: a NaViT tower (encoder.layers, self_attn with q/k/v projections) seeing raster-order patches
PADDLE_CLASS = "PaddleOCRVLForConditionalGeneration"


def _is_paddle(model) -> bool:
    return type(model).__name__ == PADDLE_CLASS


def _blocks(model):
    visual = _visual(model)
    return visual.vision_model.encoder.layers if _is_paddle(model) else visual.blocks


def _attention(model, layer):
    block = _blocks(model)[layer]
    return block.self_attn if _is_paddle(model) else block.attn


def _run_visual(model, pixels, grid_thw):
    with torch.no_grad():
        if _is_paddle(model):  # as its get_image_features calls it: one packed row
            model.model.visual(pixel_values=pixels.unsqueeze(0), grid_thw=grid_thw)
        else:
            _visual(model)(pixels, grid_thw=grid_thw)


def _raster_to_blocks(model, x, grid_thw):
    """PaddleOCR-VL: per-patch rows [S, ...] of raster-order images, regrouped per 2x2 block as its
    projector groups them (reshape (t, h/2, 2, w/2, 2), swap the middle axes); others: unchanged."""
    if not _is_paddle(model):
        return x
    parts, first = [], 0
    for t, h, w in grid_thw.tolist():
        n = t * h * w
        part = x[first : first + n].reshape(t, h // 2, 2, w // 2, 2, *x.shape[1:]).transpose(2, 3)
        parts.append(part.reshape(n, *x.shape[1:]))
        first += n
    return torch.cat(parts)


def _visual(model):
    """The vision tower: ``model.model.visual`` (ERNIE 4.5-VL: ``vision_tower``)."""
    visual = getattr(model.model, "visual", None)
    return model.model.vision_tower if visual is None else visual


def _rotary(model):
    return sys.modules[type(_attention(model, 0)).__module__].apply_rotary_pos_emb_vision


def eager_patch_scores(model, pixels, grid_thw, layers: Sequence[int]) -> torch.Tensor:
    """float [S]: per patch (processor order), received attention averaged over ``layers``, heads and
    the rows of its attention segment."""
    visual = _visual(model)
    seen: Dict[int, Tuple] = {}
    hooks = [
        _attention(model, l).register_forward_pre_hook(
            lambda m, args, kwargs, l=l: seen.__setitem__(l, (args[0], kwargs)), with_kwargs=True
        )
        for l in layers
    ]
    try:
        _run_visual(model, pixels, grid_thw)
    finally:
        for h in hooks:
            h.remove()
    rotate = _rotary(model)
    per_layer = []
    for l in layers:
        hidden, kwargs = seen[l]
        attn = _attention(model, l)
        S = hidden.shape[0]
        if hasattr(attn, "q_proj"):  # PaddleOCR-VL: separate projections named as SigLIP's
            q, k = attn.q_proj(hidden).reshape(S, attn.num_heads, -1), attn.k_proj(hidden).reshape(S, attn.num_heads, -1)
        elif hasattr(attn, "kv_dim"):  # EXAONE 4.5: grouped-query attention, key heads repeated for their query heads
            q, k, _ = attn.qkv(hidden).split([attn.q_dim, attn.kv_dim, attn.kv_dim], dim=-1)
            q = q.reshape(S, attn.num_heads, -1)
            k = k.reshape(S, attn.num_key_value_heads, -1).repeat_interleave(attn.num_key_value_groups, dim=1)
        elif hasattr(attn, "qkv"):
            q, k, _ = attn.qkv(hidden).reshape(S, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        else:  # Qwen2.5-Omni: separate q, k, v projections
            q, k = attn.q(hidden).reshape(S, attn.num_heads, -1), attn.k(hidden).reshape(S, attn.num_heads, -1)
        if hasattr(attn, "q_norm"):  # GLM-OCR: per-head RMS norms on q and k before the rotary embedding
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = rotate(q, k, *kwargs["position_embeddings"])
        bounds = kwargs["cu_seqlens"].tolist()
        received = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            qa, ka = q[a:b].transpose(0, 1).double(), k[a:b].transpose(0, 1).double()
            maps = torch.softmax(qa @ ka.transpose(1, 2) * attn.scaling, dim=-1)  # [H, L, L]
            received.append(maps.mean(dim=(0, 1)))
        per_layer.append(torch.cat(received))
    scores = torch.stack(per_layer).mean(0)
    if hasattr(visual, "window_size"):
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(grid_thw, visual.spatial_merge_size, visual.window_size, visual.patch_size)
        scores = scores.view(-1, 4)[torch.argsort(window_index)].flatten()
    return _raster_to_blocks(model, scores, grid_thw).float()


def last_hidden_in_merge_order(model, pixels, grid_thw) -> torch.Tensor:
    """[S/4, 4C]: the last block's output, un-permuted by the model's reverse indices, 4 patches per row."""
    visual = _visual(model)
    seen = []
    hook = _blocks(model)[-1].register_forward_hook(lambda m, args, out: seen.append(out))  # GLM-4V's last_hidden_state is merged
    try:
        _run_visual(model, pixels, grid_thw)
    finally:
        hook.remove()
    hidden = _raster_to_blocks(model, seen[0], grid_thw)
    if hasattr(visual, "window_size"):
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(grid_thw, visual.spatial_merge_size, visual.window_size, visual.patch_size)
        return hidden.view(-1, 4, hidden.shape[-1])[torch.argsort(window_index)].flatten(1)
    return hidden.reshape(-1, 4 * hidden.shape[-1])


def method_layers(model, method) -> Tuple[int, ...]:
    """The layers the test expects a method to score on this tiny model (explicit in the tests)."""
    if isinstance(method, VisPruner):
        depth = len(_blocks(model))
        return (method.score_layer % depth,) if method.score_layer is not None else (depth - 1,)
    if isinstance(method, HIVTP):
        return method.layers
    return ()


def hand_keep(model, method, media: List[dict]) -> List[torch.Tensor]:
    """Per media entry (images first, then videos), bool keep over its merged tokens. Random draws
    from one fresh ``Random(keep, seed)`` for all groups, as the pruned call does."""
    if isinstance(method, Random):
        method = Random(method.keep, seed=method.seed)
    layers = method_layers(model, method)
    frames = []  # (entry, frame, grid, scores [N], features [N, 4C])
    for e, item in enumerate(media):
        t, h, w = item["grid"].tolist()
        grid = item["grid"][None]
        if item["kind"] == "video" and type(model).__name__.startswith(GLM_CLASSES):
            grid = torch.tensor([[1, h, w]] * t)  # GLM-4V's tower encodes each video frame as an image
        scores = eager_patch_scores(model, item["pixels"], grid, layers) if layers else None
        merged_scores = None if scores is None else scores.view(-1, 4).mean(-1)
        features = last_hidden_in_merge_order(model, item["pixels"], grid)
        N = (h // 2) * (w // 2)
        for f in range(t):
            part = slice(f * N, (f + 1) * N)
            frames.append((e, f, (h // 2, w // 2), None if merged_scores is None else merged_scores[part], features[part]))
    keep = [torch.zeros(int(item["grid"].prod()) // 4, dtype=torch.bool) for item in media]
    grids = list(dict.fromkeys(fr[2] for fr in frames))
    for grid in grids:
        group = [fr for fr in frames if fr[2] == grid]
        received = None if layers == () else torch.stack([fr[3] for fr in group])
        features = torch.stack([fr[4] for fr in group])
        mask = method_keep(method, grid=grid, received=received, features=features, batch=len(group), replay=False)
        N = grid[0] * grid[1]
        for (e, f, *_), row in zip(group, mask):
            keep[e][f * N : (f + 1) * N] = row
    return keep


def hand_keep_of_call(model, method, inputs: dict):
    """``hand_keep`` of a call's images (``pixel_values`` / ``image_grid_thw``) then its ONE video, as
    [(keep, modality)] for ``hand_logits``."""
    media, first = [], 0
    for grid in inputs["image_grid_thw"]:
        n = int(grid.prod())
        media.append(dict(pixels=inputs["pixel_values"][first : first + n], grid=grid, kind="image"))
        first += n
    if inputs.get("pixel_values_videos") is not None:
        media.append(dict(pixels=inputs["pixel_values_videos"], grid=inputs["video_grid_thw"][0], kind="video"))
    keep = hand_keep(model, method, media)
    return [(k, m["kind"]) for k, m in zip(keep, media)]


def placeholder_tokens(model):
    """((modality, placeholder token id), ...): GLM-4V writes video frames with the image token."""
    video = model.config.image_token_id if type(model).__name__.startswith(GLM_CLASSES) else model.config.video_token_id
    return (("image", model.config.image_token_id), ("video", video))


def hand_logits(model, inputs: dict, keep: List[torch.Tensor], extra_tokens: torch.Tensor = None):
    """(logits [B, S', V], kept column mask [B, S]) of the hand-pruned prompt; ``extra_tokens`` [B, T]
    appended after the prompt (generation steps) at positions max + 1, max + 2, ... per row."""
    inner = model.model
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        embeds = inner.get_input_embeddings()(ids)
        if inputs.get("input_features") is not None:  # Qwen2.5-Omni's audio, scattered as the model does
            audio = inner.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
            embeds[ids == model.config.audio_token_id] = audio.to(embeds.dtype)
        outputs = {}
        # grids: Qwen-VL's (t, h, w) per item, or MiniCPM-V 4.7's (h, w) per unit
        if inputs.get("pixel_values") is not None:
            outputs["image"] = inner.get_image_features(inputs["pixel_values"], inputs.get("image_grid_thw", inputs.get("target_sizes")))
        if inputs.get("pixel_values_videos") is not None:
            grids = inputs.get("video_grid_thw", inputs.get("target_sizes_videos"))
            outputs["video"] = inner.get_video_features(inputs["pixel_values_videos"], grids)
        visual = torch.zeros_like(ids, dtype=torch.bool)
        for modality, token in placeholder_tokens(model):
            if modality in outputs:
                where = ids == token
                embeds[where] = torch.cat(outputs[modality].pooler_output).to(embeds.dtype)
                visual |= where
        one_d = type(model).__name__ in ONE_D_POSITION_CLASSES
        positions = None if one_d else unpruned_positions(inner, inputs)
    # the kept columns: real text, and the kept placeholders (images first, then videos, flat order)
    survive = mask.bool().clone()
    flat_keep = []
    for modality, token in placeholder_tokens(model):
        entries = [k for k, kind in keep if kind == modality]
        if entries:
            survive[ids == token] = torch.cat(entries)
            flat_keep.append((modality, torch.cat(entries)))
    B = ids.shape[0]
    rows = [survive[b].nonzero().flatten() for b in range(B)]
    T = 0 if extra_tokens is None else extra_tokens.shape[1]
    width = max(len(r) for r in rows) + T
    D = embeds.shape[-1]
    new_embeds = torch.zeros(B, width, D)
    new_pos = torch.zeros(3, B, width, dtype=torch.long)
    new_mask = torch.zeros(B, width, dtype=torch.long)
    new_visual = torch.zeros(B, width, dtype=torch.bool)
    for b, cols in enumerate(rows):
        n = len(cols)
        target = slice(width - n - T, width - T)
        new_embeds[b, target] = embeds[b, cols]
        if not one_d:
            new_pos[:, b, target] = positions[:, b, cols]
        new_mask[b, width - n - T :] = 1
        new_visual[b, target] = visual[b, cols]
        if T:
            new_embeds[b, width - T :] = inner.get_input_embeddings()(extra_tokens[b])
            if not one_d:
                new_pos[:, b, width - T :] = positions[:, b, cols].max() + 1 + torch.arange(T)
    kwargs = {}
    deepstack_levels = getattr(next(iter(outputs.values())), "deepstack_features", None)
    if deepstack_levels is not None:
        # every level drops exactly the tokens the main features drop (visual positions in flat order)
        levels = []
        for level in range(len(deepstack_levels)):
            per_position = torch.zeros(int(visual.sum()), D)
            for modality, token in placeholder_tokens(model):
                if modality in outputs:
                    order = (ids[visual] == token)
                    per_position[order] = torch.cat(outputs[modality].deepstack_features[level])
            kept = survive[visual]
            levels.append(per_position[kept])
        kwargs = dict(visual_pos_masks=new_visual, deepstack_visual_embeds=levels)
    with torch.no_grad():
        if one_d:  # the model numbers the columns of the (left-padded) prompt itself
            new_pos = torch.arange(width)[None].expand(B, -1)
        hidden = inner.language_model(inputs_embeds=new_embeds, attention_mask=new_mask, position_ids=new_pos, **kwargs).last_hidden_state
        return model.lm_head(hidden), new_mask


def unpruned_positions(inner, inputs: dict) -> torch.Tensor:
    """[3, B, S]: the model's own ``get_rope_index`` on the unpruned prompt (Qwen-VL's arguments, Qwen2.5-Omni's:
    audio lengths, ``use_audio_in_video``, seconds per video grid, or MiniCPM-V 4.7's: units' target sizes)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if "target_sizes" in inspect.signature(inner.get_rope_index).parameters:
        positions, _ = inner.get_rope_index(
            ids, mm_token_type_ids=inputs["mm_token_type_ids"], target_sizes=inputs.get("target_sizes"),
            target_sizes_videos=inputs.get("target_sizes_videos"), attention_mask=mask,
        )
        return positions
    if "mm_token_type_ids" not in inspect.signature(inner.get_rope_index).parameters:
        audio = inputs.get("feature_attention_mask")
        positions, _ = inner.get_rope_index(
            ids, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), mask, bool(inputs.get("use_audio_in_video")),
            None if audio is None else audio.sum(1), inputs.get("video_second_per_grid"),
        )
        return positions
    rope_args = dict(
        input_ids=ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"), attention_mask=mask,
    )
    if inputs.get("second_per_grid_ts") is not None:
        rope_args["second_per_grid_ts"] = inputs["second_per_grid_ts"]
    positions, _ = inner.get_rope_index(**rope_args)
    return positions


def hand_greedy_logits(model, inputs, keep, new_tokens: torch.Tensor, hand=hand_logits):
    """Per generation step, logits [B, V] at the last position (the hand pipeline ``hand``, re-run per step)."""
    steps = []
    for t in range(new_tokens.shape[1]):
        logits, _ = hand(model, inputs, keep, new_tokens[:, :t] if t else None)
        steps.append(logits[:, -1])
    return steps


def assert_forward_matches_hand(model, method, inputs: dict, keep, drop: tuple = (), hand=hand_logits):
    """A pruned forward under ``apply(model, method)``: the logits of every real column equal the hand
    pipeline's (``hand``: ``hand_logits`` or a family's own) on the hand-kept columns ``keep``. ``drop``: input
    names left out of the pruned call (the hand pipeline still gets them). Returns the handle (its last selection)."""
    from vtprune_kernels import apply

    expected, expected_mask = hand(model, inputs, keep)
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        out = model(**{k: v for k, v in inputs.items() if k not in drop})
    assert out.logits.shape == expected.shape
    valid = expected_mask.bool()
    torch.testing.assert_close(out.logits[valid], expected[valid], atol=1e-4, rtol=1e-4)
    return handle


def assert_keeping_everything_is_unpruned(model, inputs: dict, keep: int):
    """VisPruner and Uniform keeping ``keep`` (every merged token of a frame) give the unpruned model's logits."""
    from vtprune_kernels import Uniform, VisPruner, apply

    with torch.no_grad():
        unpruned = model(**inputs).logits
        for method in (VisPruner(keep=keep, step=2), Uniform(keep=keep)):
            with apply(model, method, backend=BACKEND):
                torch.testing.assert_close(model(**inputs).logits, unpruned, atol=1e-5, rtol=1e-5)


def assert_generate_matches_hand(model, method, inputs: dict, keep, new_tokens: int = 3, hand=hand_logits):
    """Greedy ``generate`` under ``apply(model, method)``: every step's logits equal the hand
    pipeline's (``hand``) on the hand-kept columns ``keep`` (new tokens at the unpruned max position + 1, ...).
    Returns the generated sequences."""
    from vtprune_kernels import apply

    with torch.no_grad(), apply(model, method, backend=BACKEND):
        gen = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True)
    expected = hand_greedy_logits(model, inputs, keep, gen.sequences[:, -new_tokens:], hand)
    for got, want in zip(gen.logits, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    return gen.sequences


def assert_right_padded_forward_matches_hand(model, method, inputs: dict, keep):
    """A right-padded batch's pruned forward: each row's real-token logits equal the hand pipeline's
    (which left-pads). Returns the pruned call's prepared inputs."""
    from vtprune_kernels import apply

    expected, expected_mask = hand_logits(model, inputs, keep)
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        prepared = handle.prepare_inputs(**inputs)
        out = model(**inputs)
    for b, n in enumerate(expected_mask.sum(1).tolist()):
        torch.testing.assert_close(out.logits[b, :n], expected[b, -n:], atol=1e-4, rtol=1e-4)
    return prepared


__all__ = [
    "BACKEND", "eager_patch_scores", "hand_keep", "hand_logits", "hand_greedy_logits", "assert_forward_matches_hand",
    "assert_generate_matches_hand",
    "assert_right_padded_forward_matches_hand", "Random", "Uniform",
]
