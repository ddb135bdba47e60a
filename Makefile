# Two commands for a fresh machine:
#   make run    - set up, then run the gateway on etc/gw.ini with its demo backends
#   make test   - set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test check bench conformance lint

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/twistd -n --pidfile= agw --config etc/gw.ini --demo

check: setup
	$(VENV)/bin/twistd agw --config etc/gw.ini --demo --check

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
