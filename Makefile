# unet-tf: `make help` lists the targets. `make report` and `make test` set everything up themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYSTEM ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= full

.PHONY: help setup data test test-fast lint format bench report kaggle clean distclean

help: ## Show this help.
	@echo "unet-tf: U-Net nucleus segmentation on DSB2018. Targets:"
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo "Environment: UNET_TF_DSB2018_SOURCE (folder with the Kaggle zips), UNET_TF_DATA_DIR."

setup: $(STAMP) ## Create .venv, install the pinned requirements, register the Jupyter kernel.

# tensorflow (with CUDA parts on x86-64) and tensorflow-cpu install the same files, so a venv
# must hold one of them only: when requirements.txt switches between them, the other one goes
# first, or its files (the CUDA stubs, say) would stay behind. requirements.txt asks for
# tensorflow-cpu on x86-64 only (the only machines it is published for).
TF_CPU_LISTED = $(shell grep -E '^tensorflow-cpu[=<>~ ;]' requirements.txt)
TF_UNWANTED = $(if $(and $(TF_CPU_LISTED),$(filter x86_64,$(shell uname -m))),tensorflow,tensorflow-cpu)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PYTHON) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip
	if $(PYTHON) -m pip show -q $(TF_UNWANTED) 2>/dev/null; then \
		$(PYTHON) -m pip uninstall -y $(TF_UNWANTED); fi
	$(PYTHON) -m pip install -r requirements.txt
	$(PYTHON) -m pip install --no-deps -e .
	$(PYTHON) -m ipykernel install --sys-prefix --name unet-tf --display-name "Python (unet-tf)"
	touch $(STAMP)

data: ## Unpack the data of PROFILE into data/raw/ (DSB2018: local zips, else the official download).
	$(PYTHON_SYSTEM) -m unet_tf.fetch --profile $(PROFILE)

# No `data` prerequisite: the tests of the real data skip, saying so, where it is not unpacked
# (.ci/run runs `make data` first, so CI tests with it).
test: setup ## Run the whole test suite (synthetic data; checks of the real data after `make data`).
	$(PYTHON) -m pytest

test-fast: setup ## The tests without the slow ones (no training, notebooks or exports): the loop while coding.
	$(PYTHON) -m pytest -m "not slow"

lint: setup ## Check code style with ruff, and the layers of unet_tf with import-linter.
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: setup ## Reformat the code with ruff.
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

bench: setup data ## Measure throughput against the CPU's matmul rate, and the input pipeline.
	$(PYTHON) benchmarks/throughput.py
	$(PYTHON) benchmarks/pipeline.py

report: setup data ## Run the notebooks into reports/ (PROFILE=full, the default, or smoke).
	$(PYTHON) -m unet_tf.report --profile $(PROFILE)

kaggle: setup ## Build the Kaggle kernel into build/kaggle/ (then: kaggle kernels push -p build/kaggle).
	$(PYTHON) -m unet_tf.kaggle

clean: ## Remove caches and generated reports (keeps .venv, data/raw and models/).
	rm -rf .pytest_cache .ruff_cache build data/interim
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
	find reports -mindepth 1 -not -name README.md -delete

distclean: clean ## Also remove .venv, data/raw and models/.
	rm -rf $(VENV) data/raw data/external models
