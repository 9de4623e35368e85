"""Launch configurations of the attention-scoring kernels, and the list of every compiled variant.

The choice is a fixed table per (kernel, head-dim bucket, dtype): deterministic, no autotuning.
``all_variants()`` enumerates every constexpr combination the launcher can pick; the
``check-kernels`` command compiles exactly that list, so nothing ships uncompiled.

Sizing (InternViT-300M: 13 tiles x 1025 tokens x 16 heads x d=64 is the target): the passes are
bound by exp throughput, the column pass re-reads q once per BLOCK_N keys, so BLOCK_N is 128
where registers allow (q traffic from L2 stays well under its bandwidth); large head dims and
float32 (full-precision FMA dot) use smaller tiles to stay spill-free.

float32 is the slow dtype by construction: its logits are an exact FMA dot (tiles.logits), D
FFMAs per logit on the CUDA cores, so check-kernels counts 64 (d=64) to 370 (d=256) instructions
per ex2 and the passes are bound by FMA issue, not by the exp unit. TF32 (one tensor-core pass)
would round q and k to 11-bit significands, outside the float32 tolerance. 3xTF32 (Triton's
``input_precision="tf32x3"``: hi/lo splits, three MMAs, close to float32 accuracy) compiles to
15-42 instr/ex2 at d=64 on sm_90, at 220-254 registers; not adopted until it is validated and
timed on a GPU. Models on GPUs run in 16 bits, which take the fast path.

Occupancy: at sm_80 the 16-bit column pass needs 157-234 registers (one 8-warp program per SM);
the tiles are sized for sm_90 (116-135 registers, two programs per SM), the H100/H200 target.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from ..validation import HEAD_REDUCES, QUERY_REDUCES
from . import column_scores

# the kernel's mode codes, as plain ints
REDUCE_SUM = int(column_scores.REDUCE_SUM)
REDUCE_MAX = int(column_scores.REDUCE_MAX)
ONE_HEAD = int(column_scores.ONE_HEAD)

HEAD_DIM_BUCKETS = (64, 128, 256)  # BLOCK_D: a head dim is padded (masked) up to the next bucket
DTYPES = ("float32", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    block_m: int  # query rows per tile
    block_n: int  # keys per tile
    num_warps: int
    num_stages: int


# Chosen from the check-kernels table (registers, spills, shared memory, instr/ex2 on sm_80 and
# sm_90). "16bit" covers float16 and bfloat16; float32 multiplies exactly ("ieee" FMA dot, operands
# in registers): small tiles, and no pipelining in the column pass.
# 16-bit row_lse: 64-row blocks (a 1025-row tower's last row costs one 16-row tail block; PTP's
# 64 instruction rows are one block), 128 keys per tile and 4 warps (one warpgroup: 64 exps per
# thread per tile amortise the tile's loads and barriers: 5.6 instr/ex2 at sm_90, d=64).
# row_lse: (BLOCK_D, dtype class) -> config
_ROW_LSE = {
    (64, "16bit"): LaunchConfig(64, 128, 4, 2),
    (128, "16bit"): LaunchConfig(64, 128, 4, 2),
    (256, "16bit"): LaunchConfig(64, 64, 4, 2),
    (64, "float32"): LaunchConfig(32, 32, 4, 2),
    (128, "float32"): LaunchConfig(16, 64, 8, 2),  # 4 warps: ptxas spills on sm_90 (fully unrolled FMA dot)
    (256, "float32"): LaunchConfig(16, 64, 8, 2),
}
# column_scores: (one program per head?, dtype class) -> config, spill-free for every BLOCK_D.
# One head: elementwise accumulator, k tile loaded once. All heads: a k tile load per head and
# row tile, and a head-reduced tile next to the probabilities. 8 warps on 64 x 128 tiles (32 exps
# per thread per tile): 5.8 (one head) and 7.0 (all heads) instr/ex2 at sm_90, d=64, at 116-135
# registers (two 8-warp programs per SM); 4 warps would issue fewer instructions (4.4) but at 210
# registers, half the warps per SM to hide the exp and memory latencies.
_COLUMN_SCORES = {
    (True, "16bit"): LaunchConfig(64, 128, 8, 2),
    (False, "16bit"): LaunchConfig(64, 64, 8, 2),
    (True, "float32"): LaunchConfig(16, 64, 8, 1),
    (False, "float32"): LaunchConfig(32, 32, 8, 1),
}
# Per head-dim exceptions. All heads, 16-bit, d=64: 64 x 128 tiles (larger head dims spill with
# them). float32, one head, d=128: 4 warps (ptxas's allocation of the unrolled FMA dot is erratic:
# 8 warps spill 12 bytes on sm_80 at 48 registers).
_COLUMN_SCORES_BY_HEAD_DIM = {
    (False, "16bit", 64): LaunchConfig(64, 128, 8, 2),
    (True, "float32", 128): LaunchConfig(16, 64, 4, 1),
}


def block_d(head_dim: int) -> int:
    """The head-dim bucket (BLOCK_D) of a head dim in [1, 256]."""
    for bucket in HEAD_DIM_BUCKETS:
        if head_dim <= bucket:
            return bucket
    raise ValueError(f"head dim {head_dim} exceeds the largest supported bucket {HEAD_DIM_BUCKETS[-1]}")


def _dtype_class(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return "float32" if dtype == "float32" else "16bit"


def row_lse_config(bd: int, dtype: str) -> LaunchConfig:
    return _ROW_LSE[(bd, _dtype_class(dtype))]


def column_scores_config(bd: int, dtype: str, head_op: int) -> LaunchConfig:
    if bd not in HEAD_DIM_BUCKETS:
        raise ValueError(f"BLOCK_D must be one of {HEAD_DIM_BUCKETS}, got {bd}")
    key = (head_op == ONE_HEAD, _dtype_class(dtype))
    return _COLUMN_SCORES_BY_HEAD_DIM.get(key + (bd,), _COLUMN_SCORES[key])


@dataclasses.dataclass(frozen=True)
class ColumnMode:
    """How the column pass computes QR_i HR_h p for one (query_reduce, head_reduce)."""

    head_op: int  # ONE_HEAD (a program per head) or REDUCE_SUM / REDUCE_MAX over every head
    row_op: int  # REDUCE_SUM or REDUCE_MAX over query rows
    sum_heads_after: bool  # per-head partials are summed over heads afterwards (head mean, linear)


def column_mode(query_reduce: str, head_reduce: str) -> ColumnMode:
    """The kernel mode of a reduction pair. A head mean followed by a row sum/mean is linear: one
    program per head, heads summed afterwards (more parallelism, no repeated k loads); any max needs
    the head reduction per (i, j) first, so those programs loop over every head."""
    row_op = REDUCE_MAX if query_reduce == "max" else REDUCE_SUM
    if head_reduce == "none":
        return ColumnMode(ONE_HEAD, row_op, False)
    if head_reduce == "mean" and query_reduce != "max":
        return ColumnMode(ONE_HEAD, row_op, True)
    return ColumnMode(REDUCE_SUM if head_reduce == "mean" else REDUCE_MAX, row_op, False)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compiled kernel: the kernel's name, its constexprs and launch options."""

    kernel: str  # "row_lse" or "column_scores"
    dtype: str
    block_d: int
    config: LaunchConfig
    mode: Optional[ColumnMode] = None

    @property
    def name(self) -> str:
        c = self.config
        mode = "" if self.mode is None else f"_head{_OP_NAMES[self.mode.head_op]}_row{_OP_NAMES[self.mode.row_op]}"
        return f"{self.kernel}{mode}_{self.dtype}_d{self.block_d}_m{c.block_m}n{c.block_n}w{c.num_warps}s{c.num_stages}"

    def launch_options(self) -> dict:
        """num_warps / num_stages / FMA contraction (explicit: triton warns when it is left unset)."""
        return dict(num_warps=self.config.num_warps, num_stages=self.config.num_stages, enable_fp_fusion=True)

    def constexprs(self, upcast: bool = False) -> dict:
        values = dict(BLOCK_M=self.config.block_m, BLOCK_N=self.config.block_n, BLOCK_D=self.block_d, UPCAST=upcast)
        if self.mode is not None:
            values.update(HEAD_OP=self.mode.head_op, ROW_OP=self.mode.row_op)
        return values


_OP_NAMES = {REDUCE_SUM: "sum", REDUCE_MAX: "max", ONE_HEAD: "one"}


def row_lse_variant(head_dim: int, dtype: str) -> Variant:
    bd = block_d(head_dim)
    return Variant("row_lse", dtype, bd, row_lse_config(bd, dtype))


def column_scores_variant(head_dim: int, dtype: str, mode: ColumnMode) -> Variant:
    bd = block_d(head_dim)
    return Variant("column_scores", dtype, bd, column_scores_config(bd, dtype, mode.head_op), mode)


def all_variants() -> List[Variant]:
    """Every kernel configuration the launcher can pick (what check-kernels compiles)."""
    # sum_heads_after is the launcher's business: the kernel is the same
    modes = {(m.head_op, m.row_op): m for m in (column_mode(qr, hr) for qr in QUERY_REDUCES for hr in HEAD_REDUCES)}
    variants = []
    for dtype in DTYPES:
        for bd in HEAD_DIM_BUCKETS:
            variants.append(row_lse_variant(bd, dtype))
            variants += [column_scores_variant(bd, dtype, mode) for mode in modes.values()]
    return variants
