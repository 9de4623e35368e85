"""Pruned Gemma 4 for vLLM (images and videos): ``VTPruneGemma4ForConditionalGeneration``.

As ``apply()`` (``integrations/gemma4.py``): per image, and per video frame, on the tower's
position-pooled grid (3 x 3 patches per soft token on the released models), scores are the attention
each patch receives inside its image / frame, pooled with the tower's own position pooling;
VisPruner's de-duplication compares the pooler's output; min(keep, soft tokens) per image and per
frame, rows of the model's own embeddings. A video keeps its frames' kept tokens in frame order, its
frames selected with one method object (Random: one generator per video, as ``apply()`` on it).

vLLM runs transformers' own Gemma 4 vision tower (its patch embedder and encoder, on images or frames
padded at the end to the processor's patch budget, images in buckets of equal patch count, all in
memory-sized chunks), so the scores come from the transformers capture (``capture.VisionScoreCapture``)
on its attention modules, each row's real patches scored alone (``row_lengths``, rows in encode order).
The processor writes min(keep, soft tokens) placeholders between each image's (and each frame's) boi /
eoi tokens, a video's timestamps unchanged. The MM-LoRA path (images padded into one batch) is refused
at start. Selection indices: per image, raster indices into its pooled grid; per video, the frame's
first soft token in the video + its raster index (as ``apply()``'s ``last_selection``).
"""
from __future__ import annotations

import threading
from typing import List

