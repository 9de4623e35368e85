"""The CUDA C++ kernels (``csrc/cuda/*.cu``) compiled ahead of time with nvcc, without a GPU.

``collect(archs)`` compiles every source once for all the architectures (device code only:
``nvcc -fatbin -gencode arch=compute_XX,code=sm_XX ... -Xptxas -v``, the flags of the extension build), in
parallel over the sources, and turns ptxas' report into one ``KernelReport`` per kernel and
architecture: registers, spill stores + loads (bytes), static shared memory (dynamic shared memory
is sized at launch and not part of it). Every template instantiation of a kernel is a row, named
demangled (``region_topk_select_kernel<__half, 256>``). A source that fails to compile gives one
row per architecture with the compiler's message as ``error``.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from .report import ARCHS, KernelReport

REPO_ROOT = Path(__file__).resolve().parents[2]
CSRC = REPO_ROOT / "csrc"
# The nvcc flags of setup.py's CUDA build, with the macros torch's CUDAExtension adds (no implicit
# half / bfloat16 conversions): a kernel that compiles here compiles in the extension.
NVCC_FLAGS = (
    "-O3",
    "-std=c++17",
    "--expt-relaxed-constexpr",
    "-lineinfo",
    "-DVTPRUNE_WITH_CUDA=1",
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
)

_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for 'sm_(?P<arch>\d+)'")
_SPILLS = re.compile(r"(?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
_USED = re.compile(r"Used (?P<regs>\d+) registers")
_SMEM = re.compile(r"(?P<smem>\d+) bytes smem")


def find_nvcc() -> Optional[str]:
    """nvcc from $CUDA_HOME / $CUDA_PATH, the PATH, or /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


def cuda_sources() -> List[Path]:
    return sorted((CSRC / "cuda").glob("*.cu"))


def demangle(names: Iterable[str]) -> Dict[str, str]:
    """Mangled -> readable kernel name (arguments and namespaces dropped), via cu++filt or c++filt."""
    names = list(dict.fromkeys(names))
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    readable = names
    if tool and names:
        out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=False).stdout
        lines = out.splitlines()
        if len(lines) == len(names):
            readable = lines
    return {name: _short_name(text) for name, text in zip(names, readable)}


def _short_name(demangled: str) -> str:
    """'void a::(anonymous namespace)::k<float, 256>(float const*, ...)' -> 'k<float, 256>'."""
    text = demangled
    if text.startswith("void "):
        text = text[len("void ") :]
    depth, cut = 0, len(text)
    for i, ch in enumerate(text):  # drop the argument list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not text.startswith("(anonymous", i):
            cut = i
            break
    text = text[:cut]
    head, sep, rest = text.partition("<")
    head = head.split("::")[-1]
    return head + sep + rest


def parse_ptxas(log: str, source: str) -> List[KernelReport]:
    """One report per 'Compiling entry function' block of a ptxas -v log."""
    rows: List[KernelReport] = []
    mangled: List[str] = []
    for line in log.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            rows.append(KernelReport(kernel=entry["name"], arch=int(entry["arch"])))
            mangled.append(entry["name"])
            continue
        if not rows:
            continue
        spills = _SPILLS.search(line)
        if spills:
            rows[-1].spill_bytes = int(spills["stores"]) + int(spills["loads"])
        used = _USED.search(line)
        if used:
            rows[-1].registers = int(used["regs"])
            smem = _SMEM.search(line)
            rows[-1].shared_bytes = int(smem["smem"]) if smem else 0
    names = demangle(mangled)
    for row in rows:
        row.kernel = f"{source}:{names[row.kernel]}"
        if row.registers is None or row.spill_bytes is None:
            row.error = "ptxas printed no register or spill count"
    return rows


def compile_source(nvcc: str, source: Path, archs: Sequence[int]) -> List[KernelReport]:
    gencodes = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-c", *NVCC_FLAGS, f"-I{CSRC}", *gencodes, "-Xptxas", "-v", str(source)]
        cmd += ["-o", str(Path(tmp) / "out.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        message = " | ".join(line.strip() for line in log.splitlines() if "error" in line)[:500] or log[-500:]
        return [KernelReport(kernel=source.name, arch=a, error=f"nvcc failed: {message}") for a in archs]
    rows = parse_ptxas(log, source.name)
    if not rows:
        return [KernelReport(kernel=source.name, arch=a, error="no kernel found in ptxas output") for a in archs]
    return rows


def collect(archs: Sequence[int] = ARCHS, sources: Optional[Sequence[Path]] = None) -> List[KernelReport]:
    """Compile ``sources`` (default: every csrc/cuda/*.cu) for ``archs``; one row per kernel and arch."""
    sources = cuda_sources() if sources is None else [Path(s) for s in sources]
    nvcc = find_nvcc()
    if nvcc is None:
        return [KernelReport(kernel="csrc/cuda/*.cu", arch=a, error="nvcc not found (set CUDA_HOME)") for a in archs]
    if not sources:
        missing = f"no .cu source under {CSRC / 'cuda'}"
        return [KernelReport(kernel="csrc/cuda/*.cu", arch=a, error=missing) for a in archs]
    workers = max(1, min(len(sources), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda s: compile_source(nvcc, s, archs), sources))
    rows = [row for result in results for row in result]
    return sorted(rows, key=lambda r: (r.kernel, r.arch))
