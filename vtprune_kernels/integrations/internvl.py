"""InternVL (``InternVLForConditionalGeneration``): tiles + thumbnail, pixel shuffle, projector.

``pixel_values`` holds every tile of every image ([tiles, C, H, W], each image's tiles followed by
its thumbnail when it has more than one tile). Images are told apart by the prompt: each image is
one run of consecutive placeholders (the processor wraps it in <img> ... </img>) of
tiles_i * T tokens, T = tokens per tile after the pixel shuffle.

Pruning happens after the model's own ``pixel_shuffle`` (it needs the full square grid): the
selection is over the T post-shuffle tokens of each tile, and attention scores on the h x w patch
grid are pooled onto that grid by ``methods.pixel_shuffle_pool`` (the mean of the patches each
token merges, in the model's order). VisPruner/HIVTP/Random/Uniform select per tile (VisPruner's
diversity stage uses the post-shuffle, pre-projector features). PTP selects per image: [CLS] of
every tile at the feature layer (region budgets), [CLS]->patch attention at its vision layer
(pooled: b), and the instruction score c from ``llm_probe.instruction_scores`` on the unpruned
prompt of the image's row (up to the end of the instruction, ``llm_probe.instruction_span``),
sliced at the image's placeholders.

Selection indices: tile * T + token over the image's tiles (thumbnail last).
"""
from __future__ import annotations

from typing import List

import torch

from ..methods._device import from_host
from ..methods.pixel_shuffle_pooling import pixel_shuffle_pool
from .adapter import PrunedImages, TowerAdapter, capture_vision, gather_rows, make_captured, select, square_grid
from .llm_probe import end_of_turn_ids, instruction_scores, instruction_span
from .prompt_surgery import locate_images, placeholder_runs


