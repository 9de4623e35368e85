"""Pruned Mistral 3 for vLLM: ``VTPruneMistral3ForConditionalGeneration``.

As ``apply()`` (``integrations/mistral3.py``): per image, on the patch merger's (h/2) x (w/2) grid;
scores are the attention each patch receives inside its own image (vLLM's Pixtral tower packs a
batch's images into one sequence and attends per image: the capture scores each segment alone),
pooled 2 x 2; VisPruner's de-duplication compares the merger's input; min(keep, tokens) per image;
the kept features are rows of the projector's output.

The prompt keeps the image's row structure, as ``apply()``: each row's kept tokens, then its
``[IMG_BREAK]``, ``[IMG_END]`` after the last row. Which row a kept token lies in depends on the
image's content, but vLLM fixes the prompt's tokens from the image size before the encoder runs.
So the processor writes kept + rows - 1 ``[IMG]`` placeholders and ``[IMG_END]``, and the encoder
output fills them in prompt order with the kept features and, after each row but the last, the
language model's own embedding of ``[IMG_BREAK]``: the language model receives exactly the
embeddings of ``apply()``'s pruned prompt (only the token ids under the breaks differ, which
nothing but prompt log-probabilities of those positions reads). Selection indices: per image,
raster indices into its merged grid.
"""
from __future__ import annotations

from typing import Tuple

