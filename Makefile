# Two commands on a fresh machine:  make serve   |   make test
# Everything lives in ./.venv; torch is pinned first so pip takes the CPU wheel.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup serve test lint bench bench-http docs clean screenshots

setup: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]" -e clients/python
	touch $@

serve: setup
	$(VENV)/bin/layerfreeze serve

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The API suites once more, every service process and in-process store keeping its records in PostgreSQL
# (a throw-away cluster on 127.0.0.1 from the distribution's binaries: docs/database.md).
POSTGRES_SUITES := tests/api tests/worker tests/models tests/multifile tests/service tests/client \
                   --ignore=tests/service/test_service_docker.py

test: lint
	$(PY) -m pytest
	$(PY) -m pytest --database=postgresql $(POSTGRES_SUITES)

bench: setup
	$(PY) bench/freeze_large.py
	$(PY) bench/http_throughput.py

bench-http: setup
	$(PY) bench/http_throughput.py

# docs/configuration.md is generated from the settings (a test fails when it is out of date).
docs: setup
	$(PY) -m layerfreeze.settings_doc docs/configuration.md

# The web page's screenshots in docs/img/ (needs Chromium: scripts/install-browser.sh).
screenshots: setup
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Attack, fault and load suites (stress/): one table of figures; fuzz: the long property-fuzzing run.
.PHONY: stress fuzz

stress: setup
	$(PY) -m stress

fuzz: setup
	$(PY) -m stress.fuzz --examples 5000 --mutants 5000
