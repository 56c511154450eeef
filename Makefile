# Every target installs what it needs: a fresh clone runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test fuzz faults bench lint mypy format all up down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) -m consumer demo

test: install
	$(PY) -m pytest -m "not slow"

# The fuzz properties with their full number of random cases (make test runs a fixed-seed subset).
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/test_fuzz_wire.py tests/test_fuzz_plan.py tests/test_fuzz_reuse.py

faults: install
	$(PY) -m pytest -m faults tests/faults -v

bench: install
	$(PY) -m tests.bench

lint: install
	$(VENV)/bin/ruff check producer consumer shared tests deploy
	$(VENV)/bin/ruff format --check producer consumer shared tests deploy

format: install
	$(VENV)/bin/ruff format producer consumer shared tests deploy
	$(VENV)/bin/ruff check --fix producer consumer shared tests deploy

mypy: install
	$(VENV)/bin/mypy

all: lint mypy test

up:
	python3 deploy/make_secrets.py
	docker compose up -d --build

down:
	docker compose down

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
