# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Each target installs what it needs first (`make setup`, idempotent).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fmnist-installed
RUNS   ?= runs

.PHONY: setup demo photo-demo test lint clean

setup: $(STAMP)

# torch==2.13.0 first: the local CPU build satisfies pyproject's range, so pip never
# pulls the multi-gigabyte CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo run always goes to $(RUNS)/demo, replacing the previous demo run (--overwrite
# replaces only an earlier run, never another folder).
demo: setup
	$(BIN)/fmnist data info
	$(BIN)/fmnist data show --n 25 --out $(RUNS)/samples.png --overwrite
	$(BIN)/fmnist train --out $(RUNS)/demo --overwrite
	@echo "Report (open it in a browser):"
	@echo "$(abspath $(RUNS)/demo/report.html)"

# The model for real photos (Fashion-MNIST + the clothing-dataset-small training photos,
# found through FMNIST_PHOTOS_DIR or downloaded), trained once into $(RUNS)/photo, then
# the web app on it: open http://127.0.0.1:8000 and upload a photo.
photo-demo: setup
	test -f $(RUNS)/photo/model.pt || $(BIN)/fmnist train --recipe photo --out $(RUNS)/photo
	$(BIN)/fmnist serve $(RUNS)/photo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info
