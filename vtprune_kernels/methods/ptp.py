"""PTP: region budgets from [CLS] similarity to the thumbnail, then top tokens per region.

Paper: "Pyramid Token Pruning for High-Resolution Large Vision-Language Models via Region, Token,
and Instruction-Guided Importance", arXiv:2509.15704 (docs/methods/ptp.md).

For one image of S regions (the tiles, then the thumbnail last; S = 1: a single tile, no
thumbnail) of T tokens each (after InternVL's pixel shuffle):
1. Total kept = floor((1 - prune_ratio) * S * T + 0.5) (round half up, not Python's banker's round;
   the product is the Python float product).
2. Region score a_i = cos(CLS_i, CLS_thumbnail), the thumbnail's a = 1; min-max normalised over the
   S regions (all equal: zeros); softmax; ``allocate_budget(softmax, total, capacity=T)``.
   All in float64.
3. Token score s = alpha * c + (1 - alpha) * b, with b (vision [CLS] attention, pixel-shuffle
   pooled, see ``pixel_shuffle_pooling``) and c (instruction attention at an LLM block) each
   min-max normalised over all S*T tokens of the image in float32 (a constant map -> zeros; NaN
   is ignored by min/max and stays NaN, ranking last).
4. Top-R_i tokens of every region by s (``region_topk_mask``, one region per row).

Layer indices are 0-based: ``vision_layer=8`` is vision encoder layer index 8 (the 9th layer, whose
output is ``hidden_states[9]``). The paper's main text says layer 8 and its alpha study "the 11th
layer"; counted from 1 those are ``vision_layer=7`` and ``vision_layer=10``. The default keeps 8.

Instruction tokens (``instruction``): "text" (default) = the user's instruction only, i.e. the
tokens after the image's end marker (InternVL's ``</img>``) up to the first end-of-turn token (the
model's ``eos_token_id``s, e.g. ``<|im_end|>``), which is what the paper means; "after_image" =
every token after the last image placeholder to the end of the prompt (``</img>``, the chat
template's closing tokens and the assistant header included). The integration finds the positions
(``integrations.llm_probe.instruction_span``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .. import ops
from . import _checks
from .base import Captured, Needs, PruningMethod


def min_max_normalise(x: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min) over all of x; zeros where max == min; NaN ignored and kept."""
    nan = x.isnan()
    lo = torch.where(nan, torch.full_like(x, math.inf), x).amin()
    hi = torch.where(nan, torch.full_like(x, -math.inf), x).amax()
    span = hi - lo
    scaled = torch.where(span > 0, (x - lo) / span, torch.zeros_like(x))
    return torch.where(nan, x, scaled)


INSTRUCTION_MODES = ("text", "after_image")


