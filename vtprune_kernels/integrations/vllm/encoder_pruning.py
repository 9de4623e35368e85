"""One pruned model's pruning state: the method, what it needs from the tower, selection and gather.

Selection depends only on the image and the configuration (vLLM's encoder cache keys on them):
the ops are row-wise, so batching images together changes nothing, except for ``Random``, whose
generator advances with every row it draws: each image is selected by a fresh ``Random(keep,
seed)`` (its tiles are rows 0, 1, ...), as ``apply()`` with a new ``Random`` does for that image alone.

Every index is host data uploaded without waiting and every gather has a size known on the host
(``nonzero_static``), so the encoder step is meant not to synchronise with the device (the kept
counts are known before it runs); this is not measured on a GPU yet. Only ``selections()`` reads
device data.
"""
from __future__ import annotations

import collections
import contextlib
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ...methods import Random
from ...methods.hivtp import PAPER_LAYERS
from ..adapter import make_captured, score_layers, select
from .encoder_capture import EncoderLayout, EncoderScoreCapture, describe_encoder
from .switch import method_from_config

# Encoded images whose selection ``selections()`` can still report (a bounded log, for plots and tests).
LOG_SIZE = 256


class EncoderPruning:
    """Pruning of a vLLM model's images: built in the model's ``__init__`` (engine start).

    method: the configured method object. layout: the tower's attention layout (``describe_encoder``,
    or given: a tower whose scores another capture collects, Gemma 4's transformers tower). needs: what the
    method asks for. score_layers: the encoder layers scored, resolved as ``apply()`` resolves them
    (``adapter.score_layers``): the method's own (negative: counted from the end of the model's
    ``tower_depth``-layer tower), or by default the ``feature_layer`` (LLaVA, InternVL: the last
    layer vLLM instantiates, i.e. the layer whose output the model uses; Qwen2.5-VL: its last
    full-attention block) or the ``middle_layers``.
    """

    def __init__(
        self,
        hf_config,
        architecture: str,
        tower,
        *,
        tower_depth: Optional[int] = None,
        feature_layer: Optional[int] = None,
        middle_layers: Sequence[int] = PAPER_LAYERS,
        backend: str = "auto",
        layout: Optional[EncoderLayout] = None,
    ):
        self.method = method_from_config(hf_config, architecture)
        self.layout = describe_encoder(tower) if layout is None else layout
        self.needs = self.method.needs(self.layout.has_cls)
        if self.needs.cls_embedding or self.needs.llm_probe_layer is not None:
            raise ValueError(f"{type(self.method).__name__} needs the prompt (an LLM probe): not supported by the vLLM plugin")
        last = self.layout.num_layers - 1
        depth = hf_config.vision_config.num_hidden_layers if tower_depth is None else tower_depth
        self.score_layers = tuple(score_layers(self.needs, last if feature_layer is None else feature_layer, depth, middle_layers))
        if any(not 0 <= i <= last for i in self.score_layers):
            raise ValueError(
                f"{architecture}: {type(self.method).__name__} scores vision layers {self.score_layers}, but vLLM builds "
                f"this tower with {self.layout.num_layers} layers (LLaVA's only up to its feature layer)"
            )
        self.backend = backend
        self._log: collections.deque = collections.deque(maxlen=LOG_SIZE)

    @property
    def keep(self) -> int:
        return self.method.keep

    def capture(
        self, segments: Optional[Callable[[int], Sequence[int]]] = None, row_lengths: Optional[Sequence[int]] = None
    ):
        """Context manager around one encoder call: an ``EncoderScoreCapture`` on the scored layers,
        or nothing for methods that need no scores. ``.scores()`` of the result: float32 [B, S] or None.
        segments: for packed towers, layer -> the lengths of the segments it attends inside.
        row_lengths: for padded towers, the real length of each row the scored layers attend over."""
        if self.needs.query_rows == "none":
            return contextlib.nullcontext(_NoScores())
        per_layer = None if segments is None else {i: segments(i) for i in self.score_layers}
        return EncoderScoreCapture(
            self.layout, self.score_layers, self.needs.query_rows, segments=per_layer, row_lengths=row_lengths,
            backend=self.backend,
        )

    def select(
        self,
        scores: Optional[torch.Tensor],
        features: torch.Tensor,
        grid: Tuple[int, int],
        tiles_per_image: Sequence[int],
        valid: Optional[torch.Tensor] = None,
        method=None,
    ) -> torch.Tensor:
        """bool [T, N] keep mask of T = sum(tiles_per_image) tiles, min(keep, N) per tile (min(keep,
        valid tokens) among the valid ones with ``valid``, a host bool [T, N]).

        scores float32 [T, N] ([CLS] column dropped) or None; features [T, N, C]; grid (h, w).
        method: the method object to select with (``image_method()``: one image whose tiles, of
        different grids, are selected in several calls); None: the configured one, a fresh Random per image."""
        T, N = features.shape[:2]
        if method is None and isinstance(self.method, Random):  # a fresh generator per image: the selection depends on the image alone
            groups: List[Tuple[int, int]] = []
            first = 0
            for t in tiles_per_image:
                groups.append((first, first + t))
                first += t
        else:
            groups = [(0, T)]
        keeps = []
        for a, b in groups:
            captured = make_captured(
                self.needs, grid, None if scores is None else scores[a:b],
                features[a:b] if self.needs.features else None, batch_size=b - a,
                valid=None if valid is None else valid[a:b],
            )
            captured.device = features.device
            keeps.append(select(self.image_method() if method is None else method, captured, (b - a, N), self.backend))
        return keeps[0] if len(keeps) == 1 else torch.cat(keeps)

    def image_method(self):
        """The method one image selects with: a fresh ``Random(keep, seed)`` (its draws depend on the image
        alone), else the configured method."""
        return Random(self.method.keep, seed=self.method.seed) if isinstance(self.method, Random) else self.method

    def selection_features(self, make: Callable[[], torch.Tensor], rows: int, tokens: int, like: torch.Tensor) -> torch.Tensor:
        """``make()`` ([rows, tokens, C] features) when the method compares features (VisPruner), else an
        empty [rows, tokens, 0] tensor on ``like``'s device: ``select`` then reads only its shape, and the
        features are not computed for nothing."""
        return make() if self.needs.features else like.new_empty(rows, tokens, 0)

    def record(self, keeps: Sequence[torch.Tensor]) -> None:
        """Log each image's keep mask (bool [tiles, N], on the device; read only by ``selections``)."""
        self._log.extend(k.detach() for k in keeps)

    def selections(self, clear: bool = False) -> List[torch.Tensor]:
        """Per encoded image (oldest first, up to LOG_SIZE): int64 CPU kept indices into its unpruned
        tokens (tile * N + token over its tiles). ``clear`` empties the log."""
        out = [k.reshape(-1).nonzero().flatten().cpu() for k in self._log]
        if clear:
            self._log.clear()
        return out


def check_encoder_runs_eagerly(vllm_config, architecture: str) -> None:
    """Engine-start refusal of a compiled encoder or an encoder CUDA graph (``compile_mm_encoder``,
    ``cudagraph_mm_encoder``): either would run the unpruned encoder without the score capture."""
    compilation = vllm_config.compilation_config
    if compilation.compile_mm_encoder:
        raise ValueError(f"{architecture}: the score capture runs eagerly; turn off compile_mm_encoder")
    if getattr(compilation, "cudagraph_mm_encoder", False):
        raise ValueError(
            f"{architecture}: the encoder CUDA graph (cudagraph_mm_encoder) replays the unpruned encoder without the "
            "score capture; turn it off"
        )


class _NoScores:
    def scores(self):
        return None


def gather_kept(x: torch.Tensor, keep: torch.Tensor, per_row: int) -> torch.Tensor:
    """[T, per_row, C]: the kept rows of x [T, N, C], in order, for a mask keeping ``per_row`` per row."""
    T = x.shape[0]
    index = torch.nonzero_static(keep, size=T * per_row)  # [T * per_row, 2], row-major: no host sync
    return x[index[:, 0], index[:, 1]].view(T, per_row, x.shape[-1])
