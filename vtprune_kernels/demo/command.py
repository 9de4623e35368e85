"""``vtprune demo``: load a model (embedded tiny LLaVA or a local checkpoint), prune, report, draw."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import torch

from .checkpoint import LoadedModel, build_inputs, load_checkpoint, visual_tokens_per_tile
from .errors import DemoInputError
from .method_names import METHOD_NAMES, parse_method_names
from .render import comparison_picture, method_picture
from ..text_table import format_table
from .report import mib, ms, printable
from .llava_factory import TINY, build_llava
from .session import DemoSession, MethodResult, run_session

DEFAULT_PROMPT = "Describe the picture."
TINY_NAME = "embedded tiny LLaVA-1.5-style model (random weights, seed 0)"


def load_model(path: Optional[str], device) -> LoadedModel:
    """The checkpoint at ``path``, or the embedded tiny model when ``path`` is None."""
    if path is not None:
        return load_checkpoint(path, device)
    model, processor = build_llava(TINY)
    return LoadedModel(TINY_NAME, model.to(device), processor, TINY.tokens_per_image)


def load_image(path: Optional[str]):
    """The image at ``path`` (RGB), or the bundled procedurally drawn one."""
    from PIL import Image, UnidentifiedImageError

    from .sample_image import sample_image

    if path is None:
        return sample_image()
    if not os.path.isfile(path):
        raise DemoInputError(f"--image {path!r} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise DemoInputError(f"--image {path!r} is not an image PIL can read") from None


def _speedup(base: Optional[float], pruned: Optional[float]) -> str:
    return "n/a" if not base or not pruned else f"{base / pruned:.2f}x"


def results_table(baseline, methods: Sequence[MethodResult]) -> str:
    """One row per method (the unpruned model first): tokens, timings, memory."""
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
            _speedup(baseline.prefill_s, r.prefill_s),
            ms(r.image_stage_s),
            ms(r.score_s),
            ms(r.select_s),
            ("+" if extra >= 0 else "-") + mib(abs(extra)) if extra is not None else "n/a",
        ])
    return format_table(header, rows)


TABLE_LEGEND = """\
visual tokens: image placeholders the language model gets; prefill: one forward over the prompt
(vision tower, pruning, language model); image stage: pixels to language-model inputs; score: time
inside vtprune::attention_scores; select: time inside the method's selection; extra MiB: peak
tensor memory of the pruned image stage minus that of the unpruned one (negative: it saves)."""


def write_pictures(out_dir: str, input_tiles, methods: Sequence[MethodResult]) -> List[str]:
    """demo_<method>.png per method and demo_all.png side by side; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    rows = [("input", input_tiles)]
    for r in methods:
        if r.skipped or not r.panels:
            continue
        kept = sum(int(p.keep.sum()) for p in r.panels)
        caption = f"{r.name}: {kept}/{sum(p.keep.numel() for p in r.panels)} kept"
        rows.append((caption, r.panels))
        path = os.path.join(out_dir, f"demo_{r.name.lower()}.png")
        method_picture(caption, r.panels).save(path)
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
) -> int:
    """The whole demo; prints the report and returns the exit status (0 when every requested
    method ran). ``methods=None`` runs every method that applies to the model."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DemoInputError("--device cuda: no CUDA device is available")
    torch.manual_seed(0)
    loaded = load_model(model_path, device)
    image = load_image(image_path)
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
    print(f"image: {image_path or 'bundled sample (drawn by vtprune_kernels.demo)'}; prompt: {prompt!r}")
    print(f"device: {device}, {torch.get_num_threads()} threads; keep {keep} of {per_tile} tokens per tile "
          f"(HIVTP: its own count); backend {backend}; times are medians of {repeats} runs")
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
    if any(r.name == "HIVTP" for r in ran):
        print("note: HIVTP has no token budget (25% per region, then one token per 2x2 window): its count varies per image.")
    if ran:
        written = write_pictures(out_dir, session.input_panels(), ran)
        print()
        print("pictures: " + ", ".join(written))
    if skipped and methods:
        return 1  # a method the user asked for explicitly did not run
    return 0 if ran else 1
