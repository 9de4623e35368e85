"""check-kernels provider: every Triton kernel configuration, compiled ahead of time without a GPU.

``collect(archs)`` compiles each variant of ``vtprune_kernels.triton_kernels.configs.all_variants()``
(every constexpr combination the launcher can pick) for each sm_<arch> with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` and reads registers and spill
bytes from the ptxas log (``TRITON_DUMP_PTXAS_LOG=1``), shared memory from the kernel metadata,
and the SASS instructions per ``MUFU.EX2`` of the exp loop from the cubin (``sass.py``).

The compiles run in worker subprocesses (``python -m vtprune_kernels.kernel_check.triton_aot``),
one per CPU core, with a clean environment: ``TRITON_INTERPRET`` removed (tests set it, and it
replaces JIT kernels by interpreted ones), ptxas log and forced compilation on, a throwaway cache.

What is compiled is the specialization the JIT produces for the common call: contiguous last
dimensions (unit strides become constants), 16-byte-aligned pointers, q/k strides and the head dim
divisible by 16 (head dim = bucket); sequence lengths and lse/output strides generic. Other call
shapes get their own (JIT) specialization at run time.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from . import sass
from .report import ARCHS, KernelReport

NAME_PREFIX = "triton/"
# dynamic shared memory a block may use: sm_80 (A100) 163 KiB, sm_90 (H100) 227 KiB
MAX_SHARED_BYTES = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
_POINTER_TYPES = {"float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16"}
_FLOAT_ARGS = ("qk_scale_log2", "out_scale")
_UNIT_STRIDES = ("stride_qd", "stride_kd", "stride_lm", "stride_on")
_DIVISIBLE_BY_16 = ("D", "stride_qb", "stride_qh", "stride_qm", "stride_kb", "stride_kh", "stride_kn")
_WORKER_TIMEOUT_S = 1800


def _kernel_of(variant):
    from vtprune_kernels.triton_kernels.column_scores import column_scores_kernel
    from vtprune_kernels.triton_kernels.row_lse import row_lse_kernel

    return {"row_lse": row_lse_kernel, "column_scores": column_scores_kernel}[variant.kernel]


def _source(variant):
    """ASTSource of a variant: argument types, constants and divisibility hints (see module doc)."""
    from triton.compiler import ASTSource

    fn = _kernel_of(variant)
    constexprs = variant.constexprs(upcast=False)
    constexprs.update({name: 1 for name in _UNIT_STRIDES if name in fn.arg_names})
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ("q_ptr", "k_ptr"):
            signature[name] = _POINTER_TYPES[variant.dtype]
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        elif name in _FLOAT_ARGS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    hinted = [n for n in fn.arg_names if n.endswith("_ptr") or n in _DIVISIBLE_BY_16]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in hinted}
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def parse_ptxas_log(log: str) -> Dict[str, int]:
    """{"registers", "spill_bytes"} from ``ptxas -v`` output (spill stores + spill loads)."""
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if regs is None or spills is None:
        raise RuntimeError(f"could not read registers/spills from the ptxas log: {log.strip()[:200]!r}")
    return {"registers": int(regs.group(1)), "spill_bytes": int(spills.group(1)) + int(spills.group(2))}


def compile_variant(variant, arch: int) -> dict:
    """Compile one variant for sm_<arch> in this process (needs TRITON_DUMP_PTXAS_LOG=1,
    TRITON_ALWAYS_COMPILE=1 and no TRITON_INTERPRET); returns a KernelReport as a dict."""
    import triton
    from triton.backends.compiler import GPUTarget

    row = {"kernel": NAME_PREFIX + variant.name, "arch": arch}
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):  # triton prints the ptxas log
            compiled = triton.compile(
                _source(variant), target=GPUTarget("cuda", arch, 32), options=variant.launch_options()
            )
        row.update(parse_ptxas_log(log.getvalue()))
        row["shared_bytes"] = int(compiled.metadata.shared)
        row["instr_per_ex2"] = sass.instructions_per_ex2(sass.disassemble(compiled.asm["cubin"]))
        limit = MAX_SHARED_BYTES.get(arch)
        if limit is not None and row["shared_bytes"] > limit:
            row["error"] = f"{row['shared_bytes']} B of shared memory exceed the sm_{arch} limit of {limit} B"
    except Exception as exc:  # a compile error is a row of the table, not a crash of the command
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
    return row


def _worker_env(cache_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_DUMP_PTXAS_LOG="1", TRITON_ALWAYS_COMPILE="1", TRITON_CACHE_DIR=cache_dir)
    return env


def collect(
    archs: Sequence[int] = ARCHS, variants: Optional[Sequence] = None, workers: Optional[int] = None
) -> List[KernelReport]:
    """KernelReport rows of every (variant, arch), in that order. ``variants`` defaults to every
    shipped configuration; ``workers`` (compile processes) to the CPU count, at most 8."""
    from vtprune_kernels.triton_kernels import configs

    variants = configs.all_variants() if variants is None else list(variants)
    jobs = [f"{v.name}@{arch}" for v in variants for arch in archs]
    if not jobs:
        return []
    workers = max(1, min(len(jobs), workers or min(os.cpu_count() or 1, 8)))
    chunks = [jobs[i::workers] for i in range(workers)]
    rows: Dict[str, KernelReport] = {}
    with tempfile.TemporaryDirectory(prefix="vtprune-triton-aot-") as cache_dir:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", __name__, *chunk],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_worker_env(cache_dir),
            )
            for chunk in chunks
        ]
        for proc, chunk in zip(procs, chunks):
            out, err = proc.communicate(timeout=_WORKER_TIMEOUT_S)
            for line in out.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    rows[f"{row['kernel'][len(NAME_PREFIX):]}@{row['arch']}"] = KernelReport(**row)
            for job in chunk:  # a worker that died leaves error rows, never silently missing ones
                if job not in rows:
                    name, arch = job.rsplit("@", 1)
                    tail = err.strip().splitlines()[-1] if err.strip() else f"exit status {proc.returncode}"
                    rows[job] = KernelReport(NAME_PREFIX + name, int(arch), error=f"worker failed: {tail}"[:300])
    return [rows[job] for job in jobs]


def main(argv=None) -> int:
    """Worker: compile the given NAME@ARCH jobs, one JSON line per job on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", help="variant name @ arch, e.g. row_lse_float16_d64_m128n64w8s3@90")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the kernels would be interpreted, not compiled")
    from vtprune_kernels.triton_kernels import configs

    by_name = {v.name: v for v in configs.all_variants()}
    for job in args.jobs:
        name, arch = job.rsplit("@", 1)
        if name not in by_name:
            row = {"kernel": NAME_PREFIX + name, "arch": int(arch), "error": "unknown variant"}
        else:
            row = compile_variant(by_name[name], int(arch))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
