"""``vtprune`` / ``python -m vtprune_kernels``: demo, bench, check-kernels."""
from __future__ import annotations

import argparse
import sys


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
    import time

    import torch

    from . import ops

    torch.manual_seed(0)
    q = torch.randn(2, 16, 577, 64)
    k = torch.randn(2, 16, 577, 64)
    for backend in ("reference", "cpu"):
        t0 = time.perf_counter()
        s = ops.attention_scores(q, k, backend=backend)
        print(f"attention_scores[{backend}]: {1e3 * (time.perf_counter() - t0):.1f} ms, top-5 keys {s[0].topk(5).indices.tolist()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtprune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-kernels", help="compile every GPU kernel for sm_80/sm_90 and report registers/spills").set_defaults(
        func=_check_kernels
    )
    demo = sub.add_parser("demo", help="prune visual tokens of a (tiny, embedded) VLM and show the result")
    demo.add_argument("--out", default="demo_out")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