class PTP(PruningMethod):
    """PTP(prune_ratio=0.5, alpha=0.5, vision_layer=8, llm_layer=1, instruction="text") for one image at a time.

    vision_layer: 0-based vision encoder layer whose [CLS] attention gives b.
    llm_layer: 0-based LLM block whose instruction->visual attention gives c (probe pass).
    instruction: which prompt tokens are the instruction queries of c: "text" (the user's
        instruction, without the image end marker and the chat template's closing tokens) or
        "after_image" (every token after the last image placeholder).
    Negative layer indices count from the last layer (-1), resolved against the model.
    """

    def __init__(
        self,
        prune_ratio: float = 0.5,
        alpha: float = 0.5,
        vision_layer: int = 8,
        llm_layer: int = 1,
        instruction: str = "text",
    ):
        self.prune_ratio = _checks.fraction("prune_ratio", prune_ratio, upper_open=True)
        self.alpha = _checks.fraction("alpha", alpha)
        self.vision_layer = _checks.integer("vision_layer", vision_layer)
        self.llm_layer = _checks.integer("llm_layer", llm_layer)
        if instruction not in INSTRUCTION_MODES:
            raise ValueError(f"instruction must be one of {INSTRUCTION_MODES}, got {instruction!r}")
        self.instruction = instruction

    def __repr__(self):
        return (
            f"PTP(prune_ratio={self.prune_ratio}, alpha={self.alpha}, "
            f"vision_layer={self.vision_layer}, llm_layer={self.llm_layer}, instruction={self.instruction!r})"
        )

    def needs(self, has_cls: bool) -> Needs:
        if not has_cls:
            raise ValueError("PTP needs a vision tower with a [CLS] token (region scores compare [CLS] embeddings)")
        return Needs(
            vision_layers=(self.vision_layer,),
            query_rows="cls",
            cls_embedding=True,
            llm_probe_layer=self.llm_layer,
            instruction=self.instruction,
            vision_layers_arg="vision_layer",
            llm_probe_layer_arg="llm_layer",
        )

    def total_keep(self, n_regions: int, tokens_per_region: int) -> int:
        """floor((1 - prune_ratio) * S * T + 0.5)."""
        return math.floor((1.0 - self.prune_ratio) * n_regions * tokens_per_region + 0.5)

    @staticmethod
    def region_weights(cls_regions: torch.Tensor) -> torch.Tensor:
        """float64 [S]: softmax of the min-max normalised cosine of each region's [CLS] to the last's."""
        cls = cls_regions.double()
        similarity = F.cosine_similarity(cls, cls[-1:].expand_as(cls), dim=-1)
        # the thumbnail (or the single tile) scores 1 by definition; a device-side fill, not an
        # item assignment (which uploads the Python scalar and synchronises on CUDA)
        similarity = torch.cat([similarity[:-1], similarity.new_ones(1)])
        return min_max_normalise(similarity).softmax(0)

    def select(
        self,
        cls_regions: torch.Tensor,
        b_scores: torch.Tensor,
        c_scores: torch.Tensor,
        *,
        backend: str = "auto",
        validate: Optional[bool] = None,
    ) -> torch.Tensor:
        """bool [S, T] keep mask of one image, exactly ``total_keep(S, T)`` tokens.

        cls_regions [S, C]: each region's [CLS] output embedding, thumbnail last. b_scores,
        c_scores float [S, T]: token scores on the pooled (pixel-shuffled) grid of each region.
        ``backend`` is forwarded to the ops. ``validate``: check the region weights (a NaN
        embedding is an error); that reads them, one host sync on CUDA. ``None`` (default):
        validate on the CPU only (free there), so CUDA calls never synchronise. Unvalidated on
        CUDA, NaN weights give equal region budgets (the kernel's rule for weights not summing
        above 0; the CPU kernel always rejects them).
        """
        _checks.float_tensor("cls_regions", cls_regions, 2)
        _checks.float_tensor("b_scores", b_scores, 2)
        _checks.float_tensor("c_scores", c_scores, 2)
        _checks.backend(backend)
        S, T = b_scores.shape
        if S < 1 or T < 1:
            raise ValueError(f"b_scores must have at least one region and one token, got shape {(S, T)}")
        if tuple(c_scores.shape) != (S, T):
            raise ValueError(f"c_scores must have the shape of b_scores {(S, T)}, got {tuple(c_scores.shape)}")
        if cls_regions.shape[0] != S:
            raise ValueError(
                f"cls_regions must have S={S} rows (one per region of b_scores), got {tuple(cls_regions.shape)}"
            )
        for name, t in (("cls_regions", cls_regions), ("c_scores", c_scores)):
            if t.device != b_scores.device:
                raise ValueError(f"{name} is on {t.device} but b_scores is on {b_scores.device}")
        device = b_scores.device
        if validate is None:
            validate = device.type == "cpu"
        budgets = ops.allocate_budget(
            self.region_weights(cls_regions)[None],
            torch.full((1,), self.total_keep(S, T), dtype=torch.int64, device=device),
            torch.full((1, S), T, dtype=torch.int64, device=device),
            backend=backend,
            validate=bool(validate),  # the weights come from the data (a NaN embedding is reported here)
        )
        b = min_max_normalise(b_scores.float())
        c = min_max_normalise(c_scores.float())
        score = self.alpha * c + (1.0 - self.alpha) * b
        region_ids = torch.arange(S, device=device).repeat_interleave(T)
        mask = ops.region_topk_mask(
            score.reshape(1, S * T), region_ids, budgets, backend=backend, validate=False
        )  # budgets <= T by allocate_budget's contract
        return mask.reshape(S, T)

    def select_captured(
        self, captured: Captured, *, backend: str = "auto", validate: Optional[bool] = None
    ) -> torch.Tensor:
        cls_regions, b_scores, c_scores = captured.require("cls_regions", "b_scores", "c_scores")
        if captured.valid is not None:
            raise ValueError("PTP selects among every token of its regions: captured.valid is not supported")
        return self.select(cls_regions, b_scores, c_scores, backend=backend, validate=validate)
