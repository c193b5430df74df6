# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Each target installs what it needs first (`make setup`, idempotent).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fmnist-installed
RUNS   ?= runs

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch==2.13.0 first: the local CPU build satisfies pyproject's range, so pip never
# pulls the multi-gigabyte CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo run always goes to $(RUNS)/demo, replacing the previous demo run.
demo: setup
	$(BIN)/fmnist data info
	$(BIN)/fmnist data show --n 25 --out $(RUNS)/samples.png
	rm -rf $(RUNS)/demo
	$(BIN)/fmnist train --out $(RUNS)/demo
	@echo "Report (open it in a browser):"
	@echo "$(abspath $(RUNS)/demo/report.html)"

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info
