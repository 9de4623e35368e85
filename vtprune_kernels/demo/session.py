"""One demo run: a model, one image, one prompt, the unpruned baseline and every method.

For each method the model is wrapped with ``vtprune_kernels.apply`` and measured:

- visual tokens before / after (the selection the handle reports);
- prefill: ``model(**inputs)`` (vision tower, pruning, language model over the prompt), pruned
  and unpruned timed alternately, the fastest of ``repeats`` runs of each (``paired_fastest``);
  the speedup is the ratio of that pair;
- the image stage: ``handle.prepare_inputs`` (tower up to the layer the method needs, scoring
  from captured q/k, selection, projector on the kept tokens, prompt rebuilt) vs the model's
  own ``get_image_features`` (whole tower, projector on every token), timed the same way;
- scoring: time inside ``vtprune::attention_scores`` (profiler, separate pass);
  selecting: time inside the method's ``select_captured``;
- extra memory: peak tensor memory of the pruned image stage minus that of the unpruned one
  (allocator view, see ``measure.py``);
- the generated text (greedy);
- which stage of the method kept each token, for methods with stages (VisPruner: important /
  diverse; HIVTP: regional / local), drawn in two colours.
"""
from __future__ import annotations

import dataclasses
import functools
import operator
import statistics
import time
from typing import List, Optional, Sequence, Tuple

import torch

from .measure import paired_fastest, peak_memory, quiet_profile, synchronize
from .method_names import build_method, display_name
from .render import Panel, pixels_to_image


@dataclasses.dataclass
class BaselineResult:
    """The unpruned model on the demo input. prefill_s / image_stage_s: the fastest unpruned run of
    all the methods' paired timings."""

    visual_tokens: int
    prefill_s: float
    image_stage_s: float
    image_stage_peak: int
    text: str


@dataclasses.dataclass
class MethodResult:
    """One method on the demo input (``skipped`` holds the reason when it does not apply).
    visual_tokens / kept_tokens: image placeholders in the prompt before / after pruning;
    prefill_s / image_stage_s: fastest pruned run; unpruned_prefill_s / unpruned_image_stage_s:
    fastest unpruned run of the same alternating sequence (the pair a speedup compares);
    panels: per tile, its pixels and kept-token grid (from the handle's selection), with the
    stage of each kept token when the method has stages (``stage_names``)."""

    name: str
    method: str
    visual_tokens: int = 0
    kept_tokens: int = 0
    prefill_s: Optional[float] = None
    unpruned_prefill_s: Optional[float] = None
    image_stage_s: Optional[float] = None
    unpruned_image_stage_s: Optional[float] = None
    score_s: Optional[float] = None
    select_s: Optional[float] = None
    image_stage_peak: Optional[int] = None
    text: str = ""
    panels: List[Panel] = dataclasses.field(default_factory=list)
    stage_names: Tuple[str, ...] = ()
    skipped: Optional[str] = None


class TimedMethod:
    """Wraps a pruning method and records the wall time of each ``select_captured`` call
    (synchronising ``device`` around it); everything else is the wrapped method's."""

    def __init__(self, method, device):
        self.method = method
        self.device = torch.device(device)
        self.seconds: List[float] = []
        self.last_stages: Optional[Sequence[torch.Tensor]] = None

    def needs(self, has_cls: bool):
        return self.method.needs(has_cls)

    def select_captured(self, captured, *, backend: str = "auto"):
        """The method's keep mask; methods with stages (``select_captured_stages``) are asked for
        their stage masks, kept in ``last_stages``, and their union is returned."""
        by_stage = getattr(self.method, "select_captured_stages", None)
        synchronize(self.device)
        start = time.perf_counter()
        if by_stage is None:
            stages, keep = None, self.method.select_captured(captured, backend=backend)
        else:
            stages = by_stage(captured, backend=backend)
            keep = functools.reduce(operator.or_, stages)
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - start)
        self.last_stages = stages
        return keep

    def __getattr__(self, name):
        return getattr(self.method, name)

    def __repr__(self):
        return repr(self.method)


def timed(method, device) -> TimedMethod:
    """``TimedMethod(method, device)`` of a subclass named like the method's class, so messages that
    name ``type(method).__name__`` (e.g. "PTP needs ...") still name the method."""
    cls = type(type(method).__name__, (TimedMethod,), {})
    return cls(method, device)


def scoring_seconds(fn, device) -> Optional[float]:
    """Time spent inside ``vtprune::attention_scores`` during one call of ``fn()`` (profiler:
    CPU time of the op on the CPU, its kernels' device time on CUDA); None when the op did not
    run (``backend="reference"`` scores in plain PyTorch, outside the op)."""
    device = torch.device(device)
    with quiet_profile(device) as prof:
        fn()
        synchronize(device)
    events = [e for e in prof.key_averages() if e.key == "vtprune::attention_scores"]
    if not events:
        return None
    return 1e-6 * sum(e.device_time_total if device.type == "cuda" else e.cpu_time_total for e in events)


