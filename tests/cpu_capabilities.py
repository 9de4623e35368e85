"""Run a CPU check under every instruction set ("capability") the CPU kernels can use here.

``CPU_CAPABILITIES`` lists them (lowest first: "default", then "avx2"/"avx512" when this CPU has
them); ``running_on(name)`` makes one active inside a block and names it in any assertion that
fails there. Tests compute their expected values once and compare every capability to them.
"""
from __future__ import annotations

import contextlib

from vtprune_kernels.cpu_capability import supported_cpu_capabilities, use_cpu_capability

CPU_CAPABILITIES = tuple(supported_cpu_capabilities())


@contextlib.contextmanager
def running_on(name: str):
    with use_cpu_capability(name):
        try:
            yield name
        except AssertionError as e:
            raise AssertionError(f"[CPU capability {name}] {e}") from e
