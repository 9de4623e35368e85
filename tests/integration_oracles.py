"""Independent hand-pruned pipelines for the integration tests (tests/test_integration_*.py).

Nothing here uses ``vtprune_kernels.integrations``: scores come from EAGER attention maps of a
deep copy of the model (``output_attentions=True`` is allowed in tests only), selections from the
methods' own ``select(...)``, and the language model runs on ``inputs_embeds`` built by walking the
prompt token by token.
"""
from __future__ import annotations

import copy
from typing import List, Sequence

import torch

import vtprune_kernels  # noqa: F401  (registers torch.ops.vtprune.*)
from tiny_models import IMAGE_TOKEN
from vtprune_kernels.methods import HIVTP, PTP, Random, Uniform, VisPruner


# The integration forwards this to vtprune_kernels.ops (the C++ CPU kernels on CPU tensors); the
# capture tests also run the "reference" backend.
BACKEND = "auto"


def eager_copy(model):
    """A deep copy of the model running eager attention (so it can return attention maps)."""
    clone = copy.deepcopy(model)
    clone.set_attn_implementation("eager")
    return clone


def tower_maps(eager_model, pixel_values):
    """(hidden_states, attentions) of the eager copy's vision tower: every layer run, every map kept."""
    out = eager_model.model.vision_tower(pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    return out.hidden_states, out.attentions


def cls_attention(attn: torch.Tensor) -> torch.Tensor:
    """[B, N]: head-mean attention of the [CLS] row (row 0), [CLS] column dropped."""
    return attn[:, :, 0, 1:].mean(1)


def received_attention(attentions: Sequence[torch.Tensor], layers: Sequence[int], has_cls: bool) -> torch.Tensor:
    """[B, N]: attention received per key, averaged over layers, heads and all rows ([CLS] column dropped)."""
    mean = torch.stack([attentions[i].mean(dim=(1, 2)) for i in layers]).mean(0)
    return mean[:, 1:] if has_cls else mean


def pooled_2x2(x: torch.Tensor, grid) -> torch.Tensor:
    """[B, (h/2)*(w/2)]: per-patch scores [B, h*w] (raster order of the (h, w) patch grid) averaged over
    every 2x2 block, in raster order of the block grid (what a 2x2 merger or pixel shuffle groups)."""
    h, w = grid
    return torch.nn.functional.avg_pool2d(x.reshape(-1, 1, h, w), 2).reshape(x.shape[0], (h // 2) * (w // 2))


def blocks_2x2(x: torch.Tensor, grid) -> torch.Tensor:
    """[B, T, 4C]: the four patches of every 2x2 block of per-patch features [B, h*w, C] concatenated
    (cosine similarities do not see the channel order)."""
    h, w = grid
    B, _, C = x.shape
    return x.reshape(B, h // 2, 2, w // 2, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(B, (h // 2) * (w // 2), 4 * C)


def split_rows(values: Sequence, per_row: Sequence[int]) -> List[list]:
    """``values`` (one per image / tile, in call order) cut into consecutive rows of ``per_row[b]`` each (the
    per-row placeholder counts ``tiny_models.make_prompts`` takes)."""
    rows, first = [], 0
    for n in per_row:
        rows.append(list(values[first : first + n]))
        first += n
    return rows


def method_keep(
    method, *, grid, cls_attn=None, received=None, features=None, batch=None, valid=None, backend=BACKEND, replay=True
):
    """The method's own ``select`` on hand-computed inputs: bool [B, N] (``valid``: the tokens it may keep).
    Random (``replay=True``) draws from a fresh ``Random(keep, seed)``: the first draw of ``method``,
    which the pruned call then makes; ``replay=False`` draws from ``method`` itself (a caller that
    selects several groups of one call shares one fresh generator)."""
    if isinstance(method, Random):
        method = Random(method.keep, seed=method.seed) if replay else method
        return method.select(grid, batch, valid=valid, backend=backend)
    if isinstance(method, VisPruner):
        return method.select(cls_attn if cls_attn is not None else received, features, valid=valid, backend=backend)
    if isinstance(method, HIVTP):
        return method.select(received, grid, valid=valid, backend=backend)
    if isinstance(method, (Random, Uniform)):
        return method.select(grid, batch, valid=valid, backend=backend)
    raise TypeError(type(method))


def method_scores(method, attentions, feature_layer: int, has_cls: bool):
    """(cls_attn, received) the method would be given, from eager maps (0-based feature layer)."""
    if isinstance(method, VisPruner):
        layer = feature_layer if method.score_layer is None else range(len(attentions))[method.score_layer]
        if has_cls:
            return cls_attention(attentions[layer]), None
        return None, received_attention(attentions, [layer], has_cls)
    if isinstance(method, HIVTP):
        return None, received_attention(attentions, method.layers, has_cls)
    return None, None


def hand_logits(
    model, input_ids, attention_mask, image_features: List[torch.Tensor], image_token_id: int, other_runs=None, tail=None
):
    """Logits [B, W, V] and mask [B, W] of the language model on the hand-built shortened prompt.

    Each row's real tokens are walked in order; every maximal run of image placeholders is
    replaced by the next image's kept features (so an image's run must be contiguous and images
    must be separated by text, as processors do). ``other_runs`` ({token id: [features]}) does the
    same for other placeholder tokens (videos). ``tail`` [B, T]: tokens appended to every row as text
    (generated tokens, even one that happens to be a placeholder id). Rows are left-padded with zero
    embeddings.
    """
    embed = model.get_input_embeddings()
    runs = {image_token_id: list(image_features), **(other_runs or {})}
    used = {token: 0 for token in runs}
    rows = []
    for b in range(input_ids.shape[0]):
        ids = input_ids[b][attention_mask[b].bool()].tolist()
        pieces, j = [], 0
        while j < len(ids):
            token = ids[j]
            if token in runs:
                while j < len(ids) and ids[j] == token:
                    j += 1
                pieces.append(runs[token][used[token]])
                used[token] += 1
            else:
                pieces.append(embed(torch.tensor([ids[j]]))[0:1])
                j += 1
        if tail is not None:
            pieces.append(embed(tail[b]))
        rows.append(torch.cat([p.reshape(-1, p.shape[-1]) for p in pieces]))
    assert all(used[t] == len(f) for t, f in runs.items()), "prompt runs and images do not match"
    width = max(r.shape[0] for r in rows)
    embeds = torch.zeros(len(rows), width, rows[0].shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        embeds[b, width - r.shape[0]:] = r
        mask[b, width - r.shape[0]:] = 1
    language_model = getattr(model.model, "language_model", None) or model.model.text_model  # Idefics3: text_model
    hidden = language_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    return model.lm_head(hidden), mask


def assert_pruned_forward_matches(model, method, inputs: dict, image_features, selections, num_tokens, other_runs=None):
    """Run ``model(**inputs)`` under ``apply(model, method)``; its logits must equal the hand pipeline's
    (``image_features``: per image, the hand-pruned projected features; ``other_runs``: see
    ``hand_logits``) within 1e-4, and ``last_selection`` / ``last_num_tokens`` must equal
    ``selections`` / ``num_tokens``."""
    from vtprune_kernels import apply

    expected, expected_mask = hand_logits(
        model, inputs["input_ids"], inputs["attention_mask"], image_features, IMAGE_TOKEN, other_runs
    )
    with torch.no_grad(), apply(model, method, backend=BACKEND) as handle:
        out = model(**inputs)
    assert out.logits.shape == expected.shape
    valid = expected_mask.bool()
    torch.testing.assert_close(out.logits[valid], expected[valid], atol=1e-4, rtol=1e-4)
    assert [s.tolist() for s in handle.last_selection] == [list(s) for s in selections]
    assert handle.last_num_tokens == list(num_tokens)


def assert_matches_unmodified(model, method, inputs: dict, expected_inputs: dict, *, real=None, generate: bool = False):
    """``apply(model, method)`` on ``inputs`` against the UNMODIFIED model on ``expected_inputs`` (the
    prompt pruned by hand, the kept features as ``mm_encoder_outputs``): logits within 1e-4 (at the
    ``real`` positions, a bool [B, W], when given); with ``generate``, ``generate`` instead: the same 3
    greedy tokens and per-step logits. Returns the handle (its ``last_selection`` etc. describe the call)."""
    from vtprune_kernels import apply

    with torch.no_grad():
        if generate:
            args = dict(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
            expected = model.generate(**expected_inputs, **args)
            with apply(model, method, backend=BACKEND) as handle:
                got = model.generate(**inputs, **args)
            assert torch.equal(got.sequences[:, -3:], expected.sequences[:, -3:])
            for a, b in zip(got.logits, expected.logits):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
            return handle
        expected = model(**expected_inputs).logits
        with apply(model, method, backend=BACKEND) as handle:
            got = model(**inputs).logits
    assert got.shape == expected.shape
    if real is not None:
        got, expected = got[real], expected[real]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    return handle


def hand_greedy_logits(model, input_ids, attention_mask, image_features, image_token_id, new_tokens: torch.Tensor):
    """Per step, logits [B, V] at the last position after appending the given new tokens [B, T] one by one."""
    steps = []
    for t in range(new_tokens.shape[1] + 1):
        logits, _ = hand_logits(model, input_ids, attention_mask, image_features, image_token_id, tail=new_tokens[:, :t])
        steps.append(logits[:, -1])
    return steps[:-1]


def instruction_attention(eager_model, embeds: torch.Tensor, layer: int, num_instruction: int) -> torch.Tensor:
    """[S]: max over the last ``num_instruction`` rows of the head-mean attention at LLM block ``layer``
    (eager maps of the whole language model on one unpadded sequence of embeddings [1, S, D])."""
    out = eager_model.model.language_model(inputs_embeds=embeds, output_attentions=True)
    attn = out.attentions[layer][0]  # [H, S, S]
    return attn[:, -num_instruction:, :].mean(0).amax(0)


__all__ = [
    "BACKEND",
    "PTP",
    "eager_copy",
    "split_rows",
    "tower_maps",
    "cls_attention",
    "received_attention",
    "method_keep",
    "method_scores",
    "hand_logits",
    "assert_pruned_forward_matches",
    "hand_greedy_logits",
    "instruction_attention",
]
