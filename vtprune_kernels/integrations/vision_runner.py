"""Run a vision tower only up to the last layer the pruning needs (never the layers after it).

``VisionTower`` describes one of the supported towers (CLIP, SigLIP, InternViT, DINOv2, Idefics3 /
SmolVLM, Pixtral, Llama 4): its encoder
layers, each layer's attention module (where ``capture.VisionScoreCapture`` reads q/k), whether
it has a [CLS] token. ``run_tower`` calls the tower's own ``forward`` (so embeddings, pre-norms and the
model's own attention implementation are exactly the model's) and leaves it by raising a private
exception from a forward hook on the last needed layer. Nothing of the tower is modified; the
hooks exist only during the call and fire only in the calling thread.

Layer indices here are 0-based encoder layers. A transformers ``vision_feature_layer`` v selects
``hidden_states[v]`` of the L+1 hidden states, i.e. the output of encoder layer ``(v mod (L+1)) - 1``.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Dict, Optional

import torch
from torch import nn

from .stop_tower import StopTower, stopped_early


@dataclasses.dataclass(frozen=True)
class VisionTower:
    """Where the pieces of a supported vision tower live.

    layers: the encoder layers (``nn.ModuleList``), layer i's output is ``hidden_states[i + 1]``.
    attention_module(i): layer i's attention module, the one that calls transformers' attention
        function (``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, ...)``)
        with q/k [B, H, S, D] after any q/k norm.
    has_cls: the sequence holds a [CLS] token (CLIP, InternViT, Llama 4) or not (SigLIP).
    cls_last: the [CLS] token is the sequence's LAST token (Llama 4), not its first.
    final_norm: applied by the tower to the last layer's output in ``last_hidden_state``
        (InternViT's ``layernorm``; ``None`` where hidden_states[-1] is used raw).
    """

    module: nn.Module
    layers: nn.ModuleList
    attention_module: Callable[[int], nn.Module]
    has_cls: bool
    final_norm: Optional[nn.Module] = None
    cls_last: bool = False

    @property
    def cls_row(self) -> int:
        """Index of the [CLS] token in the sequence (0, or -1 for a tower that appends it)."""
        return -1 if self.cls_last else 0

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def hidden_state_layer(self, vision_feature_layer: int) -> int:
        """0-based encoder layer whose output is ``hidden_states[vision_feature_layer]``."""
        if not isinstance(vision_feature_layer, int):
            raise ValueError(
                f"vision_feature_layer must be a single int for pruning, got {vision_feature_layer!r} "
                "(several concatenated feature layers are not supported)"
            )
        n_states = self.num_layers + 1
        if not -n_states <= vision_feature_layer < n_states:
            raise ValueError(f"vision_feature_layer={vision_feature_layer} is out of range for a {self.num_layers}-layer tower")
        layer = vision_feature_layer % n_states - 1
        if layer < 0:
            raise ValueError("vision_feature_layer selects the embeddings (hidden_states[0]); pruning needs an encoder layer")
        return layer


def encoder_tower(tower: nn.Module) -> VisionTower:
    """The ``VisionTower`` of a tower without [CLS] whose layers are ``tower.encoder.layers`` with their attention
    as ``self_attn`` (Gemma 4's, MiniCPM-V's), whatever its class is called."""
    layers = tower.encoder.layers
    return VisionTower(module=tower, layers=layers, attention_module=lambda i: layers[i].self_attn, has_cls=False)


def describe_tower(tower: nn.Module) -> VisionTower:
    """The ``VisionTower`` of a CLIP, SigLIP (1 or 2), InternViT, DINOv2, Idefics3 / SmolVLM, Pixtral or Llama 4 vision
    model; a clear error otherwise."""
    name = type(tower).__name__
    if name in ("CLIPVisionModel", "SiglipVisionModel", "Siglip2VisionModel"):
        layers, attention, final_norm = tower.encoder.layers, "self_attn", None
    elif name == "InternVLVisionModel":
        layers, attention, final_norm = tower.encoder.layer, "attention", tower.layernorm
    elif name in ("Idefics3VisionTransformer", "SmolVLMVisionTransformer"):
        # last_hidden_state (what the connector reads) is the last layer's output after post_layernorm
        layers, attention, final_norm = tower.encoder.layers, "self_attn", tower.post_layernorm
    elif name == "PixtralVisionModel":
        # hidden_states[-1] is the last layer's raw output (no final norm); every image of a call is one
        # segment of a single packed sequence (block-diagonal attention: ``VisionScoreCapture(segments=)``)
        layers, attention, final_norm = tower.transformer.layers, "attention", None
    elif name == "Llama4VisionModel":
        # the [CLS] token is appended after the patches; the adapter reads the last layer after layernorm_post
        layers, attention, final_norm = tower.model.layers, "self_attn", tower.layernorm_post
    elif name == "Dinov2Model":
        # hidden_states[-1] (what LLaVA's vision_feature_layer=-1 reads) is the last layer's raw output;
        # only last_hidden_state has the final layernorm
        layers, attention, final_norm = tower.encoder.layer, "attention", None
    else:
        raise ValueError(
            f"unsupported vision tower {name}: vtprune_kernels supports CLIPVisionModel, SiglipVisionModel, Siglip2VisionModel, "
            "InternVLVisionModel, Dinov2Model, PixtralVisionModel, Llama4VisionModel and the Idefics3 / SmolVLM towers"
        )
    return VisionTower(
        module=tower,
        layers=layers,
        attention_module=lambda i: getattr(layers[i], attention),
        has_cls=name in ("CLIPVisionModel", "InternVLVisionModel", "Dinov2Model", "Llama4VisionModel"),
        final_norm=final_norm,
        cls_last=name == "Llama4VisionModel",
    )


def _layer_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def run_tower(
    tower: VisionTower,
    pixel_values: torch.Tensor,
    *,
    feature_layer: int,
    last_layer: int,
    tower_kwargs: Optional[dict] = None,
) -> Dict[str, torch.Tensor]:
    """Run ``tower`` on pixel_values, stopping after encoder layer ``last_layer`` (>= feature_layer).

    Returns {"features": output of layer ``feature_layer`` [B, S, C]} (S includes [CLS] when the tower
    has one, first or last: ``tower.cls_row``). Layers after ``last_layer`` never run.
    """
    if not 0 <= feature_layer <= last_layer < tower.num_layers:
        raise ValueError(
            f"need 0 <= feature_layer ({feature_layer}) <= last_layer ({last_layer}) < {tower.num_layers} tower layers"
        )
    owner = threading.get_ident()
    outputs: Dict[str, torch.Tensor] = {}

    def keep_features(module, args, output):
        if threading.get_ident() == owner:
            outputs["features"] = _layer_output(output)

    def stop(module, args, output):
        if threading.get_ident() == owner:
            raise StopTower()

    handles = [tower.layers[feature_layer].register_forward_hook(keep_features)]
    handles.append(tower.layers[last_layer].register_forward_hook(stop))
    with stopped_early(handles):
        tower.module(pixel_values=pixel_values, return_dict=True, **(tower_kwargs or {}))
    if "features" not in outputs:
        raise RuntimeError("the vision tower returned before reaching the feature layer")
    return outputs
