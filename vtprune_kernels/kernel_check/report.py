"""One row of the check-kernels table, the table itself, and the command's verdict."""
from __future__ import annotations

import dataclasses
import importlib
from typing import Iterable, List, Optional

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

    @property
    def ok(self) -> bool:
        return self.error is None and not self.spill_bytes


def format_table(rows: Iterable[KernelReport]) -> str:
    rows = list(rows)
    header = ("kernel", "arch", "regs", "spill B", "smem B", "status")
    body = [
        (
            r.kernel,
            f"sm_{r.arch}",
            "-" if r.registers is None else str(r.registers),
            "-" if r.spill_bytes is None else str(r.spill_bytes),
            "-" if r.shared_bytes is None else str(r.shared_bytes),
            "ok" if r.ok else (f"ERROR: {r.error}" if r.error else "SPILLS"),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def run_all(archs=ARCHS, providers=PROVIDERS) -> List[KernelReport]:
    rows: List[KernelReport] = []
    for name in providers:
        rows += importlib.import_module(name).collect(archs)
    return rows
