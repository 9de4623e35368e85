"""Independent hand-pruned pipeline for ERNIE 4.5-VL (tests/test_integration_ernie4_5_vl.py).

Nothing here uses ``vtprune_kernels.integrations``:
- scores: dense softmax maps recomputed from each scored block's attention inputs (qwen_oracles'
  ``eager_patch_scores``: its own ``qkv`` and rotary function, per frame), head and row mean, averaged
  over each merged token's 4 patches; a video pair: the mean of its two frames;
- features: the tower's own output (``last_hidden_state``, after ``ln``) 4 patches per row; a video
  pair: its two frames' rows side by side;
- selection: the methods' own ``select``, images grouped by merged grid, then frame pairs by grid;
- language model: the model's own unpruned ``inputs_embeds`` (``get_image_features`` /
  ``get_video_features`` on every token, scattered), ``get_rope_index`` positions and the processor's
  ``moe_mm_token_type_ids``, from which the pruned columns are dropped, run through
  ``language_model`` + ``lm_head``.
"""
from __future__ import annotations

import functools
from typing import List

import torch

import qwen_oracles
from integration_oracles import method_keep
from qwen_oracles import eager_patch_scores, method_layers
from vtprune_kernels.methods import Random


def media_of_call(inputs: dict) -> List[dict]:
    """Per image, then per video: its patches, grid and kind."""
    media = []
    for pixels_key, grid_key, kind in (("pixel_values", "image_grid_thw", "image"), ("pixel_values_videos", "video_grid_thw", "video")):
        if inputs.get(pixels_key) is None:
            continue
        first = 0
        for grid in inputs[grid_key]:
            n = int(grid.prod())
            media.append(dict(pixels=inputs[pixels_key][first : first + n], grid=grid, kind=kind))
            first += n
    return media


def hand_keep(model, method, media: List[dict]) -> List[tuple]:
    """[(bool keep over the item's language-model tokens, kind)] per media entry. Random draws from one
    fresh ``Random(keep, seed)`` for all groups, as the pruned call does."""
    if isinstance(method, Random):
        method = Random(method.keep, seed=method.seed)
    layers = method_layers(model, method)
    tower = model.model.vision_tower
    units = []  # (entry, unit, key, scores [N], features [N, F*4C])
    for e, item in enumerate(media):
        t, h, w = item["grid"].tolist()
        N = (h // 2) * (w // 2)
        with torch.no_grad():
            hidden = tower(item["pixels"], grid_thw=item["grid"][None]).last_hidden_state
        features = hidden.reshape(t, N, -1)  # per frame, per merged token: its 4 patches' rows
        scores = eager_patch_scores(model, item["pixels"], item["grid"][None], layers).view(t, N, 4).mean(-1) if layers else None
        if item["kind"] == "video":  # frame pairs: features side by side, scores averaged
            features = torch.cat([features[0::2], features[1::2]], dim=-1)
            scores = None if scores is None else (scores[0::2] + scores[1::2]) / 2
        for u in range(features.shape[0]):
            units.append((e, u, (h // 2, w // 2, item["kind"]), None if scores is None else scores[u], features[u]))
    keep = [torch.zeros(units_of(item), dtype=torch.bool) for item in media]
    for key in dict.fromkeys(u[2] for u in units):
        group = [u for u in units if u[2] == key]
        received = None if not layers else torch.stack([u[3] for u in group])
        mask = method_keep(method, grid=key[:2], received=received, features=torch.stack([u[4] for u in group]), batch=len(group), replay=False)
        N = key[0] * key[1]
        for (e, u, *_), row in zip(group, mask):
            keep[e][u * N : (u + 1) * N] = row
    return [(k, item["kind"]) for k, item in zip(keep, media)]


def units_of(item: dict) -> int:
    """Language-model tokens of one media entry (a video: t/2 frame pairs)."""
    t, h, w = item["grid"].tolist()
    return (t // 2 if item["kind"] == "video" else t) * (h // 2) * (w // 2)


def hand_logits(model, inputs: dict, keep, extra_tokens: torch.Tensor = None):
    """(logits [B, S', V], kept column mask [B, S']) of the hand-pruned, left-padded prompt; ``extra_tokens``
    [B, T] appended (generation steps) at positions max + 1, max + 2, ... per row, routed as text."""
    inner = model.model
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    tokens = {"image": model.config.image_token_id, "video": model.config.video_token_id}
    with torch.no_grad():
        embeds = inner.get_input_embeddings()(ids)
        for kind, pixels, grid, features in (
            ("image", "pixel_values", "image_grid_thw", inner.get_image_features),
            ("video", "pixel_values_videos", "video_grid_thw", inner.get_video_features),
        ):
            if inputs.get(pixels) is not None:
                embeds[ids == tokens[kind]] = torch.cat(features(inputs[pixels], inputs[grid]).pooler_output)
        positions, _ = inner.get_rope_index(
            ids, inputs["mm_token_type_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), mask
        )
    moe = inputs.get("moe_mm_token_type_ids")
    survive = mask.bool().clone()
    for kind, token in tokens.items():
        entries = [k for k, k_kind in keep if k_kind == kind]
        if entries:
            survive[ids == token] = torch.cat(entries)
    B = ids.shape[0]
    rows = [survive[b].nonzero().flatten() for b in range(B)]
    T = 0 if extra_tokens is None else extra_tokens.shape[1]
    width = max(len(r) for r in rows) + T
    new_embeds = torch.zeros(B, width, embeds.shape[-1])
    new_pos = torch.zeros(3, B, width, dtype=torch.long)
    new_mask = torch.zeros(B, width, dtype=torch.long)
    new_moe = torch.zeros(B, width, dtype=torch.long)
    for b, cols in enumerate(rows):
        target = slice(width - len(cols) - T, width - T)
        new_embeds[b, target] = embeds[b, cols]
        new_pos[:, b, target] = positions[:, b, cols]
        new_mask[b, target.start :] = 1
        if moe is not None:
            new_moe[b, target] = moe[b, cols]
        if T:
            new_embeds[b, width - T :] = inner.get_input_embeddings()(extra_tokens[b])
            new_pos[:, b, width - T :] = positions[:, b, cols].max() + 1 + torch.arange(T)
    with torch.no_grad():
        hidden = inner.language_model(
            inputs_embeds=new_embeds, attention_mask=new_mask, position_ids=new_pos,
            moe_mm_token_type_ids=None if moe is None else new_moe,
        ).last_hidden_state
        return model.lm_head(hidden), new_mask


# the Qwen oracles' assertions with this hand pipeline
assert_forward_matches_hand = functools.partial(qwen_oracles.assert_forward_matches_hand, hand=hand_logits)
assert_generate_matches_hand = functools.partial(qwen_oracles.assert_generate_matches_hand, hand=hand_logits)