import torch
from vllm.model_executor.models.mistral3 import (
    Mistral3DummyInputsBuilder,
    Mistral3ForConditionalGeneration,
    Mistral3MultiModalProcessor,
    Mistral3ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.parse import ImageProcessorItems
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails

from ..mistral3 import merged_scores, projected_with_merger_input
from .encoder_pruning import EncoderPruning
from .switch import method_from_config

ARCHITECTURE = "VTPruneMistral3ForConditionalGeneration"


def placeholders(grid: Tuple[int, int], keep: int, row_breaks: bool = True) -> int:
    """Embeddings of one image in the pruned prompt: min(keep, rows*cols) kept tokens + rows - 1 breaks
    (no breaks: LightOnOCR)."""
    rows, cols = grid
    return min(keep, rows * cols) + (rows - 1 if row_breaks else 0)


class KeptRowsInfo:
    """Processing-info mixin (Mistral 3, LightOnOCR): the pruned count per image. Subclasses set
    ``vtprune_architecture`` and ``vtprune_row_breaks``. Validates the switch when the processor is built
    (engine start)."""

    vtprune_architecture = ""
    vtprune_row_breaks = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.vtprune_keep = method_from_config(self.get_hf_config(), self.vtprune_architecture).keep

    def merged_grid(self, width: int, height: int, mm_kwargs=None) -> Tuple[int, int]:
        """(rows, columns) of merged tokens of an image of this size, as vLLM's own processor counts them."""
        cols, rows = self.get_vision_encoder_info(mm_kwargs).get_patch_grid_size(image_width=width, image_height=height)
        return rows, cols

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        return placeholders(self.merged_grid(image_width, image_height), self.vtprune_keep, self.vtprune_row_breaks)


class VTPruneMistral3ProcessingInfo(KeptRowsInfo, Mistral3ProcessingInfo):
    """Mistral 3's processing info with the pruned count per image."""

    vtprune_architecture = ARCHITECTURE


class KeptRowsPrompt:
    """Processor mixin (before vLLM's Pixtral-style processor): each image written as kept + rows - 1 ``[IMG]``
    placeholders and ``[IMG_END]``; with ``row_breaks`` False (LightOnOCR), its min(keep, tokens) ``[IMG]``
    placeholders alone. The processing info gives ``merged_grid`` and ``vtprune_keep``."""

    row_breaks = True

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        image_token = self.info.get_hf_config().image_token_index
        end = []
        if self.row_breaks:
            processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
            end = [self.info.get_tokenizer().get_vocab()[processor.image_end_token]]

        def replacement(item: int):
            size = mm_items.get_items("image", ImageProcessorItems).get_image_size(item)
            grid = self.info.merged_grid(size.width, size.height, hf_processor_mm_kwargs)
            count = placeholders(grid, self.info.vtprune_keep, self.row_breaks)
            return PromptUpdateDetails.select_token_id([image_token] * count + end, image_token)

        return [PromptReplacement(modality="image", target=[image_token], replacement=replacement)]


class VTPruneMistral3MultiModalProcessor(KeptRowsPrompt, Mistral3MultiModalProcessor):
    """Writes each image as kept + rows - 1 ``[IMG]`` placeholders and ``[IMG_END]``."""


def row_layout(keep: torch.Tensor, grid: Tuple[int, int], count: int) -> torch.Tensor:
    """int64 [count] on keep's device: for each placeholder of an image in prompt order, the index of
    its kept token (raster index into the rows x cols grid) or rows * cols for a row break.
    keep: bool [rows*cols] keeping count - (rows - 1) tokens. No host synchronisation."""
    rows, cols = grid
    slots = torch.ones(rows, cols + 1, dtype=torch.bool, device=keep.device)  # column ``cols``: the row's break
    slots[:, :cols] = keep.view(rows, cols)
    slots[-1, cols] = False  # the last row ends with [IMG_END], a prompt token
    position = torch.nonzero_static(slots.flatten(), size=count)[:, 0]
    row, col = position // (cols + 1), position % (cols + 1)
    return torch.where(col < cols, row * cols + col, rows * cols)


class PixtralRowsPruning:
    """Model mixin: the pruned image step of a Pixtral tower whose images are written row by row (Mistral 3:
    2x2 merger; Pixtral-12B in LLaVA: every patch a token) or, with ``vtprune_row_breaks`` False, as their
    tokens alone (LightOnOCR). ``vtprune_setup`` in ``__init__``."""

    vtprune_row_breaks = True

    def vtprune_setup(self, vllm_config, architecture: str, merge: int) -> None:
        if not isinstance(self.config.vision_feature_layer, int):
            raise ValueError(f"{architecture}: vision_feature_layer must be one layer, got {self.config.vision_feature_layer!r}")
        self.vtprune = EncoderPruning(self.config, architecture, self.vision_tower)
        self.vtprune_patch = int(self.config.vision_config.patch_size)
        self.vtprune_merge = merge
        if self.vtprune_row_breaks:
            info = MULTIMODAL_REGISTRY.create_processor(vllm_config.model_config).info
            break_id = int(info.get_tokenizer().get_vocab()[info.get_hf_processor().image_break_token])
            # [1] on the model's device (moves with it): no upload per encode
            self.register_buffer("vtprune_break", torch.tensor([break_id]), persistent=False)

    def vtprune_selections(self, clear: bool = False):
        """Kept indices of the images encoded so far (see the module doc)."""
        return self.vtprune.selections(clear)

    def _break_embedding(self, like: torch.Tensor) -> torch.Tensor:
        """[1, D]: the language model's own embedding of ``[IMG_BREAK]``."""
        return self.get_language_model().embed_input_ids(self.vtprune_break.to(like.device)).to(like.dtype)

    def vtprune_images(self, images, tower_output, project) -> tuple:
        """Per image, its embeddings in prompt order (kept tokens, a break after each row but the last unless
        ``vtprune_row_breaks`` is False).
        images: per image [C, H, W]; tower_output(images) -> per image [h*w, C]; project(hidden [sum h*w, C],
        sizes) -> (projected [sum T, D], what the selection de-duplicates [sum T, C'])."""
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        grids = [(h // self.vtprune_patch, w // self.vtprune_patch) for h, w in sizes]
        with self.vtprune.capture(segments=lambda layer: [h * w for h, w in grids]) as capture:
            hidden = torch.cat(tower_output(images))  # [sum h*w, C], images in order
        scores = capture.scores()
        projected, merger_input = project(hidden, sizes)

        breaks = self._break_embedding(projected) if self.vtprune_row_breaks else None
        m, out, keeps = self.vtprune_merge, [], []
        patch_first, token_first = 0, 0
        for grid in grids:
            rows, cols = grid[0] // m, grid[1] // m
            T = rows * cols
            image_scores = None
            if scores is not None:
                image_scores = merged_scores(scores[:, patch_first : patch_first + grid[0] * grid[1]], grid, m)
            features = self.vtprune.selection_features(lambda: merger_input[None, token_first : token_first + T], 1, T, hidden)
            keep = self.vtprune.select(image_scores, features, (rows, cols), [1])[0]
            keeps.append(keep[None])
            count = placeholders((rows, cols), self.vtprune.keep, self.vtprune_row_breaks)
            if self.vtprune_row_breaks:
                source = torch.cat([projected[token_first : token_first + T], breaks])
                out.append(source[row_layout(keep, (rows, cols), count)])
            else:  # the kept tokens in raster order (no host synchronisation: count is known)
                out.append(projected[token_first : token_first + T][torch.nonzero_static(keep, size=count)[:, 0]])
            patch_first += grid[0] * grid[1]
            token_first += T
        self.vtprune.record(keeps)
        return tuple(out)


class Mistral3ImagePruning(PixtralRowsPruning):
    """Model mixin (Mistral 3, LightOnOCR): the Pixtral step on the 2x2 patch merger's grid, projected by the
    model's ``multi_modal_projector``. Subclasses set ``vtprune_architecture``."""

    vtprune_architecture = ""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vtprune_setup(vllm_config, self.vtprune_architecture, int(self.config.spatial_merge_size))

    def _process_image_input(self, image_input):
        if image_input["type"] == "image_embeds":
            return super()._process_image_input(image_input)  # precomputed embeddings: nothing to prune
        return self.vtprune_images(
            image_input["pixel_values"], self.vision_tower,
            lambda hidden, sizes: projected_with_merger_input(self.multi_modal_projector, hidden, sizes),
        )


@MULTIMODAL_REGISTRY.register_processor(
    VTPruneMistral3MultiModalProcessor, info=VTPruneMistral3ProcessingInfo, dummy_inputs=Mistral3DummyInputsBuilder
)
class VTPruneMistral3ForConditionalGeneration(Mistral3ImagePruning, Mistral3ForConditionalGeneration):
    """vLLM's Mistral 3 with every image pruned by the configured method."""

    vtprune_architecture = ARCHITECTURE
