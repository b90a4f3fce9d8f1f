# Two commands do all the set-up: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_STORE ?= demo.zarr

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned first, so that actstore's torch>=2.4 requirement installs nothing more (where
	# this exact version is already present, e.g. a CPU build, it is kept; see README.md).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/actstore demo $(DEMO_STORE)
	$(VENV)/bin/actstore probe $(DEMO_STORE) --layers all

test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check actstore tests bench
	$(VENV)/bin/mypy actstore

clean:
	rm -rf $(DEMO_STORE) demo-report demo.cka.png .pytest_cache build *.egg-info
