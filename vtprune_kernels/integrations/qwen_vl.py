"""The Qwen-VL models: Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5 (``Qwen2VLForConditionalGeneration``,
``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``,
``Qwen3_5ForConditionalGeneration`` and the MoE variants of the last two), and GLM-4.1V / GLM-4.5V / GLM-4.6V / GLM-OCR
(``Glm4vForConditionalGeneration``, ``Glm4vMoeForConditionalGeneration``, ``Glm46VForConditionalGeneration``,
``GlmOcrForConditionalGeneration``), whose tower and prompt
follow the same plan (``qwen_tower.glm4v_merge`` merges their 2x2 blocks; a video frame is written
with the image placeholder token, and a call holds images or videos, not both, as for the model).

Images (``pixel_values`` + ``image_grid_thw``) and videos (``pixel_values_videos`` +
``video_grid_thw``) of any size, several per call: the tower runs once per modality, as the model
runs it (``qwen_tower.run_tower``), capturing received attention where the method scores (no
[CLS] token exists, so VisPruner too scores the attention each token receives from all rows).

Selection unit: one frame (an image is one frame; a video of grid t has t frames, temporal
patches of 2 frames each), over its merged grid of (h/2) x (w/2) tokens, the language model's
tokens. Scores are pooled onto that grid (``merged_grid_pool``: the mean over the 2x2 patches a
merged token concatenates) and VisPruner's de-duplication compares the merger's inputs (the last
block's output, concatenated per merged token). Budgets are per frame: ``keep`` merged tokens per
image and per video frame. Frames with the same merged grid are selected together, in call order
(images first, then videos), so Random's seeded draws follow that order.

Only the kept merged tokens go through the merger (and Qwen3-VL's DeepStack mergers: every
DeepStack level drops exactly the same tokens). The prompt loses the pruned placeholders; the
language model gets, as ``position_ids``, the unpruned M-RoPE positions of the surviving columns
(``get_rope_index`` on the unpruned prompt, then ``mrope.kept_position_columns``), and the model's
``rope_deltas`` are set so that generation continues at the unpruned max + 1.

Selection indices (``last_selection``): per image, indices into its merged grid in raster order;
per video, frame * (h/2)*(w/2) + raster index; images first (``image_grid_thw`` order), then videos.

Host reads on CUDA: the grids (the tower itself reads them on the host, as the unmodified model
does) and, once, the keep masks: two synchronisations of the call's own, besides the tower's.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Dict, List, Tuple

import torch

from ..methods._device import from_host
from .adapter import PrunedImages, TowerAdapter, make_captured, require_vision_only, score_layers, select
from .mrope import set_kept_positions
from .qwen_tower import MergedGridItem, describe_tower, merge_kept, run_tower

MODALITIES = (  # (name, pixels, grid, placeholder token config key)
    ("image", "pixel_values", "image_grid_thw", "image_token_id"),
    ("video", "pixel_values_videos", "video_grid_thw", "video_token_id"),
)


@dataclasses.dataclass
class _Entry(MergedGridItem):
    """One image or video of the call (``MergedGridItem``, first merged token counted in its
    modality's tower run) and its modality."""

    modality: str = "image"


class QwenVLAdapter(TowerAdapter):
    """Prunes the images and videos of one Qwen-VL call (Qwen2-VL to Qwen3.5)."""

    modalities = MODALITIES  # the ones this family takes
    patch_dims = 2  # pixels: flattened patches [patches, values]
    consumed_kwargs = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")
    pixel_kwargs = ("pixel_values", "pixel_values_videos")
    host_inputs = ("image_grid_thw", "video_grid_thw", "mm_token_type_ids", "second_per_grid_ts")

    def __init__(self, model):
        super().__init__(model)
        self.family = type(model).__name__
        self.token_ids = {name: int(getattr(model.config, key)) for name, _, _, key in self.modalities}
        # GLM-4V writes each video frame as an image: image placeholders between the frame's begin/end
        # image tokens and its timestamp; its forward fills video features into the image placeholders
        self.video_frames_use_image_token = self.family.startswith(("Glm4v", "Glm46V", "GlmOcr"))
        if self.video_frames_use_image_token:
            self.token_ids["video"] = self.token_ids["image"]

    def describe_tower(self):
        return describe_tower(self.inner.visual)

    def layers_for(self, needs) -> Tuple[int, ...]:
        """The vision blocks the method scores on this tower."""
        if needs.query_rows == "none":
            return ()
        return tuple(score_layers(needs, self.tower.feature_score_layer(), self.tower.num_layers, self.tower.middle_layers()))

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        needs = method.needs(False)  # no [CLS]: VisPruner scores received attention
        require_vision_only(needs, method, self.family)
        entries, runs = self._run_towers(kwargs, self.layers_for(needs), backend, reads)
        groups, masks = self._select_frames(entries, runs, needs, method, backend)
        host_masks = reads.fetch(*masks)  # the call's host synchronisation: kept counts decide the prompt

        keep = [torch.zeros(e.tokens, dtype=torch.bool) for e in entries]
        for frames, mask in zip(groups.values(), host_masks):
            N = entries[frames[0][0]].frame_tokens
            for (i, f), row in zip(frames, mask):
                keep[i][f * N : (f + 1) * N] = row
        outputs = {name: self._merge(run, [k for e, k in zip(entries, keep) if e.modality == name]) for name, run in runs.items()}
        return PrunedImages(
            pooler_output=outputs["image"].pooler_output if "image" in outputs else [],
            placeholder_keep=keep,
            selection=[k.nonzero().flatten() for k in keep],
            num_tokens=[e.tokens for e in entries],
            encoder_outputs=outputs,
            placeholder_tokens=[self.token_ids[e.modality] for e in entries],
        )

    def _run_towers(self, kwargs, layers, backend, reads):
        """(entries, {modality: TowerRun}): one tower run per modality present, as the model runs it."""
        if self.video_frames_use_image_token and all(kwargs.get(k) is not None for k in ("pixel_values", "pixel_values_videos")):
            # its forward fills both modalities' features into the same image placeholders (the
            # unpruned model refuses such a call too)
            raise ValueError(f"{self.family} takes images and videos in separate calls, not both in one call")
        runs, entries = {}, []
        for name, pixels_key, grid_key, _ in self.modalities:
            pixels = kwargs.get(pixels_key)
            if pixels is None:
                continue
            grid = kwargs.get(grid_key)
            if grid is None:
                raise ValueError(f"{self.family}: pruning needs {grid_key} with {pixels_key}")
            if pixels.dim() != self.patch_dims:
                layout = "[patches, values]" if self.patch_dims == 2 else "[patches, channels, patch, patch]"
                raise ValueError(f"{pixels_key} must be flattened patches {layout}, got shape {tuple(pixels.shape)}")
            host_grid = reads.get(grid_key)  # the tower reads the grids on the host too (the model's own .tolist())
            if host_grid.dim() != 2 or host_grid.shape[1] != 3:
                raise ValueError(f"{grid_key} must be [n, 3] (t, h, w), got shape {tuple(host_grid.shape)}")
            grids = host_grid.tolist()
            patches = sum(t * h * w for t, h, w in grids)
            if patches != pixels.shape[0]:
                raise ValueError(f"{pixels_key} holds {pixels.shape[0]} patches but {grid_key} implies {patches}")
            first = 0
            for t, h, w in grids:
                if h % self.tower.merge_size or w % self.tower.merge_size or t < 1:
                    raise ValueError(f"{grid_key}: a grid of {t} x {h} x {w} patches is not a whole number of merge blocks")
                entries.append(_Entry((t, h, w), first, self.tower.merge_size, modality=name))
                first += entries[-1].tokens
            if name == "video" and self.video_frames_use_image_token:  # the model encodes each frame as an image
                frames = torch.repeat_interleave(host_grid, host_grid[:, 0], dim=0)
                frames[:, 0] = 1
                grid, grids = from_host(frames, grid.device), frames.tolist()
            runs[name] = run_tower(self.tower, pixels, grid, layers, backend=backend, host_grids=grids)
        return entries, runs

    def _select_frames(self, entries, runs, needs, method, backend):
        """(groups, masks): frames with the same ``group_key`` (the merged grid), in call order, are one
        selection (``groups``: key -> [(entry, frame)]); ``masks``: per group, the device keep mask [F, N]."""
        groups: Dict[tuple, List[Tuple[int, int]]] = {}
        for i, entry in enumerate(entries):
            for frame in range(entry.grid[0]):
                groups.setdefault(self.group_key(entry), []).append((i, frame))
        device = next(iter(runs.values())).merged.device
        masks = []
        for frames in groups.values():
            grid = entries[frames[0][0]].frame_grid
            N = grid[0] * grid[1]
            starts = torch.tensor([[entries[i].first + f * N] for i, f in frames], dtype=torch.int64)
            rows = starts + torch.arange(N)  # [F, N]: token index in its modality's run
            modalities = [entries[i].modality for i, _ in frames]
            scores = None if needs.query_rows == "none" else self._rows(runs, modalities, rows, lambda run: run.scores)
            features = self._rows(runs, modalities, rows, lambda run: run.merged) if needs.features else None
            captured = make_captured(needs, grid, scores, features, batch_size=len(frames), device=device)
            masks.append(select(method, captured, (len(frames), N), backend))
        return groups, masks

    @staticmethod
    def group_key(entry: _Entry) -> tuple:
        """Frames with equal keys are selected together: the merged grid (images and video frames alike)."""
        return entry.frame_grid

    @staticmethod
    def _rows(runs, modalities, rows, field):
        """[F, N, ...]: ``field(run)`` gathered at token indices ``rows`` [F, N] (host) of each row's
        modality run (one gather per modality; indices uploaded without a sync)."""
        out = None
        for modality in dict.fromkeys(modalities):
            which = [b for b, m in enumerate(modalities) if m == modality]
            values = field(runs[modality])
            part = values[from_host(rows[which], values.device)]
            if len(which) == len(modalities):
                return part
            if out is None:
                out = part.new_empty((len(modalities), *part.shape[1:]))
            out[from_host(torch.tensor(which), part.device)] = part
        return out

    def _merge(self, run, keeps):
        """The model's ``mm_encoder_outputs`` entry of one modality: per entry (``keeps``: its host
        keep mask), its kept tokens through the merger and every DeepStack merger, in order."""
        counts = [int(k.sum()) for k in keeps]
        index = from_host(torch.cat(keeps).nonzero().flatten(), run.merged.device)
        C = self.tower.hidden_size

        def merged(merger, tokens):
            return list(torch.split(merge_kept(merger, tokens[index], C), counts))

        pooled = merged(self.tower.merger, run.merged)
        if not self.tower.deepstack_layers:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            return BaseModelOutputWithPooling(pooler_output=pooled)
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        deepstack = [merged(merger, level) for merger, level in zip(self.tower.deepstack_mergers, run.deepstack)]
        return BaseModelOutputWithDeepstackFeatures(pooler_output=pooled, deepstack_features=deepstack)

    # -- positions --------------------------------------------------------------------------------
    def finish(self, out: dict, inputs: dict, reads, layout) -> None:
        """M-RoPE: the unpruned positions of the surviving columns, and the matching rope deltas."""
        input_ids = reads.get("input_ids")
        types = reads.get("mm_token_type_ids")
        if types is None:  # the processor returns them; derive them from the placeholders otherwise
            types = torch.zeros_like(input_ids, dtype=torch.int32)
            types[input_ids == self.token_ids["image"]] = 1
            if inputs.get("pixel_values_videos") is not None:  # (GLM-4V: a call has images or videos, not both)
                types[input_ids == self.token_ids["video"]] = 2
        set_kept_positions(self.inner, out, layout, self.unpruned_positions(input_ids, types, reads, inputs), types)

    def unpruned_positions(self, input_ids, types, reads, inputs: dict) -> torch.Tensor:
        """int64 [3, B, S]: the model's own ``get_rope_index`` on the unpruned prompt (host tensors;
        ``inputs``: the call's arguments)."""
        args = dict(
            input_ids=input_ids,
            mm_token_type_ids=types,
            image_grid_thw=reads.get("image_grid_thw"),
            video_grid_thw=reads.get("video_grid_thw"),
            attention_mask=reads.get("attention_mask"),
        )
        if "second_per_grid_ts" in inspect.signature(self.inner.get_rope_index).parameters:
            seconds = reads.get("second_per_grid_ts")
            args["second_per_grid_ts"] = inputs.get("second_per_grid_ts") if seconds is None else seconds
        positions, _ = self.inner.get_rope_index(**args)
        return positions
