# Makefile -- entry points for people and CI.  Every target sets up .venv first
# (scripts/setup_venv.sh: about 0.1 s when nothing changed).
#
#   make demo     synthetic data -> short training run -> samples, super-resolution, plots
#   make test     the test suite (what .ci/run and the README use): the main suite in .venv, then
#                 tests/vision (real torchvision, clean-fid) in .venv-vision
#   make bench    noise-sampler, sample-quality, sampler, digits (every image system) and model benchmarks
#                 (VE / FFM / GANO at equal compute, 32 px and 2x super-resolution), the training step
#                 (time, FLOP rate, memory), 1 process x N threads against N processes x 1 thread,
#                 validation cost and checkpoint selection, generation throughput, and the cost of the
#                 checkpoint checksum
#   make clean    remove the demo's run folders (never the data)
#
# Variables (command line or environment): DATA_DIR (default data), SAVEDIR
# (default results), PYTEST_ARGS (extra pytest arguments, e.g. -m "not slow"), TEST_WORKERS
# (pytest-xdist workers of the main suite: auto, one per core and at most 4; 0 runs it in one process).

SHELL := /bin/bash
.DEFAULT_GOAL := help

DATA_DIR ?= data
SAVEDIR ?= results
PYTHON := .venv/bin/python
PYTHON_VISION := .venv-vision/bin/python
PYTEST_ARGS ?=
TEST_WORKERS ?= auto

# Absolute forms: the launchers change directory before starting Python.
DATA_ABS = $(abspath $(DATA_DIR))
SAVE_ABS = $(abspath $(SAVEDIR))
PYTHON_ABS = $(abspath $(PYTHON))

.PHONY: help venv venv-vision test demo bench clean

help: ## list the targets
	@echo "usage: make <target> [DATA_DIR=data] [SAVEDIR=results]"
	@grep -E '^[a-z-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 14

venv: ## create/update .venv (torch only if missing; uv when available)
	@bash scripts/setup_venv.sh

venv-vision: venv ## create/update .venv-vision (torch + torchvision pair, clean-fid; .venv's other packages)
	@bash scripts/setup_vision_venv.sh

# Two runs, both must pass.  tests/vision need a torchvision, which no PyPI release provides beside
# .venv's CPU torch: they run in .venv-vision, and REQUIRE_VISION_TESTS=1 makes their absence an error
# there instead of a silent skip.
test: venv venv-vision ## run the test suite: .venv (one worker per core, at most 4), then tests/vision in .venv-vision
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest -q -p no:cacheprovider -rfE -n $(TEST_WORKERS) \
	    --maxprocesses 4 --dist loadfile --ignore=tests/vision $(PYTEST_ARGS)
	REQUIRE_VISION_TESTS=1 $(PYTHON_VISION) -m pytest -q -p no:cacheprovider -rfE tests/vision $(PYTEST_ARGS)

# One shell for the whole recipe, so the run id chosen here is known to the
# evaluation steps.  The id is a timestamp plus the shell's pid: never a
# constant, so two demos never share (or resume) a run folder.
demo: venv ## synthetic data, a short training run, then generate / superres / plot
	@set -euo pipefail; \
	export DATA_DIR="$(DATA_ABS)" SAVEDIR="$(SAVE_ABS)" PYTHON="$(PYTHON_ABS)"; \
	if [ -z "$$(find "$$DATA_DIR/subset_128" -name '*.int' -print -quit 2>/dev/null)" ]; then \
	    echo "== demo: writing synthetic volcano data to $$DATA_DIR/subset_128"; \
	    "$$PYTHON" scripts/make_volcano.py --out "$$DATA_DIR" --n 256 --seed 0; \
	fi; \
	id="$$(date +%Y%m%d-%H%M%S)-$$$$"; run="$$SAVEDIR/demo/$$id"; \
	echo "== demo: training (exps/json/quickstart.json)"; \
	RUN_LOCAL=1 SLURM_JOB_ID="$$id" bash exps/main.sh sbgm demo exps/json/quickstart.json; \
	echo "== demo: generating samples"; \
	bash exps/launch_eval.sh sbgm "demo/$$id" --mode=generate; \
	echo "== demo: super-resolution (factor 2)"; \
	bash exps/launch_eval.sh sbgm "demo/$$id" --mode=superres --factor=2; \
	echo "== demo: plots"; \
	bash exps/launch_eval.sh sbgm "demo/$$id" --mode=plot; \
	echo; \
	echo "== demo finished. Run folder: $$run"; \
	echo "   at a glance, real validation fields next to generated ones (one colour scale):"; \
	find "$$run/eval" -name real_vs_generated.png | sort | sed 's/^/     /'; \
	echo "   training log and metrics: $$run/results.json, config: $$run/config.json"; \
	echo "   samples during training:  $$run/samples/"; \
	echo "   evaluations (one folder each, named mode-checkpoint-sampler-steps):"; \
	find "$$run/eval" -mindepth 1 -maxdepth 1 -type d | sort | sed 's/^/     /'; \
	echo "   figures:"; \
	find "$$run" -name '*.png' | sort | sed 's/^/     /'

bench: venv ## benchmarks: noise samplers, sample quality, samplers (NFE vs quality), every image system on digits, VE/FFM/GANO, training step, threads vs processes, validation cost and selection, generation throughput, checkpoint checksum
	@export DATA_DIR="$(DATA_ABS)" SAVEDIR="$(SAVE_ABS)"; \
	set -e; \
	"$(PYTHON_ABS)" scripts/bench_noise.py; \
	"$(PYTHON_ABS)" scripts/bench_quality.py; \
	"$(PYTHON_ABS)" scripts/bench_samplers.py; \
	"$(PYTHON_ABS)" scripts/bench_digits.py --fresh; \
	"$(PYTHON_ABS)" scripts/bench_models.py --assets; \
	"$(PYTHON_ABS)" scripts/bench_train.py --allocator-rounds 2; \
	"$(PYTHON_ABS)" scripts/bench_threads.py; \
	"$(PYTHON_ABS)" scripts/bench_validation.py; \
	"$(PYTHON_ABS)" scripts/bench_generate.py; \
	"$(PYTHON_ABS)" scripts/bench_checkpoint.py

clean: ## remove the demo run folders (SAVEDIR/demo); data is kept
	rm -rf -- "$(SAVE_ABS)/demo"
