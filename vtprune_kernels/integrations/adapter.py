"""What every model family shares: the adapter base, the vision step, and what a family returns.

``TowerAdapter`` resolves a call's vision arguments (feature layer, select strategy) and the
method's needs; ``capture_vision`` runs a tower up to the last layer a method needs while
capturing the scores it asks for (``Needs.vision_layers`` / ``query_rows``); ``select`` calls the
method; ``PrunedImages`` is what a family adapter hands to the prompt surgery and to the model
(``mm_encoder_outputs``).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch

from ..methods.base import Captured, Needs
from ..methods.hivtp import PAPER_LAYERS
from .capture import VisionScoreCapture
from .vision_runner import VisionTower, describe_tower, run_tower


@dataclasses.dataclass
class PrunedImages:
    """Result of pruning the images of one call.

    pooler_output: what the model's forward takes as ``mm_encoder_outputs["image"].pooler_output``
        (a list of per-image [k_i, D] tensors, or a tensor for InternVL), on the model's device.
    placeholder_keep: per image, bool [n_i] over that image's placeholders (prompt order), on the host.
    selection: per image, int64 kept indices into its unpruned visual tokens (tiles concatenated in
        the model's order), increasing, on the host.
    num_tokens: per image, the number of unpruned visual tokens that ``selection`` indexes.
    num_newlines: per image, the placeholders that hold a newline token, not a visual token
        (LLaVA-NeXT; None: none).
    encoder_outputs: the whole ``mm_encoder_outputs`` dict when the family needs more than image
        features (Qwen-VL: videos, DeepStack); None -> {"image": pooler_output}.
    placeholder_tokens: per entry, the token id of its placeholders (None: the image token for all).
    """

    pooler_output: Union[List[torch.Tensor], torch.Tensor]
    placeholder_keep: List[torch.Tensor]
    selection: List[torch.Tensor]
    num_tokens: List[int]
    num_newlines: Optional[List[int]] = None
    encoder_outputs: Optional[dict] = None
    placeholder_tokens: Optional[List[int]] = None


@dataclasses.dataclass
class VisionCapture:
    """features: [B, S, C] output of the feature layer; scores: float32 [B, S] or None (S includes [CLS])."""

    features: torch.Tensor
    scores: Optional[torch.Tensor]


def score_layers(
    needs: Needs, feature_layer: int, num_layers: int, middle_layers: Sequence[int] = PAPER_LAYERS
) -> Sequence[int]:
    """0-based vision layers whose attention the method scores: ``needs.vision_layers`` (a negative
    index counts from the end of a ``num_layers``-layer tower, -1 = the last layer), or when None,
    the feature layer (``default_layers="feature"``) or ``middle_layers`` (``"middle"``)."""
    if needs.vision_layers is None:
        return (feature_layer,) if needs.default_layers == "feature" else tuple(middle_layers)
    layers = []
    for i in needs.vision_layers:
        i = int(i)
        if i < -num_layers:
            raise ValueError(f"vision layer {i} does not exist in a {num_layers}-layer vision tower")
        layers.append(i + num_layers if i < 0 else i)  # too large: reported by the capture
    return tuple(layers)


def capture_vision(
    tower: VisionTower,
    pixel_values: torch.Tensor,
    needs: Needs,
    *,
    feature_layer: int,
    backend: str,
    tower_kwargs: Optional[dict] = None,
) -> VisionCapture:
    """Run the tower to max(feature layer, scored layers) and capture the scores ``needs`` asks for.

    When a method scores layers after the feature layer (e.g. HIVTP's layers on a tower whose
    feature layer is earlier), the tower runs up to the last scored layer and no further; the
    features still come from the feature layer.
    """
    if needs.query_rows == "none":
        out = run_tower(tower, pixel_values, feature_layer=feature_layer, last_layer=feature_layer, tower_kwargs=tower_kwargs)
        return VisionCapture(features=out["features"], scores=None)
    layers = score_layers(needs, feature_layer, tower.num_layers)
    capture = VisionScoreCapture(tower, layers, needs.query_rows, backend=backend)
    last = max(feature_layer, *layers)
    with capture:
        out = run_tower(tower, pixel_values, feature_layer=feature_layer, last_layer=last, tower_kwargs=tower_kwargs)
    return VisionCapture(features=out["features"], scores=capture.scores())


def _detached(t):
    return t.detach() if isinstance(t, torch.Tensor) else t


def make_captured(
    needs: Needs, grid, scores: Optional[torch.Tensor], features: Optional[torch.Tensor], batch_size: Optional[int] = None, **extra
) -> Captured:
    """``Captured`` for B tiles: scores float32 [B, N] ([CLS] column dropped) go to ``cls_attn``
    (``query_rows="cls"``) or ``received`` (``"all"``); features [B, N, C]; ``extra`` fields as given.
    Every tensor is detached: selection needs no gradient."""
    fields = {name: _detached(t) for name, t in extra.items()}
    fields.update(grid=tuple(int(g) for g in grid), features=_detached(features), batch_size=batch_size)
    scores = _detached(scores)
    if needs.query_rows == "cls":
        fields["cls_attn"] = scores
    elif needs.query_rows == "all":
        fields["received"] = scores
    return Captured(**fields)


def select(method, captured: Captured, shape, backend: str) -> torch.Tensor:
    """``method.select_captured(captured)`` (with ``backend`` when the method takes it), checked to be
    a bool mask of ``shape``. ``backend`` is the call's attention backend; "triton" (attention only)
    selects with the selection ops' "auto" (the CUDA kernels on CUDA tensors)."""
    backend = "auto" if backend == "triton" else backend
    takes_backend = "backend" in inspect.signature(method.select_captured).parameters
    keep = method.select_captured(captured, backend=backend) if takes_backend else method.select_captured(captured)
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or tuple(keep.shape) != tuple(shape):
        got = (keep.dtype, tuple(keep.shape)) if isinstance(keep, torch.Tensor) else type(keep).__name__
        raise RuntimeError(f"{type(method).__name__}.select_captured returned {got}, expected a bool mask of shape {tuple(shape)}")
    return keep


def gather_rows(x: torch.Tensor, keep_host: torch.Tensor) -> torch.Tensor:
    """[K, ...] = x[keep] for x [A, B, ...] on any device and a host bool mask keep [A, B]: the
    indices are found on the host and uploaded without a sync (no data-dependent shape on the device)."""
    from ..methods._device import from_host

    index = from_host(keep_host.reshape(-1).nonzero().flatten(), x.device)
    B = keep_host.shape[1]
    return x[index // B, index % B]


def stacked_tiles(pixel_values: torch.Tensor, tiles: Sequence[int]) -> torch.Tensor:
    """[sum(tiles), C, H, W]: the anyres tiles of every image (LLaVA-NeXT, LLaVA-OneVision), from pixel_values
    [images, max tiles, C, H, W] (each image's first ``tiles[i]``) or already stacked [tiles, C, H, W]."""
    if pixel_values.dim() == 5:
        pixel_values = torch.cat([pv[:t] for pv, t in zip(pixel_values, tiles)], dim=0)
    elif pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must have 4 or 5 dimensions, got shape {tuple(pixel_values.shape)}")
    if pixel_values.shape[0] != sum(tiles):
        raise ValueError(f"pixel_values hold {pixel_values.shape[0]} tiles, image_sizes imply {sum(tiles)}")
    return pixel_values


def require_vision_only(needs: Needs, method, family: str):
    """Methods that need a per-tile [CLS] region score or an LLM probe (PTP) run only on InternVL."""
    if needs.cls_embedding or needs.llm_probe_layer is not None:
        raise ValueError(
            f"{type(method).__name__} needs per-tile [CLS] tokens and an LLM probe (PTP): it is supported only on "
            f"InternVLForConditionalGeneration, not on {family}"
        )


def resolve_layers(
    indices: Sequence[int], count: int, *, method, argument: str, where: str, given=None
) -> Tuple[int, ...]:
    """0-based indices of ``indices`` in a stack of ``count`` layers (negative ones counted from the
    end, as Python does); a layer that does not exist names the method's argument to change
    (``given``: how to show the argument's value, when that is not ``indices``)."""
    resolved = []
    for i in indices:
        if not -count <= i < count:
            shown = given if given is not None else repr(tuple(indices) if len(indices) > 1 else indices[0])
            raise ValueError(
                f"{type(method).__name__}({argument}={shown}): layer {i} does not exist in this {count}-layer "
                f"{where} (valid: 0..{count - 1}, or -{count}..-1 counted from the end); "
                f"pass {argument}= with layers that exist"
            )
        resolved.append(i % count)
    return tuple(resolved)


def config_or_call(kwargs: dict, name: str, config):
    """A per-call override (``vision_feature_layer=...``) or the config's value."""
    value = kwargs.get(name)
    return getattr(config, name) if value is None else value


def check_strategy(strategy: str, has_cls: bool, family: str):
    """Pruning needs the visual tokens to be exactly the patch grid ([CLS] dropped when there is one)."""
    expected = "default" if has_cls else "full"
    if strategy != expected:
        tower = "with a [CLS] token" if has_cls else "without a [CLS] token"
        raise ValueError(
            f"{family}: vision_feature_select_strategy={strategy!r} with a tower {tower} is not supported "
            f"(pruning needs the visual tokens to be the patch grid: use {expected!r})"
        )


def square_grid(num_tokens: int, family: str) -> Tuple[int, int]:
    """(h, w) of a square patch grid of ``num_tokens`` tokens."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{family}: {num_tokens} patch tokens do not form a square grid")
    return side, side


class TowerAdapter:
    """Base of the family adapters: the model, its vision tower, and a call's vision arguments.

    Subclasses set ``family`` (the model class name), ``consumed_kwargs`` (the call arguments that
    the pruned call no longer passes to the model) and implement ``prune(kwargs, method, backend)``.
    ``pixel_kwargs``: the call arguments whose presence makes a call one to prune; ``host_inputs``:
    the prompt-side tensors the adapter reads on the host (copied with the prompt, see host_reads).
    """

    family = ""
    consumed_kwargs: Tuple[str, ...] = ()
    pixel_kwargs: Tuple[str, ...] = ("pixel_values",)
    host_inputs: Tuple[str, ...] = ("image_sizes",)

    def __init__(self, model):
        self.model = model
        self.inner = model.model
        self.tower = self.describe_tower()
        self.image_token_id = int(model.config.image_token_id)

    def describe_tower(self):
        """The vision tower's description (``vision_runner.VisionTower`` for CLIP/SigLIP/InternViT)."""
        return describe_tower(self.inner.vision_tower)

    def has_pixels(self, call: dict) -> bool:
        """Whether the call carries pixels to prune."""
        return any(call.get(name) is not None for name in self.pixel_kwargs)

    def pixels_finite(self, call: dict) -> torch.Tensor:
        """bool scalar on the device: every pixel of the call is finite (read later, with the keep masks)."""
        return torch.stack([torch.isfinite(call[name]).all() for name in self.pixel_kwargs if call.get(name) is not None]).all()

    def finish(self, out: dict, inputs: dict, reads, layout) -> None:
        """Last touches on the pruned call's inputs ``out`` (from the call's ``inputs``) after the
        prompt surgery (``layout``: ``prompt_surgery.PromptLayout``); nothing by default (Qwen-VL:
        M-RoPE positions)."""

    def vision_setup(self, kwargs: dict, method, *, allow_probe: bool = False):
        """(vision_feature_layer as given, its 0-based encoder layer, the method's Needs) for this call."""
        cfg = self.model.config
        feature_layer_arg = config_or_call(kwargs, "vision_feature_layer", cfg)
        layer = self.tower.hidden_state_layer(feature_layer_arg)
        check_strategy(config_or_call(kwargs, "vision_feature_select_strategy", cfg), self.tower.has_cls, self.family)
        needs = method.needs(self.tower.has_cls)
        if not allow_probe:
            require_vision_only(needs, method, self.family)
        return feature_layer_arg, layer, self.resolved(needs, method)

    def resolved(self, needs: Needs, method) -> Needs:
        """``needs`` with its layer indices checked against this model and made non-negative."""
        changes = {}
        layers, given = needs.vision_layers, None
        if layers is None and needs.default_layers == "middle":  # the paper's middle layers (score_layers)
            layers, given = PAPER_LAYERS, f"None (the paper's layers {PAPER_LAYERS})"
        if layers is not None:
            changes["vision_layers"] = resolve_layers(
                layers, self.tower.num_layers, method=method, argument=needs.vision_layers_arg, where="vision tower",
                given=given,
            )
        if needs.llm_probe_layer is not None:
            from .llm_probe import decoder_layers

            (changes["llm_probe_layer"],) = resolve_layers(
                (needs.llm_probe_layer,), len(decoder_layers(self.inner.language_model)), method=method,
                argument=needs.llm_probe_layer_arg, where="language model",
            )
        return dataclasses.replace(needs, **changes)

    def prune(self, kwargs: dict, method, backend: str, reads) -> PrunedImages:
        """Select and gather the kept tokens of one call. ``reads`` (``host_reads.HostReads``) is the
        call's only way to read device data: one ``reads.fetch(keep)`` after the selection."""
        raise NotImplementedError
