# glioma-node: two commands for a newcomer, `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# CPU torch unless an NVIDIA GPU is visible (then pip takes the ordinary CUDA build).
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_PIN := $(if $(GPU),,-c requirements/cpu-torch.txt)
CONSTRAINTS := -c requirements/constraints.txt $(TORCH_PIN)
# Debian packages the tests drive as real peers and judges.
SYSTEM_PACKAGES := dcmtk dicom3tools dcm2niix orthanc orthanc-python orthanc-dicomweb chromium chromium-driver openssl redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR ?= demo-out
PYTEST_ARGS ?=

.PHONY: help install system-deps viewer demo lint test test-fast bench eval clean

help:
	@echo "make install      create .venv and install glioma-node with everything it needs"
	@echo "make demo         run the node end to end on a synthetic study, results into a local PACS"
	@echo "make test         the whole test suite (runs install, system-deps and lint first)"
	@echo "make lint         ruff (style, imports) and mypy (types) on the whole tree"
	@echo "make system-deps  Debian packages the tests use (dcmtk, dicom3tools, dcm2niix, Orthanc, Chromium, openssl, redis-server)"
	@echo "make viewer       fetch the built OHIF viewer (npm @ohif/app) the viewer test serves"
	@echo "make bench        speed and memory figures (table + bench-results/bench.json)"
	@echo "make eval         segmentation Dice on real cases, DATA=<folder> (bench-results/segmentation-eval/)"

install: $(STAMP)

# Idempotent: re-runs only when the dependency files change. pyradiomics 3.0.1 has no
# wheel for Python 3.11 and builds only without build isolation, after numpy.
$(STAMP): pyproject.toml requirements/constraints.txt requirements/cpu-torch.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" "setuptools>=68,<85" wheel
	$(PIP) install -q $(CONSTRAINTS) numpy torch
	$(PIP) install -q $(CONSTRAINTS) --no-build-isolation pyradiomics==3.0.1
	$(PIP) install -q $(CONSTRAINTS) -e '.[dev]'
	# nnU-Net's network classes; its declared timm dependency would pull torchvision (no CPU wheel), and the U-Nets never import it.
	$(PIP) install -q --no-deps dynamic-network-architectures==0.4.4
	$(PY) -c "import torch, monai, radiomics, pydicom, highdicom, pynetdicom, SimpleITK, nilearn, shap, dynamic_network_architectures"
	touch $@

system-deps:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then echo "system packages present"; else \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); fi

# The node end to end: a local PACS (Orthanc if installed), `serve`, a synthetic study
# replayed as a scanner sends it, results back in the PACS. KEEP=1 leaves both running.
demo: install
	$(PY) -m glioma_node.cli.demo --out $(DEMO_DIR) $(if $(KEEP),--keep,)

# The built OHIF viewer for the viewer test, into .cache/ (integrity pinned in tools/fetch_ohif.py).
viewer: install
	$(PY) -m tools.fetch_ohif

# Style and import order (ruff) and static types (mypy), both configured in pyproject.toml.
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

test: install system-deps viewer lint
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n 2 -m "not integration and not slow" $(PYTEST_ARGS)

bench: install
	$(PY) -m bench

# Segmentation figures on real labelled cases (Dice, quality control, baseline, overlays):
# make eval DATA=<folder of case folders>; without DATA, the project's test data beside the checkout.
eval: install
	$(PY) -m tools.eval_segmentation $(if $(DATA),--data $(DATA))

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .cache .mypy_cache .ruff_cache
