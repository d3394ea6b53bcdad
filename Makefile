# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make demo   - create .venv, install the pinned dependencies, run the whole DAG on the simulated demo
#   make test   - the same set-up, then the test suite
#   make report - make demo's DAG, then results/report.html (scores, plots, rule graph, versions)

PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo report test lint dryrun clean-results bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[dev,deeplake]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/python -m sensorium_pipeline summary results/scores/ensemble.json

# the DAG (its default target includes the report's plots and tables), then one self-contained HTML
report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	@echo "report: results/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# conversion vs raw archive read, loader vs per-trial files: medians of 3 runs on a simulated
# full-size mouse (simulated and converted once into benchmarks/.cache; BENCH_ARGS="--trials 60" for a quick look)
bench: $(STAMP)
	$(BIN)/python benchmarks/convert_speed.py --repeats 3 $(BENCH_ARGS)
	$(BIN)/python benchmarks/loader_speed.py --repeats 3 $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint

dryrun: $(STAMP)
	$(BIN)/snakemake -n --configfile config/sensorium2023.yaml

clean-results:
	rm -rf results .snakemake
