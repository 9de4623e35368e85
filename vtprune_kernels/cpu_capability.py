"""Which instruction set the CPU kernels run with.

The CPU kernels' hot loops are compiled once per instruction set ("default": portable,
"avx2": AVX2 + FMA, "avx512": AVX-512 F/BW/VL/DQ; only "default" on non-x86 machines) and one
copy is picked at run time from the CPU's features. The environment variable
``VTPRUNE_CPU_CAPABILITY=default|avx2|avx512`` caps the choice when the process first runs a
kernel (like ``ATEN_CPU_CAPABILITY``); ``use_cpu_capability`` switches it inside a block.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List

import torch

from . import _library  # noqa: F401  (registers torch.ops.vtprune.*)


def cpu_capability() -> str:
    """The instruction set the CPU kernels use now: "default", "avx2" or "avx512"."""
    return torch.ops.vtprune.cpu_capability()


def supported_cpu_capabilities() -> List[str]:
    """Every capability built into the library that this CPU supports, lowest first."""
    return list(torch.ops.vtprune.supported_cpu_capabilities())


def set_cpu_capability(name: str) -> None:
    """Run the CPU kernels with ``name`` from now on (ValueError when it is not supported here)."""
    torch.ops.vtprune.set_cpu_capability(name)


@contextlib.contextmanager
def use_cpu_capability(name: str) -> Iterator[str]:
    """Run the CPU kernels with ``name`` inside the block, then restore the previous choice.
    Process-wide: not for use while other threads run vtprune CPU kernels."""
    previous = cpu_capability()
    set_cpu_capability(name)
    try:
        yield name
    finally:
        set_cpu_capability(previous)
