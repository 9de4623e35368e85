"""Build vtprune_kernels and its C++ extension ``vtprune_kernels._C``.

The extension always holds the op schemas and the CPU kernels (``csrc/*.cpp``,
``csrc/cpu/**/*.cpp``). When the installed torch was built with CUDA, the CUDA kernels
(``csrc/cuda/*.cu``) and their binding (``csrc/cuda/*.cpp``) are compiled into the same
library; without nvcc, or with ``VTPRUNE_FORCE_CPU=1``, only the CPU kernels are built (and the
build says so). With no GPU visible and ``TORCH_CUDA_ARCH_LIST`` unset, the CUDA kernels are built
for the architectures ``vtprune check-kernels`` checks. Build against the installed torch:
``pip install -e . --no-build-isolation``.

CPU kernels per instruction set (the pattern of ATen's CPU capability builds): the sources in
``CPU_DISPATCHED_SOURCES`` are compiled once per capability in ``CPU_CAPABILITIES`` with that
capability's flags (and ``-DVTPRUNE_CPU_CAPABILITY=<name>``, which puts their code in the
namespace ``vtprune::cpu::cap_<name>``); at run time ``csrc/cpu/capability`` picks the copy the
CPU supports (``VTPRUNE_CPU_CAPABILITY=default|avx2|avx512`` caps it). The flags apply to those
objects only, so whatever flags a user builds with, the AVX2/AVX-512 copies are vectorised and
the rest of the library stays baseline. On a non-x86 machine, or with a compiler that is neither
GCC/Clang nor MSVC, only ``default`` is built. ``VTPRUNE_CPU_CAPABILITIES=default,avx2`` (a
comma-separated subset) restricts the copies that are built. To add a kernel: write it against
``csrc/cpu/capability/vec.h`` and ``dispatch.h`` and list its source below.
"""
import glob
import os
import platform
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))

# Compiled once per CPU capability (not with the other sources).
CPU_DISPATCHED_SOURCES = ["csrc/cpu/attention_kernel.cpp", "csrc/cpu/dedup_dots.cpp", "csrc/cpu/region_keys.cpp"]

# capability -> (GCC/Clang flags, MSVC flags). Every copy, "default" included, also gets
# CPU_DISPATCHED_GNU_FLAGS: IEEE results are unchanged, but the vectoriser may if-convert; NaN
# checks stay even if the user's CFLAGS hold -ffast-math (these flags come last).
CPU_CAPABILITIES = {
    "default": ([], []),
    "avx2": (["-mavx2", "-mfma", "-mf16c"], ["/arch:AVX2"]),
    "avx512": (["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"], ["/arch:AVX512"]),
}
CPU_DISPATCHED_GNU_FLAGS = ["-fno-trapping-math", "-fno-math-errno", "-fno-finite-math-only"]
X86_MACHINES = {"x86_64", "amd64", "x64"}


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern), recursive=True))


# The GPU architectures `vtprune check-kernels` compiles and checks (sm_80, sm_90), plus PTX of
# sm_90 so newer GPUs can JIT the kernels. Used when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset.
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def _nvcc():
    """Path of the nvcc that torch's build would use, or None. None also for a CUDA_HOME (torch takes
    the nvcc on PATH's parent folder when CUDA_HOME is unset) without the CUDA runtime library,
    saying what to set, instead of a linker error at the end of the build."""
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return None
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
    if not os.path.isfile(nvcc):
        return None
    if not glob.glob(os.path.join(CUDA_HOME, "lib*", "libcudart.so*")):
        print(
            f"vtprune_kernels: the CUDA toolkit folder {CUDA_HOME} (from CUDA_HOME or the nvcc on PATH) has no "
            "lib64/libcudart.so: set CUDA_HOME to the toolkit (e.g. CUDA_HOME=/usr/local/cuda) to build the CUDA kernels",
            file=sys.stderr,
        )
        return None
    return nvcc


def _with_cuda():
    """Build the CUDA kernels: torch is a CUDA build and nvcc is there (else say why not, build CPU)."""
    if os.environ.get("VTPRUNE_FORCE_CPU", "0") == "1" or torch.version.cuda is None:
        return False
    if _nvcc() is None:
        print(
            f"vtprune_kernels: torch {torch.__version__} is a CUDA build but no usable nvcc was found (set CUDA_HOME "
            "or put nvcc on PATH): building the CPU kernels only; on CUDA tensors the selection ops then need "
            "backend='reference' (attention_scores still runs in Triton)",
            file=sys.stderr,
        )
        return False
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # torch picks the visible GPUs' architectures; with none visible it fails (IndexError)
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        print(
            f"vtprune_kernels: no GPU visible and TORCH_CUDA_ARCH_LIST unset: building CUDA kernels for "
            f"{DEFAULT_CUDA_ARCHS} (set TORCH_CUDA_ARCH_LIST to choose)",
            file=sys.stderr,
        )
    return True


