"""Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP tower whose output is average-pooled.

Each image (or pan-and-scan crop: every crop is an image of its own in ``pixel_values``) is one
p x p patch grid (896 px / 14 = 64 x 64 on the released models); the projector average-pools it
k x k (4 x 4) to the t x t = ``mm_tokens_per_image`` (16 x 16 = 256) tokens the language model gets,
then normalises and projects each. The selection runs on those pooled tokens:

- scores: the tower's received attention (SigLIP has no [CLS]: VisPruner, like HIVTP, scores the
  attention each patch receives), pooled k x k with the projector's own pooling, as the features are;
- VisPruner's de-duplication compares the pooled tower features (the projector's pooled input, before
  its norm); the feature layer is the tower's output (``last_hidden_state``, post-layernorm);
- budgets per image: min(keep, t*t); HIVTP's regions and windows on the t x t grid;
- the kept features are rows of the projector's own output.

The language model attends bidirectionally inside each image's block of placeholders
(``token_type_ids`` 1); the pruned prompt's ``token_type_ids`` lose the same columns, so each image's
kept tokens stay one bidirectional block. Selection indices: raster indices into the t x t grid.
"""
from __future__ import annotations

import torch

from ..methods._device import from_host
from .adapter import PrunedImages, TowerAdapter, capture_vision, gather_rows, make_captured, require_vision_only, select


def pooled(projector, x: torch.Tensor) -> torch.Tensor:
    """[n, t*t, ...]: the projector's own k x k average pooling (``projector.avg_pool``) of per-patch
    values x [n, p*p, ...] (scores [n, p*p] or features [n, p*p, C]); transformers' and vLLM's
    Gemma 3 projectors alike."""
    n, p, t = x.shape[0], projector.patches_per_image, projector.tokens_per_side
    grid = x.reshape(n, p, p, -1).permute(0, 3, 1, 2)
    return projector.avg_pool(grid).flatten(2).transpose(1, 2).reshape(n, t * t, *x.shape[2:])


class Gemma3Adapter(TowerAdapter):
    """Prunes the images of one ``Gemma3ForConditionalGeneration`` call."""

    family = "Gemma3ForConditionalGeneration"
    consumed_kwargs = ("pixel_values",)
    host_inputs = ("token_type_ids",)
    token_type_inputs = ("token_type_ids",)  # per-token tensors the pruned prompt gathers (``finish``)

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[n, T, ...]: per-patch values x [n, P, ...] on the language model's token grid (the projector's
        pooling); ``token_grid`` is that grid's (h, w)."""
        return pooled(self.inner.multi_modal_projector, x)

    def token_grid(self, patches: int):
        side = self.inner.multi_modal_projector.tokens_per_side
        return side, side

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pixel_values = kwargs["pixel_values"]
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [num_images, C, H, W], got shape {tuple(pixel_values.shape)}")
        needs = self.resolved(method.needs(self.tower.has_cls), method)
        require_vision_only(needs, method, self.family)
        last = self.tower.num_layers - 1
        vis = capture_vision(self.tower, pixel_values, needs, feature_layer=last, backend=backend)
        hidden = self.tower.module.post_layernorm(vis.features)  # the tower's last_hidden_state
        grid = self.token_grid(hidden.shape[1])
        n, T = hidden.shape[0], grid[0] * grid[1]
        scores = None if vis.scores is None else self.to_tokens(vis.scores)
        features = self.to_tokens(hidden) if needs.features else None
        captured = make_captured(needs, grid, scores, features, batch_size=n, device=hidden.device)
        keep = select(method, captured, (n, T), backend)
        (keep,) = reads.fetch(keep)  # the call's host synchronisation: kept counts decide the prompt

        projected = self.inner.multi_modal_projector(hidden)  # [n, T, D]: the model's own image features
        kept = gather_rows(projected, keep)
        return PrunedImages(
            pooler_output=list(torch.split(kept, keep.sum(1).tolist())),
            placeholder_keep=list(keep),
            selection=[row.nonzero().flatten() for row in keep],
            num_tokens=[T] * n,
            encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=kept[None])},
        )

    def finish(self, out: dict, inputs: dict, reads, layout) -> None:
        """The pruned prompt's token types (``token_type_inputs``: ``token_type_ids``, Gemma 4's
        ``mm_token_type_ids``): the surviving columns (image blocks stay blocks)."""
        for name in self.token_type_inputs:
            types = reads.get(name)
            if types is not None:
                out[name] = from_host(layout.gather(types, 0), out["input_ids"].device)
