"""The Omni thinkers: Qwen2.5-Omni (``Qwen2_5OmniThinkerForConditionalGeneration``) and Qwen3-Omni
(``Qwen3OmniMoeThinkerForConditionalGeneration``): Qwen-VL's plan, audio passed through.

A thinker holds a Qwen-VL vision tower (Qwen2.5-Omni: Qwen2.5-VL's windowed and full-attention blocks;
Qwen3-Omni: Qwen3-VL's, with DeepStack), an audio tower and an M-RoPE language model (Qwen3-Omni: its
positions are floats). Images and videos are pruned as on Qwen-VL (``qwen_vl.py``: per image and per
video frame on the merged grid, only the kept tokens through the merger and every DeepStack merger). Audio (``input_features``, ``feature_attention_mask``) is not pruned: it goes to the model
as given and keeps its placeholders. The kept columns get their unpruned M-RoPE positions from the
thinker's own ``get_rope_index``, which also places audio (and, with ``use_audio_in_video``, the
video's audio interleaved with its frames in 2-second chunks).

For a full Omni model (thinker and talker), prune its thinker and
generate text with it: ``apply(model.thinker, method)``, ``model.thinker.generate(...)``. The talker
(speech output) reads the thinker's hidden states of the unpruned prompt: not supported with pruning.
``use_audio_in_video`` (a video's audio interleaved with its frames) is passed to ``get_rope_index``
but not tested yet.
"""
from __future__ import annotations

import torch

from .qwen_vl import QwenVLAdapter


class QwenOmniAdapter(QwenVLAdapter):
    """Prunes the images and videos of one Omni thinker call."""

    consumed_kwargs = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw")
    host_inputs = (
        "image_grid_thw", "video_grid_thw", "mm_token_type_ids", "feature_attention_mask", "audio_feature_lengths",
        "video_second_per_grid",
    )

    def describe_tower(self):
        if not hasattr(self.inner, "visual"):
            # transformers 5.19 (the vLLM 0.32 venv's): the thinker itself holds its towers, get_rope_index and
            # rope_deltas (its .model is the text model; 5.24: all on .model)
            self.inner = self.model
        return super().describe_tower()

    def unpruned_positions(self, input_ids, types, reads, inputs: dict) -> torch.Tensor:
        """int64 [3, B, S]: the thinker's ``get_rope_index`` on the unpruned prompt (host tensors), audio included."""
        audio_mask = reads.get("feature_attention_mask")
        audio_lengths = audio_mask.sum(1) if audio_mask is not None else reads.get("audio_feature_lengths")
        if reads.get("video_grid_thw") is not None and reads.get("video_second_per_grid") is None:
            raise ValueError(f"{self.family}: pruning a video needs video_second_per_grid (its M-RoPE time steps)")
        positions, _ = self.inner.get_rope_index(
            input_ids, reads.get("image_grid_thw"), reads.get("video_grid_thw"), reads.get("attention_mask"),
            bool(inputs.get("use_audio_in_video") or False), audio_lengths, reads.get("video_second_per_grid"),
        )
        return positions