def _new_text(tokenizer, sequences: torch.Tensor, prompt_length: int) -> str:
    return tokenizer.decode(sequences[0, prompt_length:], skip_special_tokens=True)


def _image_tiles(pixel_values: torch.Tensor, image: int, n_tiles: int, first_tile: int) -> torch.Tensor:
    """[n_tiles, 3, H, W] tiles of one image from processor pixel values of any family."""
    if pixel_values.dim() == 5:  # LLaVA-NeXT: [images, tiles, 3, H, W]
        return pixel_values[image, :n_tiles]
    return pixel_values[first_tile : first_tile + n_tiles]  # LLaVA (1 tile per image), InternVL (tiles stacked)


def selection_panels(
    selection: Sequence[torch.Tensor],
    num_tokens: Sequence[int],
    pixel_values: torch.Tensor,
    tokens_per_tile: int,
    mean: Sequence[float],
    std: Sequence[float],
    stages: Optional[Sequence[torch.Tensor]] = None,
) -> List[Panel]:
    """One panel per tile of every image: the tile's pixels and its kept-token grid.

    selection[i]: kept indices into image i's num_tokens[i] visual tokens, tile-major
    (tile * tokens_per_tile + raster index on the tile's square grid). stages[i] (optional): int8
    [num_tokens[i]], the 1-based stage that kept each token (0: pruned)."""
    side = int(round(tokens_per_tile**0.5))
    if side * side != tokens_per_tile:
        raise ValueError(f"selection_panels: {tokens_per_tile} tokens per tile is not a square grid")
    panels: List[Panel] = []
    first_tile = 0
    for i, (kept, n) in enumerate(zip(selection, num_tokens)):
        n_tiles = n // tokens_per_tile
        keep = torch.zeros(n, dtype=torch.bool)
        keep[kept.cpu()] = True
        tiles = _image_tiles(pixel_values, i, n_tiles, first_tile)
        for t in range(n_tiles):
            cells = slice(t * tokens_per_tile, (t + 1) * tokens_per_tile)
            stage = None if stages is None else stages[i][cells].view(side, side)
            panels.append(Panel(pixels_to_image(tiles[t], mean, std), keep[cells].view(side, side), stage))
        first_tile += n_tiles
    return panels


def stage_labels(stage_masks: Sequence[torch.Tensor], selection: Sequence[torch.Tensor],
                 num_tokens: Sequence[int]) -> Optional[List[torch.Tensor]]:
    """Per image, int8 [n]: which stage kept each token (1-based, 0 = pruned), from the method's
    stage masks ([rows, N] each, rows = the tiles of all images in order). None when the masks do
    not line up with the handle's selection (then the pictures show kept tokens only)."""
    flat = torch.zeros(sum(num_tokens), dtype=torch.int8)
    for s, mask in enumerate(stage_masks, 1):
        mask = mask.detach().reshape(-1).cpu()
        if mask.numel() != flat.numel():
            return None
        flat[mask] = s
    labels = list(torch.split(flat, list(num_tokens)))
    for label, kept in zip(labels, selection):
        if not torch.equal(label.nonzero().flatten(), kept.cpu()):
            return None
    return labels


def input_panels(pixel_values: torch.Tensor, mean, std) -> List[Panel]:
    """The first image's tiles as the model saw them (no overlay)."""
    tiles = pixel_values[0] if pixel_values.dim() == 5 else pixel_values
    return [Panel(pixels_to_image(t, mean, std)) for t in tiles]


