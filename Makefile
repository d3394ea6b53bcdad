# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make demo   - create .venv, install the pinned dependencies, run the whole DAG on the simulated demo
#   make test   - the same set-up, then the test suite
#   make report - make demo's DAG, then results/report.html (scores, plots, rule graph, versions)

PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo report test lint dryrun clean-results

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

lint: $(STAMP)
	$(BIN)/snakemake --lint

dryrun: $(STAMP)
	$(BIN)/snakemake -n --configfile config/sensorium2023.yaml

clean-results:
	rm -rf results .snakemake