def cpu_capabilities(compiler_type):
    """Names of the capabilities to build for this machine and compiler, "default" first."""
    names = ["default"]
    if platform.machine().lower() in X86_MACHINES and compiler_type in ("unix", "mingw32", "msvc"):
        names += ["avx2", "avx512"]
    wanted = os.environ.get("VTPRUNE_CPU_CAPABILITIES")
    if wanted:
        asked = [n.strip() for n in wanted.split(",") if n.strip()]
        unknown = sorted(set(asked) - set(CPU_CAPABILITIES))
        if unknown:
            raise ValueError(f"VTPRUNE_CPU_CAPABILITIES: unknown {unknown}; known: {sorted(CPU_CAPABILITIES)}")
        names = [n for n in names if n == "default" or n in asked]
    return names


class BuildWithCpuCapabilities(BuildExtension):
    """BuildExtension that also compiles CPU_DISPATCHED_SOURCES once per CPU capability into
    separate objects (own flags, own folder) and links them into the extension."""

    def build_extension(self, ext):
        msvc = self.compiler.compiler_type == "msvc"
        base = ext.extra_compile_args["cxx"] if isinstance(ext.extra_compile_args, dict) else ext.extra_compile_args
        names = cpu_capabilities(self.compiler.compiler_type)
        ext.define_macros += [(f"VTPRUNE_CPU_HAVE_{name.upper()}", "1") for name in names if name != "default"]
        objects = []
        for name in names:
            gnu_flags, msvc_flags = CPU_CAPABILITIES[name]
            flags = list(base) + (msvc_flags if msvc else gnu_flags + CPU_DISPATCHED_GNU_FLAGS)
            objects += self.compiler.compile(
                CPU_DISPATCHED_SOURCES,
                output_dir=os.path.join(self.build_temp, f"cpu_{name}"),
                macros=list(ext.define_macros) + [("VTPRUNE_CPU_CAPABILITY", name)],
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs={"cxx": flags, "nvcc": []},
                depends=ext.depends,
            )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


def extension():
    # no -std flag: torch adds the standard its headers need (C++20 from torch 2.13 on; 2.14 requires it)
    cxx_flags = ["-O3", "-fopenmp"] if os.name != "nt" else ["/O2", "/openmp"]
    common = dict(
        name="vtprune_kernels._C",
        include_dirs=[os.path.join(HERE, "csrc")],
        depends=_sources("csrc/**/*.h"),
        extra_link_args=["-fopenmp"] if os.name != "nt" else [],
        py_limited_api=False,
    )
    dispatched = {os.path.normpath(s) for s in CPU_DISPATCHED_SOURCES}
    sources = [s for s in _sources("csrc/*.cpp") + _sources("csrc/cpu/**/*.cpp") if os.path.normpath(s) not in dispatched]
    if not _with_cuda():
        return CppExtension(sources=sources, extra_compile_args={"cxx": cxx_flags}, **common)
    sources += _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    return CUDAExtension(
        sources=sources,
        define_macros=[("VTPRUNE_WITH_CUDA", "1"), ("USE_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        **common,
    )


def ext_modules():
    """The extension to build, or none with VTPRUNE_PREBUILT_EXT=1: a second environment with the
    same torch and Python (the vLLM test venv, ``make test-vllm``) reuses the ``_C`` that an editable
    install already built in place, instead of compiling it again. Refused if that build is missing
    or older than a source."""
    if os.environ.get("VTPRUNE_PREBUILT_EXT", "0") != "1":
        return [extension()]
    built = glob.glob(os.path.join(HERE, "vtprune_kernels", "_C*.so"))
    sources = glob.glob(os.path.join(HERE, "csrc", "**", "*.*"), recursive=True)
    if not built:
        raise RuntimeError("VTPRUNE_PREBUILT_EXT=1 but vtprune_kernels/_C*.so is missing: run `make install` first")
    newest = max((os.path.getmtime(p) for p in sources), default=0.0)
    if os.path.getmtime(built[0]) < newest:
        raise RuntimeError("VTPRUNE_PREBUILT_EXT=1 but vtprune_kernels/_C*.so is older than csrc/: rebuild with `make install`")
    return []


setup(
    packages=[
        "vtprune_kernels",
        "vtprune_kernels.methods",
        "vtprune_kernels.integrations",
        "vtprune_kernels.integrations.vllm",
        "vtprune_kernels.kernel_check",
        "vtprune_kernels.demo",
        "vtprune_kernels.triton_kernels",
    ],
    # The Triton sources live in the top-level folder triton_kernels/ but install under
    # vtprune_kernels: a well-known, unrelated package is called ``triton_kernels``.
    package_dir={
        "vtprune_kernels": "vtprune_kernels",
        "vtprune_kernels.triton_kernels": "triton_kernels",
    },
    ext_modules=ext_modules(),
    cmdclass={"build_ext": BuildWithCpuCapabilities.with_options(use_ninja=True)},
)