import torch
from vllm.model_executor.models.gemma4_mm import _VIDEO_MAX_SOFT_TOKENS as VIDEO_FRAME_SOFT_TOKENS
from vllm.model_executor.models.gemma4_mm import (
    Gemma4DummyInputsBuilder,
    Gemma4ForConditionalGeneration,
    Gemma4MultiModalProcessor,
    Gemma4ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..capture import VisionScoreCapture
from ..gemma4 import pooled_grid, pooled_scores
from ..vision_runner import VisionTower
from .encoder_capture import EncoderLayout
from .encoder_pruning import EncoderPruning, check_encoder_runs_eagerly
from .switch import method_from_config

ARCHITECTURE = "VTPruneGemma4ForConditionalGeneration"


class VTPruneGemma4ProcessingInfo(Gemma4ProcessingInfo):
    """Gemma 4's processing info with min(keep, soft tokens) placeholders per image and per video frame.
    Validates the switch when the processor is built (engine start)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), ARCHITECTURE).keep

    def _compute_num_soft_tokens(self, image_width: int, image_height: int, max_soft_tokens=None) -> int:
        full = super()._compute_num_soft_tokens(image_width, image_height, max_soft_tokens=max_soft_tokens)
        return min(self.vtprune_keep, full)

    def get_video_repl(self, *, timestamps, num_soft_tokens_per_frame, processor):
        kept = [min(self.vtprune_keep, int(n)) for n in num_soft_tokens_per_frame]
        return super().get_video_repl(timestamps=timestamps, num_soft_tokens_per_frame=kept, processor=processor)

    def get_mm_max_tokens_per_item(self, seq_len, mm_counts):
        tokens = dict(super().get_mm_max_tokens_per_item(seq_len, mm_counts) or {})
        if "image" in tokens:
            tokens["image"] = min(tokens["image"], self.vtprune_keep)
        if "video" in tokens:  # per frame: soft tokens + boi + eoi + about 6 timestamp tokens (vLLM's bound)
            frames = tokens["video"] // (VIDEO_FRAME_SOFT_TOKENS + 8)
            tokens["video"] = frames * (min(self.vtprune_keep, VIDEO_FRAME_SOFT_TOKENS) + 8)
        return tokens


def tower_layout(tower) -> EncoderLayout:
    """The attention layout of transformers' Gemma 4 vision tower (every head on every rank: vLLM does not shard it)."""
    config = tower.config
    return EncoderLayout(
        attention=lambda i: tower.encoder.layers[i].self_attn,
        num_layers=len(tower.encoder.layers),
        local_heads=int(config.num_attention_heads),
        total_heads=int(config.num_attention_heads),
        head_dim=int(config.head_dim),
        scale=1.0,
        has_cls=False,
    )


def encode_order(pixel_values) -> List[int]:
    """The images in the order vLLM's Gemma 4 encodes them: grouped by patch count (first appearance), in order."""
    buckets = {}
    for i, image in enumerate(pixel_values):
        buckets.setdefault(int(image.shape[0]), []).append(i)
    return [i for items in buckets.values() for i in items]


@MULTIMODAL_REGISTRY.register_processor(
    Gemma4MultiModalProcessor, info=VTPruneGemma4ProcessingInfo, dummy_inputs=Gemma4DummyInputsBuilder
)
class VTPruneGemma4ForConditionalGeneration(Gemma4ForConditionalGeneration):
    """vLLM's Gemma 4 with every image pruned by the configured method."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        check_encoder_runs_eagerly(vllm_config, ARCHITECTURE)
        if self._enable_mm_lora:
            raise ValueError(f"{ARCHITECTURE}: multimodal LoRA (images padded into one batch) is not supported")
        tower = self.vision_tower
        self.vtprune = EncoderPruning(self.config, ARCHITECTURE, tower, layout=tower_layout(tower))
        layers = tower.encoder.layers
        self.vtprune_tower = VisionTower(module=tower, layers=layers, attention_module=lambda i: layers[i].self_attn, has_cls=False)

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the images encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _encode(self, run, positions: List[torch.Tensor], order: List[int]):
        """Run the stock encoder step ``run()`` with the score capture and a hook on the pooler.
        positions: per image / frame its patch positions [P_i, 2] (padding -1, last); order: the rows in
        the order the tower encodes them. Returns (run()'s output, per row in call order its pooler output
        (features [1, L, C], mask), its scores [P_i] or None, its host positions, its real patch count)."""
        pooler = self.vision_tower.pooler
        pooled, owner = [], threading.get_ident()

        def keep_pooled(module, args, output):  # called once per row, in call order
            if threading.get_ident() == owner:
                pooled.append(output)

        needs = self.vtprune.needs
        # one host copy of every row's patch positions (vLLM's own pooling reads them on the host too)
        host_positions = list(torch.cat(list(positions)).cpu().split([p.shape[0] for p in positions]))
        real = [int((p != -1).all(-1).sum()) for p in host_positions]  # real patches (padding last)
        hook = pooler.register_forward_hook(keep_pooled)
        try:
            if needs.query_rows == "none":
                out, rows = run(), None
            else:
                capture = VisionScoreCapture(
                    self.vtprune_tower, self.vtprune.score_layers, needs.query_rows, backend=self.vtprune.backend,
                    row_lengths=[real[i] for i in order],
                )
                with capture:
                    out = run()
                rows = [chunk[0] for chunk in capture.chunk_scores()]  # [n_i] per row, encode order
        finally:
            hook.remove()
        scores = [None] * len(order)
        if rows is not None:
            for i, row in zip(order, rows):
                scores[i] = row
        return out, pooled, scores, host_positions, real

    def _select_row(self, tokens, pooled, scores, position, host_position, real: int, method=None):
        """(kept rows of ``tokens`` [T, D], one image's / frame's soft tokens; its keep mask [1, T]). The pooler's
        real soft tokens are its first T (its position pooling numbers the full rows x cols grid 0..T-1)."""
        features, _ = pooled
        T = tokens.shape[0]
        grid = pooled_grid(host_position[:real], int(self.config.vision_config.pooling_kernel_size), T, ARCHITECTURE)
        row_scores = None
        if scores is not None:
            row_scores = pooled_scores(self.vision_tower.pooler, [scores[None]], position[None], features.shape[1])[:, :T]
        row_features = self.vtprune.selection_features(lambda: features[:, :T], 1, T, tokens)
        keep = self.vtprune.select(row_scores, row_features, grid, [1], method=method)
        return tokens[torch.nonzero_static(keep[0], size=min(self.vtprune.keep, T))[:, 0]], keep

    def _process_image_input(self, image_input):
        pixel_values, positions = image_input["pixel_values"], image_input["pixel_position_ids"]
        embeddings, pooled, scores, host, real = self._encode(
            lambda: super(VTPruneGemma4ForConditionalGeneration, self)._process_image_input(image_input),
            list(positions), encode_order(pixel_values),
        )
        out, keeps = [], []
        for i, image in enumerate(embeddings):
            kept, keep = self._select_row(image, pooled[i], scores[i], positions[i], host[i], real[i])
            out.append(kept)
            keeps.append(keep)
        self.vtprune.record(keeps)
        return out

    def _process_video_input(self, video_input):
        """Per video [sum of its frames' kept tokens, D]: every frame pruned as an image, in frame order."""
        positions = video_input["pixel_position_ids_videos"]  # [F, P, 2], frames of all videos in order
        frame_counts = [int(n) for n in torch.as_tensor(video_input["video_frame_counts"]).tolist()]
        frames = list(positions)
        videos, pooled, scores, host, real = self._encode(
            lambda: super(VTPruneGemma4ForConditionalGeneration, self)._process_video_input(video_input),
            frames, list(range(len(frames))),
        )
        kernel_area = int(self.config.vision_config.pooling_kernel_size) ** 2
        out, keeps, first = [], [], 0
        for video, count in zip(videos, frame_counts):
            method = self.vtprune.image_method()  # one method object per video (Random: one generator)
            tokens = video.split([real[f] // kernel_area for f in range(first, first + count)])
            rows = [
                self._select_row(tokens[j], pooled[f], scores[f], positions[f], host[f], real[f], method)
                for j, f in enumerate(range(first, first + count))
            ]
            out.append(torch.cat([kept for kept, _ in rows]))
            keeps.append(torch.cat([keep for _, keep in rows], dim=1))
            first += count
        self.vtprune.record(keeps)
        return out
