"""PaliGemma and PaliGemma 2 (``PaliGemmaForConditionalGeneration``): a SigLIP tower, a linear projector.

Gemma 3's plan (``gemma3.Gemma3Adapter``) without the pooling: each image's h x w patch tokens (16 x 16
at 224 px, 32 x 32 at 448 px, 64 x 64 at 896 px) are the language model's tokens. Scores are the
tower's received attention (no [CLS]), VisPruner's de-duplication compares the tower's output
features, the kept features are rows of the projector's output; min(keep, h*w) per image.

The prompt is a prefix (image placeholders, then the text) that attends bidirectionally
(``token_type_ids`` 0) and a causal suffix (1): the pruned prompt's ``token_type_ids`` lose the same
columns, so the prefix stays one block. Selection indices: raster indices into the patch grid.
"""
from __future__ import annotations

import torch

from .adapter import square_grid
from .gemma3 import Gemma3Adapter


class PaliGemmaAdapter(Gemma3Adapter):
    """Prunes the images of one ``PaliGemmaForConditionalGeneration`` call."""

    family = "PaliGemmaForConditionalGeneration"

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x  # every patch is a token

    def token_grid(self, patches: int):
        return square_grid(patches, self.family)
