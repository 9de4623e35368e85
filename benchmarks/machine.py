"""What machine a benchmark ran on: CPU model, the x86 vector ISA it offers, torch's CPU capability
(the ISA its own kernels dispatch to), threads. Printed in the pytest header and stored in the
benchmark JSON's machine_info (``conftest.py``), so every figure carries its machine."""
from __future__ import annotations

import platform
from typing import Dict

import torch

# Vector ISA levels, best first, as /proc/cpuinfo names their flags.
ISA_LEVELS = (("AVX-512", ("avx512f", "avx512bw", "avx512vl")), ("AVX2", ("avx2", "fma")), ("AVX", ("avx",)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The best vector ISA level the CPU reports ("AVX-512", "AVX2", "AVX", else the architecture)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    for name, needed in ISA_LEVELS:
        if all(flag in flags for flag in needed):
            return name
    return platform.machine()


def machine_info() -> Dict[str, str]:
    return {
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
    }


def describe() -> str:
    info = machine_info()
    return (f"CPU: {info['cpu_model']} ({info['cpu_isa']}; torch kernels: {info['torch_cpu_capability']}, "
            f"{info['torch_threads']} threads), torch {info['torch']}")
