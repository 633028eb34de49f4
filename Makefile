# Two commands on a fresh machine: `make demo` (install, run the whole DAG on the synthetic
# demo, print the table) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
INSTALLED := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

CONFIG ?=

.PHONY: demo run unlock test test-slurm test-fast lint bench clean

# opencv-python-headless (in a venv that another tool or an older checkout filled) installs the same cv2
# folder as opencv-contrib-python-headless: the two must never be installed together (a no-op in a fresh venv).
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall -qq --yes opencv-python-headless
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

# The table is printed here, also after a run with nothing to do (Snakemake itself prints it at the
# end of a run that did work, unless VADBENCH_PRINT_TABLE=0: see workflow/Snakefile's onsuccess);
# not after a dry run (-n, --dry-run, or n among short flags such as -np), whose table would be an
# earlier run's, and only when there is one.
PRINT_TABLE = for arg in $(ARGS); do case "$$arg" in --dry*) exit 0;; --*) ;; -*n*) case "$$arg" in \
	*[!A-Za-z-]*) ;; *) exit 0;; esac;; esac; done; \
	if [ -f results/report/auc_table.md ]; then echo; cat results/report/auc_table.md; fi

demo: $(INSTALLED)
	VADBENCH_PRINT_TABLE=0 $(BIN)/snakemake --profile profiles/local $(ARGS)
	@$(PRINT_TABLE)

# Run the DAG with an overlay config, e.g. `make run CONFIG=configs/ped2.yaml`; ARGS are passed
# on to Snakemake (e.g. ARGS="-n" for a dry run).
run: $(INSTALLED)
	VADBENCH_PRINT_TABLE=0 $(BIN)/snakemake --profile profiles/local --configfile config.yaml $(CONFIG) $(ARGS)
	@$(PRINT_TABLE)

# After a run was killed outright (kill -9, the out-of-memory killer), Snakemake's lock on this
# folder stays and the next run refuses to start: this removes it (same CONFIG as the run).
unlock: $(INSTALLED)
	$(BIN)/snakemake --profile profiles/local --configfile config.yaml $(CONFIG) --unlock

# The Slurm tests start a local cluster where they can (root, apt) and are skipped, saying why,
# where they cannot; `make test-slurm` runs only them and fails instead of skipping.
test: $(INSTALLED)
	$(BIN)/python -m pytest --durations=15

test-slurm: $(INSTALLED)
	VADBENCH_REQUIRE_SLURM=1 $(BIN)/python -m pytest tests/test_slurm.py

test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not slow"

lint: $(INSTALLED)
	$(BIN)/snakemake --lint

bench: $(INSTALLED)
	$(BIN)/python bench/frames_bench.py

clean:
	rm -rf results logs .snakemake
