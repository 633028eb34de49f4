# Two commands on a fresh machine: `make demo` (install, run the whole DAG on the synthetic
# demo, print the table) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
INSTALLED := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: demo test test-fast lint bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/snakemake --profile profiles/local
	@echo
	@cat results/report/auc_table.md

test: $(INSTALLED)
	$(BIN)/python -m pytest

test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not slow"

lint: $(INSTALLED)
	$(BIN)/snakemake --lint

bench: $(INSTALLED)
	$(BIN)/python bench/frames_bench.py

clean:
	rm -rf results logs .snakemake
