# make demo | make test | make bench | make check-kernels
# Everything runs in a local virtual environment (.venv), created on first use.
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

.PHONY: all install demo test test-python test-host check-kernels bench clean

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

test: install test-host check-kernels test-python

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

clean:
	rm -rf build *.egg-info vtprune_kernels/*.so bench_out demo_out