class InternVLAdapter(TowerAdapter):
    """Prunes the images of one ``InternVLForConditionalGeneration`` call."""

    family = "InternVLForConditionalGeneration"
    consumed_kwargs = ("pixel_values", "vision_feature_layer", "vision_feature_select_strategy")

    def __init__(self, model):
        super().__init__(model)
        ratio = float(model.config.downsample_ratio)
        self.factor = round(1 / ratio)
        if abs(self.factor * ratio - 1) > 1e-9:
            raise ValueError(f"{self.family}: downsample_ratio={ratio} is not 1/integer")

    def tiles_per_image(self, input_ids: torch.Tensor, tokens_per_tile: int, total_tiles: int) -> List[int]:
        """Tiles of each image, from its run of placeholders (tiles * T consecutive tokens); input_ids on the host."""
        tiles = []
        for row, start, length in placeholder_runs(input_ids, self.image_token_id):
            if length % tokens_per_tile:
                raise ValueError(
                    f"row {row}: a run of {length} image placeholders at position {start} is not a whole number of "
                    f"tiles of {tokens_per_tile} tokens"
                )
            tiles.append(length // tokens_per_tile)
        if sum(tiles) != total_tiles:
            raise ValueError(f"the prompt's image placeholders make {sum(tiles)} tiles but pixel_values holds {total_tiles}")
        return tiles

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        cfg = self.model.config
        pixel_values = kwargs["pixel_values"]
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [tiles, C, H, W], got shape {tuple(pixel_values.shape)}")
        feature_layer_arg, layer, needs = self.vision_setup(kwargs, method, allow_probe=True)
        per_image = needs.llm_probe_layer is not None or needs.cls_embedding
        if per_image:
            # PTP selects per image and its LLM probe slices each image's row of the prompt: the host
            # reads the prompt now, before any work is enqueued (the call's first of two syncs)
            reads.get("input_ids")

        vis = capture_vision(self.tower, pixel_values.to(self.inner.dtype), needs, feature_layer=layer, backend=backend)
        features = vis.features
        if feature_layer_arg == -1:  # the model uses last_hidden_state, i.e. after the tower's final norm
            features = self.tower.final_norm(features)
        n_tiles, N, C = features.shape[0], features.shape[1] - 1, features.shape[2]
        h, w = square_grid(N, self.family)
        patches = self.inner.pixel_shuffle(features[:, 1:].reshape(n_tiles, h, w, C), scale_factor=cfg.downsample_ratio)
        shuffled = patches.reshape(n_tiles, -1, patches.shape[-1])  # [tiles, T, C * f^2]
        T = shuffled.shape[1]
        grid = (h // self.factor, w // self.factor)
        pooled = None if vis.scores is None else pixel_shuffle_pool(vis.scores[:, 1:], (h, w), self.factor)

        if per_image:
            tiles = self.tiles_per_image(reads.get("input_ids"), T, n_tiles)  # already on the host
            projected = self.inner.multi_modal_projector(shuffled)  # [tiles, T, D]: the probe needs every token
            c_scores = self._instruction_scores(kwargs, reads, projected, tiles, needs, backend)
            keeps, first = [], 0
            for S, c in zip(tiles, c_scores):
                captured = make_captured(
                    needs, grid, None, None,
                    cls_regions=features[first : first + S, 0],
                    b_scores=None if pooled is None else pooled[first : first + S],
                    c_scores=c,
                )
                keeps.append(select(method, captured, (S, T), backend))
                first += S
            (keep,) = reads.fetch(torch.cat(keeps))  # kept counts decide the prompt: read on the host
            kept = gather_rows(projected, keep)
        else:
            captured = make_captured(needs, grid, pooled, shuffled)
            keep = select(method, captured, (n_tiles, T), backend)
            (keep,) = reads.fetch(keep)  # the call's one host synchronisation: kept counts decide the prompt
            tiles = self.tiles_per_image(reads.get("input_ids"), T, n_tiles)  # read with the masks: no sync
            kept = self.inner.multi_modal_projector(gather_rows(shuffled, keep))  # [K, D], tile-major order

        per_tile = keep.sum(1)
        if bool((per_tile == per_tile[0]).all()):
            pooler = kept.view(n_tiles, int(per_tile[0]), kept.shape[-1])  # the model's own layout
        else:
            # Tiles keep different counts: one entry per token, [K, 1, D]. The model scatters it in the
            # same flat order, and generate's expansion (num_beams / num_return_sequences) can still
            # split it at sample boundaries (it splits between entries whose running count matches).
            pooler = kept[:, None]
        placeholder_keep, selection, first = [], [], 0
        for S in tiles:
            flat = keep[first : first + S].reshape(-1)
            placeholder_keep.append(flat)
            selection.append(flat.nonzero().flatten())
            first += S
        return PrunedImages(
            pooler_output=pooler, placeholder_keep=placeholder_keep, selection=selection, num_tokens=[S * T for S in tiles]
        )

    def _instruction_scores(self, kwargs, reads, projected, tiles, needs, backend) -> List[torch.Tensor]:
        """Per image, float32 [S_i, T]: PTP's instruction score of each of its tokens. Positions come
        from the host copy of the prompt (``reads``); the device only gathers and scatters by index.
        The probe runs on the row's real tokens up to the end of the instruction (``instruction_span``;
        later tokens cannot change causal attention up to there)."""
        layer = needs.llm_probe_layer
        if layer is None:
            raise ValueError("a method asking for per-tile [CLS] tokens must also name its LLM probe layer")
        input_ids, attention_mask = kwargs["input_ids"], reads.get("attention_mask")
        host_ids = reads.get("input_ids")
        end_of_turn = end_of_turn_ids(self.model)
        device = input_ids.device
        T = projected.shape[1]
        images = locate_images(reads.get("input_ids"), self.image_token_id, [S * T for S in tiles])
        per_image = torch.split(projected.reshape(-1, projected.shape[-1]), [S * T for S in tiles])
        embed = self.inner.get_input_embeddings()
        scores: List[torch.Tensor] = [None] * len(images)
        for row in sorted({img.row for img in images}):
            in_row = [i for i, img in enumerate(images) if img.row == row]
            embeds = embed(input_ids[row]).clone()
            for i in in_row:
                embeds[from_host(images[i].positions, device)] = per_image[i].to(embeds.dtype)
            if attention_mask is None:
                start, end = 0, input_ids.shape[1]
            else:
                real = attention_mask[row].nonzero().flatten()
                start, end = int(real[0]), int(real[-1]) + 1
            last_placeholder = max(int(images[i].positions[-1]) for i in in_row)
            first, stop = instruction_span(host_ids[row, :end], last_placeholder, needs.instruction, end_of_turn)
            if stop <= first:
                raise ValueError(
                    f"row {row}: PTP needs instruction tokens after the last image placeholder, found none "
                    f"(instruction={needs.instruction!r})"
                )
            s = instruction_scores(
                self.inner.language_model,
                embeds[start:stop][None],
                layer=layer,
                num_instruction_tokens=stop - first,
                backend=backend,
            )
            for i in in_row:
                scores[i] = s[from_host(images[i].positions - start, s.device)].reshape(tiles[i], T)
        return scores
