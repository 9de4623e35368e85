"""``vtprune bench``: run the op timing loop (``op_bench``), print a table, optionally write JSON."""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import torch

from .errors import DemoInputError
from ..text_table import format_table


def run_bench(
    device: str = "cpu",
    json_path: Optional[str] = None,
    only_ops: Optional[Sequence[str]] = None,
    min_time: float = 0.2,
    progress: bool = True,
) -> int:
    """Time the ops on ``device``; prints one row per case. Returns the exit status."""
    from . import op_bench

    if device == "cuda" and not torch.cuda.is_available():
        raise DemoInputError("--device cuda: no CUDA device is available")
    if min_time < 0:
        raise DemoInputError(f"--min-time must be >= 0, got {min_time}")
    rows = op_bench.run(device, only_ops=only_ops, min_time=min_time, progress=progress)
    env = op_bench.environment(device)
    where = env["gpu"] if "gpu" in env else f"{env['threads']} CPU threads"
    print(f"vtprune bench on {env['device']} ({where}), torch {env['torch']}")
    table = [
        [r["op"], r["case"], r["shape"], f"{1e3 * r['vtprune_s']:.3f}", f"{1e3 * r['baseline_s']:.3f}", r["baseline"], f"{r['speedup']:.1f}x"]
        for r in rows
    ]
    print(format_table(["op", "case", "shape", "vtprune ms", "baseline ms", "baseline", "speedup"], table, "lllrrlr"))
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump({"environment": env, "results": rows}, f, indent=2)
        print(f"results written to {json_path}")
    return 0
