"""One row of the check-kernels table, the table itself, and the command's verdict."""
from __future__ import annotations

import dataclasses
import importlib
from typing import Iterable, List, Optional

from .. import text_table

ARCHS = (80, 90)
# Modules that provide ``collect(archs) -> list[KernelReport]``.
PROVIDERS = ("vtprune_kernels.kernel_check.triton_aot", "vtprune_kernels.kernel_check.nvcc")


@dataclasses.dataclass
class KernelReport:
    """A kernel configuration compiled for one architecture (sm_<arch>)."""

    kernel: str
    arch: int
    registers: Optional[int] = None
    spill_bytes: Optional[int] = None  # spill stores + spill loads, bytes
    shared_bytes: Optional[int] = None
    error: Optional[str] = None
    # SASS instructions per MUFU.EX2 in the kernel's exp loop (kernel_check/sass.py); None when
    # the kernel computes no exp in a loop (the selection kernels) or was not disassembled
    instr_per_ex2: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.spill_bytes


def format_table(rows: Iterable[KernelReport]) -> str:
    """The check-kernels table: one line per configuration and architecture."""
    body = [
        (
            r.kernel,
            f"sm_{r.arch}",
            "-" if r.registers is None else r.registers,
            "-" if r.spill_bytes is None else r.spill_bytes,
            "-" if r.shared_bytes is None else r.shared_bytes,
            "-" if r.instr_per_ex2 is None else f"{r.instr_per_ex2:.2f}",
            "ok" if r.ok else (f"ERROR: {r.error}" if r.error else "SPILLS"),
        )
        for r in rows
    ]
    return text_table.format_table(("kernel", "arch", "regs", "spill B", "smem B", "instr/ex2", "status"), body, "llrrrrl")


def run_all(archs=ARCHS, providers=PROVIDERS) -> List[KernelReport]:
    rows: List[KernelReport] = []
    for name in providers:
        rows += importlib.import_module(name).collect(archs)
    return rows
