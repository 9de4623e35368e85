"""Build vtprune_kernels and its C++ extension ``vtprune_kernels._C``.

The extension always holds the op schemas and the CPU kernels (``csrc/*.cpp``,
``csrc/cpu/*.cpp``). When the installed torch was built with CUDA, the CUDA kernels
(``csrc/cuda/*.cu``) and their binding (``csrc/cuda/*.cpp``) are compiled into the same
library; without nvcc, or with ``VTPRUNE_FORCE_CPU=1``, only the CPU kernels are built (and the
build says so). With no GPU visible and ``TORCH_CUDA_ARCH_LIST`` unset, the CUDA kernels are built
for the architectures ``vtprune check-kernels`` checks. Build against the installed torch:
``pip install -e . --no-build-isolation``.
"""
import glob
import os
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


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


def extension():
    # no -std flag: torch adds the standard its headers need (C++20 from torch 2.13 on; 2.14 requires it)
    cxx_flags = ["-O3", "-fopenmp" if os.name != "nt" else "/openmp"]
    common = dict(
        name="vtprune_kernels._C",
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
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
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
