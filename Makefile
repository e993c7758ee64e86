# Two commands do all set-up: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench clean arm64-check

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch (a bare `torch` requirement pulls a multi-GB CUDA build).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/compressor run recipes/quickstart.yaml --out runs/quickstart --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# cpu-arm64 bundles run under qemu-user against x86 (docs/export.md); not part of `make test`.
# Needs `apt-get install mmdebstrap qemu-user-static`; the arm64 tree is cached in ~/.cache/compressor/arm64.
arm64-check: $(STAMP)
	$(BIN)/python bench/arm64_check.py

clean:
	rm -rf $(VENV) runs .pytest_cache
