"""Run-time choice of the CPU kernels' instruction set: detection, the VTPRUNE_CPU_CAPABILITY
override and the queries (torch.ops.vtprune.cpu_capability & co, vtprune_kernels.cpu_capability)."""
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch

import vtprune_kernels
from vtprune_kernels import cpu_capability as cc

X86 = platform.machine().lower() in ("x86_64", "amd64")


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not (X86 and sys.platform.startswith("linux")), reason="reads x86 feature flags from /proc/cpuinfo")
def test_supported_capabilities_follow_the_cpu_flags():
    """Independent of the kernel's cpuid code: the kernel reports AVX2 (AVX-512) exactly when
    the kernel's /proc/cpuinfo flags say the CPU and OS have them (the build has both on x86-64)."""
    flags = cpu_flags()
    expected = ["default"]
    if {"avx2", "fma", "f16c"} <= flags:
        expected.append("avx2")
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            expected.append("avx512")
    assert cc.supported_cpu_capabilities() == expected


def test_queries_through_torch_ops_and_python():
    supported = list(torch.ops.vtprune.supported_cpu_capabilities())
    assert supported == cc.supported_cpu_capabilities() and supported[0] == "default"
    assert torch.ops.vtprune.cpu_capability() == cc.cpu_capability() in supported


def test_switching_and_restoring():
    before = cc.cpu_capability()
    for name in cc.supported_cpu_capabilities():
        with cc.use_cpu_capability(name):
            assert cc.cpu_capability() == name
        assert cc.cpu_capability() == before


def test_unknown_or_unsupported_capability_is_an_error():
    with pytest.raises(ValueError, match="'avx1024' is not one of default, avx2, avx512"):
        cc.set_cpu_capability("avx1024")
    missing = [n for n in ("avx2", "avx512") if n not in cc.supported_cpu_capabilities()]
    for name in missing:
        with pytest.raises(ValueError, match="not supported here"):
            cc.set_cpu_capability(name)


def run_with_env(value, code):
    env = dict(os.environ, VTPRUNE_CPU_CAPABILITY=value)
    return subprocess.run([sys.executable, "-c", "import torch, vtprune_kernels\n" + code], env=env,
                          capture_output=True, text=True, timeout=300)


def test_environment_caps_the_capability():
    # one process per value: the variable is read once, when a kernel first runs
    code = ("from vtprune_kernels.cpu_capability import cpu_capability, supported_cpu_capabilities as s\n"
            "q = torch.randn(1, 2, 3, 8)\n"
            "torch.ops.vtprune.attention_scores(q, q)\n"
            "print(cpu_capability(), s()[-1])")
    out = run_with_env("default", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "default"
    # asking for more than the CPU has gives what it has (like ATEN_CPU_CAPABILITY)
    out = run_with_env("avx512", code)
    assert out.returncode == 0, out.stderr
    active, best = out.stdout.split()
    assert active == best


def test_unknown_environment_value_is_an_error_naming_the_variable():
    out = run_with_env("sse9", "q = torch.randn(1, 2, 3, 8)\ntorch.ops.vtprune.attention_scores(q, q)")
    assert out.returncode != 0
    assert "VTPRUNE_CPU_CAPABILITY='sse9' is not one of default, avx2, avx512" in out.stderr


# What each copy of the dispatched kernels must contain, read from the built extension's machine
# code: the register width of its instruction set, and the vectorised exp inlined into run_unit
# (2^n from the exponent bits, `pslld $23`, on SSE2/AVX2 registers; `vscalefps` on AVX-512).
VECTOR_CODE = {
    "default": dict(width="xmm", wider=("ymm", "zmm"), exp=r"pslld\s+\$0x17,%xmm"),
    "avx2": dict(width="ymm", wider=("zmm",), exp=r"vpslld\s+\$0x17,%ymm\d+"),
    "avx512": dict(width="zmm", wider=(), exp=r"vscalefps\s+%zmm"),
}


def disassembled_functions(library):
    """{demangled function name: its instruction lines} of a shared library (objdump -d -C)."""
    text = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", library], capture_output=True, text=True,
                          check=True, timeout=300).stdout
    functions, lines = {}, None
    for line in text.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            lines = functions.setdefault(header.group(1), [])
        elif lines is not None and line.strip():
            lines.append(line)
    return functions


@pytest.mark.skipif(not (X86 and sys.platform.startswith("linux")), reason="reads x86-64 machine code of the ELF extension")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump to disassemble the extension")
def test_each_copy_is_vectorised_for_its_instruction_set():
    """Whatever flags the library was built with: every supported copy uses its own vector
    registers (none wider), has the exp of its softmax vectorised in run_unit, and calls nothing
    but its own functions and memset/memcpy (no libm exp, no scalar helpers)."""
    functions = disassembled_functions(vtprune_kernels._C.__file__)
    for name in cc.supported_cpu_capabilities():
        want = VECTOR_CODE[name]
        copy = {f: lines for f, lines in functions.items() if f"::cap_{name}::" in f and not f.endswith("@plt")}
        run_unit = next((lines for f, lines in copy.items() if "::run_unit(" in f), None)
        assert run_unit is not None, f"{name}: no run_unit in the extension"
        code = "\n".join(line for lines in copy.values() for line in lines)
        assert re.search(rf"vfmadd\w*ps\s+.*%{want['width']}" if name != "default" else r"mulps\s+%xmm", code), name
        for wider in want["wider"]:
            assert f"%{wider}" not in code, f"{name}: uses {wider} registers"
        assert re.search(want["exp"], "\n".join(run_unit)), f"{name}: the exp in run_unit is not vectorised"
        callees = set(re.findall(r"\bcall\s+\S+\s+<([^>+]*)", code))
        foreign = {c for c in callees if f"::cap_{name}::" not in c and c.split("@")[0] not in ("memset", "memcpy")}
        assert not foreign, f"{name}: calls {sorted(foreign)}"
