# Astra for ROS 2 -- see README. Every target but `clean` runs setup first (fast when done).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
ENV := source $(VENV)/astra_env.sh

.PHONY: setup test run bench clean

setup:
	ASTRA_VENV="$(abspath $(VENV))" bash scripts/setup.sh

test: setup
	$(ENV) && python -m pytest -q test

run: setup
	$(ENV) && python -m astra_ros.demo_ros

bench: setup
	$(ENV) && python -m astra_core.bench.streaming --preset tiny

# Retrain the shipped tabletop checkpoint (checkpoints/tabletop_objects, what `make run` evaluates):
# 8000 expert demos, training on this CPU, 100 held-out episodes per task, provenance written.
.PHONY: train-tabletop
train-tabletop: setup
	$(ENV) && python -m astra_sim.train_tabletop --install

# Build outputs only; the venv is kept (remove .venv by hand for a from-scratch setup).
clean:
	rm -rf build *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Optional simulator backends (not part of `setup`): system packages + Python packages into the
# project venv with its constraints file; idempotent (stamps in $(VENV)/.astra_stamps).
.PHONY: sim-maniskill sim-metaworld
sim-maniskill: setup
	ASTRA_VENV="$(abspath $(VENV))" bash scripts/setup_maniskill.sh

sim-metaworld: setup
	ASTRA_VENV="$(abspath $(VENV))" bash scripts/setup_metaworld.sh
