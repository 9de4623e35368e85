"""EXAONE 4.5 (``Exaone4_5_ForConditionalGeneration``): Qwen2.5-VL's plan, plain 1-D positions.

The tower is Qwen2.5-VL's (windowed and full-attention blocks, 2x2 merge) with grouped-query attention
(fewer key/value heads than query heads: ``ops.attention_scores`` takes them as they are). Images and
videos are pruned as on Qwen2.5-VL (``qwen_vl.py``). Unlike Qwen-VL, the language model uses plain 1-D
positions (its forward numbers the prompt's columns): the pruned prompt is simply shorter, and no
M-RoPE positions are carried over.
"""
from __future__ import annotations

from .qwen_vl import QwenVLAdapter


class Exaone45Adapter(QwenVLAdapter):
    """Prunes the images and videos of one ``Exaone4_5_ForConditionalGeneration`` call."""

    consumed_kwargs = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw")
    host_inputs = ("image_grid_thw", "video_grid_thw")

    def finish(self, out: dict, inputs: dict, reads, layout) -> None:
        """Nothing to add: the model numbers the shortened prompt's columns itself (1-D positions)."""
