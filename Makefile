# Two commands for users: `make run` (the whole pipeline, cpu profile) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
DVC_VENV := .venv-dvc
PROFILE ?= cpu
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export DVC_NO_ANALYTICS := 1
export DAGSTER_DISABLE_TELEMETRY := 1

# torch + torchvision versions that import together (laion-clap needs torchvision);
# see docs/install.md. Override on a GPU box, e.g. TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url ...".
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
endif

.PHONY: install run test ui bench clean-outputs dagster-home

install: $(VENV)/.installed $(DVC_VENV)/.installed dagster-home

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH_SPEC)
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# DVC in its own environment: its hydra-core pins antlr4 4.9, which breaks Dagster's
# asset-selection parser (needs 4.13). The pipeline drives DVC through its CLI.
$(DVC_VENV)/.installed:
	$(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/pip install --quiet 'dvc>=3.50,<4'
	touch $@

dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

run: install
	$(VENV)/bin/foley run --profile $(PROFILE)

test: install
	$(VENV)/bin/python -m pytest -q

ui: install
	FOLEY_PROFILE=$(PROFILE) $(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -m orchestration.definitions

bench: install
	$(VENV)/bin/python benchmarks/bench_ingest.py
