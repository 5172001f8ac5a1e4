# The two commands of the README. Each creates .venv (if needed) and installs the project from its
# own files: torch first (torch==2.13.0 is the CPU wheel this project is tested with; on a machine
# whose pip would fetch a CUDA build, pass TORCH_INSTALL="torch --index-url https://download.pytorch.org/whl/cpu"),
# then `pip install -e '.[all]'`.
#
#   make book   run every chapter on the tiny profile, then build its site: _build/tiny/html/index.html
#   make test   ruff + mypy, then unit tests + nbval over the reference notebooks in tests/notebooks/
PYTHON ?= python3
VENV ?= .venv
TORCH_INSTALL ?= torch==2.13.0
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.layerwise-installed
PYTEST_ARGS ?=

.PHONY: book test install clean-book

install: $(INSTALLED)

# uv resolves and installs the ~170 pinned packages in well under a minute (pip took ~10 minutes on
# 2 cores); torch is installed by pip first because the CPU wheel may be a local file pip alone sees.
$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_INSTALL) uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[all]'
	touch $(INSTALLED)

book: $(INSTALLED)
	$(BIN)/python -m layerwise.book run --profile tiny --build

# ruff and mypy first (under a minute), then pytest; pytest's exit 5 ("no tests collected") fails like any other
test: $(INSTALLED)
	$(BIN)/ruff check src tests notebooks benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg $(PYTEST_ARGS) tests/

clean-book:
	rm -rf _build
