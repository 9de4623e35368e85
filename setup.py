"""Build vtprune_kernels and its C++ extension ``vtprune_kernels._C``.

The extension always holds the op schemas and the CPU kernels (``csrc/*.cpp``,
``csrc/cpu/*.cpp``). When the installed torch was built with CUDA, the CUDA kernels
(``csrc/cuda/*.cu``) and their binding (``csrc/cuda/*.cpp``) are compiled into the same
library. Build against the installed torch: ``pip install -e . --no-build-isolation``.
"""
import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def _with_cuda():
    if os.environ.get("VTPRUNE_FORCE_CPU", "0") == "1":
        return False
    return torch.version.cuda is not None


def extension():
    cxx_flags = ["-O3", "-std=c++17", "-fopenmp" if os.name != "nt" else "/openmp"]
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
    nvcc_flags = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
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