class DemoSession:
    """Measures the unpruned model and each method on one prepared input (batch of one image)."""

    def __init__(self, model, processor, inputs, tokens_per_tile: int, *, device="cpu", repeats: int = 3,
                 max_new_tokens: int = 12, backend: str = "auto"):
        self.model = model
        self.processor = processor
        self.inputs = dict(inputs)
        self.tokens_per_tile = tokens_per_tile
        self.device = torch.device(device)
        self.repeats = repeats
        self.max_new_tokens = max_new_tokens
        self.backend = backend
        image_processor = processor.image_processor
        self.mean, self.std = image_processor.image_mean, image_processor.image_std

    def visual_tokens(self, input_ids: torch.Tensor) -> int:
        """Image placeholders in a prompt: the visual tokens the language model gets (LLaVA-NeXT:
        newline tokens included)."""
        return int((input_ids == self.model.config.image_token_id).sum())

    def _prefill(self):
        return self.model(**self.inputs)

    def _image_stage(self):
        kwargs = {k: self.inputs[k] for k in ("pixel_values", "image_sizes", "image_grid_thw") if k in self.inputs}
        return self.model.model.get_image_features(**kwargs)

    def panels(self, selection=None, num_tokens=None, stages=None) -> List[Panel]:
        """Per tile of the input (per image on Qwen-VL), its pixels and kept-token grid, from a
        handle's ``last_selection`` / ``last_num_tokens`` (``selection`` None: the input only), with
        the stage of each kept token (``stage_labels``; not drawn on Qwen-VL)."""
        if "image_grid_thw" in self.inputs:  # Qwen-VL: flattened patches, one merged grid per image
            from .qwen_panels import qwen_panels

            patch = self.processor.image_processor.patch_size
            return qwen_panels(selection, self.inputs["pixel_values"], self.inputs["image_grid_thw"], patch, self.mean, self.std)
        if selection is None:
            return input_panels(self.inputs["pixel_values"], self.mean, self.std)
        return selection_panels(
            selection, num_tokens, self.inputs["pixel_values"], self.tokens_per_tile, self.mean, self.std, stages
        )

    def input_panels(self) -> List[Panel]:
        """The input as the model saw it (no overlay)."""
        return self.panels()

    def _generate(self) -> torch.Tensor:
        return self.model.generate(**self.inputs, max_new_tokens=self.max_new_tokens, do_sample=False)

    def baseline(self, results: Sequence[MethodResult]) -> BaselineResult:
        """The unpruned model: generated text and image-stage memory; its times are the fastest
        unpruned runs of the methods' paired timings (``results``)."""
        ran = [r for r in results if not r.skipped]
        with torch.inference_mode():
            image_peak = peak_memory(self._image_stage, self.device)
            text = _new_text(self.processor.tokenizer, self._generate(), self.inputs["input_ids"].shape[1])
        return BaselineResult(
            self.visual_tokens(self.inputs["input_ids"]),
            min(r.unpruned_prefill_s for r in ran),
            min(r.unpruned_image_stage_s for r in ran),
            image_peak,
            text,
        )

    def run_method(self, name: str, keep: int) -> MethodResult:
        """Apply method ``name`` (keeping ``keep`` tokens per tile) and measure it.
        A method the model does not support (ValueError from the integration) comes back skipped."""
        from .. import apply

        method = build_method(name, keep, self.tokens_per_tile)
        timed_method = timed(method, self.device)
        result = MethodResult(name=display_name(name), method=repr(method))
        try:
            handle = apply(self.model, timed_method, backend=self.backend)
        except ValueError as err:
            result.skipped = str(err)
            return result

        def pruned(call):
            def run():
                with apply(self.model, timed_method, backend=self.backend) as h:
                    return call(h)

            return run

        with torch.inference_mode():
            with handle:
                try:
                    prepared = handle.prepare_inputs(**self.inputs)
                except ValueError as err:
                    result.skipped = str(err)
                    return result
                selection, num_tokens = handle.last_selection, handle.last_num_tokens
            stages = None
            if timed_method.last_stages is not None:
                stages = stage_labels(timed_method.last_stages, selection, num_tokens)
            result.visual_tokens = self.visual_tokens(self.inputs["input_ids"])
            result.kept_tokens = self.visual_tokens(prepared["input_ids"])
            result.panels = self.panels(selection, num_tokens, stages)
            if any(p.stage is not None for p in result.panels):
                result.stage_names = tuple(method.STAGES)
            result.unpruned_prefill_s, result.prefill_s = paired_fastest(
                self._prefill, pruned(lambda h: self.model(**self.inputs)), self.device, repeats=self.repeats
            )
            timed_method.seconds.clear()
            result.unpruned_image_stage_s, result.image_stage_s = paired_fastest(
                self._image_stage, pruned(lambda h: h.prepare_inputs(**self.inputs)), self.device, repeats=self.repeats
            )
            result.select_s = statistics.median(timed_method.seconds)
            with apply(self.model, timed_method, backend=self.backend) as handle:
                result.score_s = scoring_seconds(lambda: handle.prepare_inputs(**self.inputs), self.device)
                result.image_stage_peak = peak_memory(lambda: handle.prepare_inputs(**self.inputs), self.device)
                generated = self._generate()
            result.text = _new_text(self.processor.tokenizer, generated, self.inputs["input_ids"].shape[1])
        return result


def run_session(session: DemoSession, names: Sequence[str], keep: int, progress: bool = True):
    """``(baseline, [MethodResult per name])`` with a progress bar. The methods run first; when
    none applies to the model the baseline is not measured (``None``)."""
    from tqdm.auto import tqdm

    results: List[MethodResult] = []
    with tqdm(total=len(names) + 1, desc="demo", disable=not progress, leave=False) as bar:
        for name in names:
            bar.set_postfix_str(name)
            results.append(session.run_method(name, keep))
            bar.update()
        baseline = None
        if any(not r.skipped for r in results):
            bar.set_postfix_str("unpruned")
            baseline = session.baseline(results)
        bar.update()
    return baseline, results
