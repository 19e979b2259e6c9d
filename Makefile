# One place for the commands the README and CI use.
PYTHON ?= python3.11
VENV ?= .venv

.PHONY: install test lint

install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e ".[ray,dev]"

test:
	$(VENV)/bin/python -m pytest -q

lint:
	$(VENV)/bin/ruff check apa tests
