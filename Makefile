# One place for the commands the README and CI use.
PYTHON ?= python3.11
VENV ?= .venv

.PHONY: install system-deps test lint

# espeak-ng (synthetic speech for tests and the learnability corpus) and sox, from apt.
system-deps:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q espeak-ng sox >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q espeak-ng sox; }; }

install: system-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e ".[ray,dev]"

test:
	$(VENV)/bin/python -m pytest -q

lint:
	$(VENV)/bin/ruff check apa tests
