# reverie — set-up and checks. Two commands for a new user: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.reverie-installed
LLAMA_VERSION := 0.3.36
UNAME_S := $(shell uname -s)

# llama.cpp build flags. The default native build segfaults in ggml's AMX matmul on some x86
# CPUs, so Linux builds are portable AVX2; Metal on macOS; CUDA where a GPU answers nvidia-smi
# (nvcc alone is not enough: a toolkit without a GPU gives a slow build nobody can use).
PORTABLE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
ifeq ($(UNAME_S),Darwin)
  LLAMA_CMAKE_ARGS ?= -DGGML_METAL=on
else ifneq ($(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo yes),)
  LLAMA_CMAKE_ARGS ?= $(PORTABLE) -DGGML_CUDA=on
else
  LLAMA_CMAKE_ARGS ?= $(PORTABLE)
endif
# Built wheels are cached per flag set (pip's own cache ignores CMAKE_ARGS), so a fresh clone
# on the same machine installs in seconds and a flag change always rebuilds.
FLAGS_HASH := $(shell printf '%s' "$(LLAMA_CMAKE_ARGS)" | sha256sum | cut -c1-12)
WHEEL_CACHE ?= $(HOME)/.cache/reverie/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(FLAGS_HASH)

# CPU torch on Linux (a plain `torch` pulls several GB of CUDA packages). Override TORCH_SPEC /
# TORCH_PIP_ARGS on a CUDA box, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu124".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

PYTEST_ARGS ?=

.PHONY: install demo demo-quick demo-full test test-fast bench clean-venv help

help:
	@echo "make demo   - create .venv, install everything, run the learn -> sleep -> memory-vs-adapter demo"
	@echo "make demo-quick - only the scripted chat (seconds)"
	@echo "make test   - create .venv if needed, run the whole test suite"
	@echo "make bench  - run the benchmarks (JSON under bench/results/)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	@if ! ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo ">> building llama-cpp-python $(LLAMA_VERSION) with: $(LLAMA_CMAKE_ARGS) (a few minutes, once)"; \
	  $(BIN)/pip install -q scikit-build-core cmake ninja; \
	  mkdir -p $(WHEEL_CACHE).tmp && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-cache-dir --no-deps \
	    -w $(WHEEL_CACHE).tmp llama-cpp-python==$(LLAMA_VERSION) && \
	  rm -rf $(WHEEL_CACHE) && mv $(WHEEL_CACHE).tmp $(WHEEL_CACHE); \
	fi
	$(BIN)/pip install -q $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The main loop on the embedded model: a short chat, then a built-in persona taught over two
# nights (tell → sleep), then base / memory / adapter / adapter+memory side by side.
demo: $(STAMP)
	$(BIN)/reverie demo

# Only the scripted chat (seconds).
demo-quick: $(STAMP)
	$(BIN)/reverie demo --quick

demo-full: demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/reverie bench chat --json

clean-venv:
	rm -rf $(VENV)
