# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Who installs everything but torch: uv (fast: parallel downloads and installs) or pip.
INSTALLER ?= uv

.PHONY: setup run test test-slow lint bench bench-peers clean

# The CPU build of torch first, by pip (it takes the wheel this machine keeps on disk; uv does not
# look there and would download a CUDA build), with uv itself; then everything else, held to that
# torch by constraints.txt, so that no dependency pulls a newer torch with CUDA (uv keeps an
# installed version that satisfies the requirements).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(PY) -m pip install -q torch==2.13.0 uv
	$(VENV)/bin/uv pip install -q --python $(PY) -c constraints.txt -e ".[dev,ray]"
else
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,ray]"
endif
	@$(PY) -c "import sys, torch; sys.exit(None if torch.__version__.startswith('2.13.0') and torch.version.cuda is None else f'setup: torch {torch.__version__} (CUDA {torch.version.cuda}) came in, not the CPU build of 2.13.0')"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/distillery run recipes/arith.yaml

test: setup
	$(PY) -m pytest -m "not slow" -q

test-slow: setup
	$(PY) -m pytest -m slow -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench-peers:
	bash benchmarks/peers/setup.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
