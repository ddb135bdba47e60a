# Two commands for a fresh machine:
#   make run    - set up, then run the gateway on etc/gw-demo.ini with its demo backends
#   make test   - set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test fuzz lint check deploy-check bench bench-tools conformance conformance-full setup-pypy run-pypy test-pypy conformance-pypy

# $(call venv,PYTHON,DIR,PIP-OPTIONS): DIR as a venv of PYTHON with agw and its test extras.
define venv
	$(1) -m venv $(2)
	$(2)/bin/python -m pip install -q --upgrade pip
	$(2)/bin/python -m pip install -q $(3) -e '.[test]'
	touch $(2)/.installed
endef

$(VENV)/.installed: setup.cfg pyproject.toml
	$(call venv,$(PYTHON),$(VENV),)

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/twistd -n --pidfile= agw --config etc/gw-demo.ini --demo

# etc/gw.ini (the sample to install) needs nothing else; etc/gw-demo.ini needs
# the demo certificate that --demo makes.
check: setup
	$(VENV)/bin/twistd agw --config etc/gw.ini --check
	$(VENV)/bin/twistd agw --config etc/gw-demo.ini --demo --check

# deploy/install.sh (the Containerfile's install steps) into a scratch venv,
# then that install checks the Kubernetes ConfigMap's gw.ini.
deploy-check: setup
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	sh deploy/install.sh "$$tmp/venv" "$$(pwd)" && \
	$(PY) -c 'import sys, yaml; doc = yaml.safe_load(open("deploy/kubernetes/configmap.yaml")); sys.stdout.write(doc["data"]["gw.ini"])' | \
	    sed "s#/etc/agw-admin/admin.token#$$tmp/admin.token#" >"$$tmp/gw.ini" && \
	(umask 077 && openssl rand -hex 32 >"$$tmp/admin.token") && \
	"$$tmp/venv/bin/twistd" agw --config "$$tmp/gw.ini" --check

# lint-imports checks the layer contracts in .importlinter (docs/development.rst).
lint: setup
	$(VENV)/bin/ruff check agwtx twisted tests bench conformance
	$(VENV)/bin/ruff format --check agwtx twisted tests bench conformance
	$(VENV)/bin/lint-imports

# -ra: the summary says why each test was skipped (CI=true turns the
# status page's missing-Chromium skip into a failure).
test: lint
	$(PY) -m pytest -q -ra -p no:cacheprovider $(PYTEST_ARGS)

# The differential fuzzer (tests/test_fuzz.py, docs/hardening.rst) for a long
# run: AGW_FUZZ_EXAMPLES examples (5000 by default) instead of CI's 120.
fuzz: setup
	AGW_FUZZ_PROFILE=agw-long $(PY) -m pytest -q -ra -p no:cacheprovider tests/test_fuzz.py $(PYTEST_ARGS)

# PyPy: Debian's pypy3 (PyPy 7.3.11, Python 3.9) gives the same gateway two to
# three times CPython's HTTP throughput (2.2 and 2.8 times in two runs of
# `.venv/bin/python bench/http_bench.py --duration 10` on 2026-12-03:
# docs/performance.rst). The venv is
# .venv-pypy; pypy3 and pypy3-venv are installed from Debian's packages when
# missing (this needs root, as .ci/run has). --only-binary: cryptography's
# newest release with a PyPy 3.9 wheel (43.0.3) is taken instead of building a
# newer one from source, which needs Rust crates from outside the registries.
# -c constraints/floors.txt: the PyPy venv holds the oldest releases agw
# declares (setup.cfg), so CI tests the floors; the CPython venv the newest.
PYPY ?= pypy3
PYPY_VENV ?= .venv-pypy

$(PYPY_VENV)/.installed: setup.cfg pyproject.toml constraints/floors.txt
	command -v $(PYPY) >/dev/null 2>&1 || { apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pypy3 pypy3-venv; }
	$(call venv,$(PYPY),$(PYPY_VENV),--only-binary cryptography -c constraints/floors.txt)

setup-pypy: $(PYPY_VENV)/.installed

# A 32 MB GC nursery: in bench/http_bench.py (which sets the same) about 1.5x
# the req/s and a third of the p99 of PyPy's default, for ~200 MiB more RSS.
PYPY_GC_NURSERY ?= 32MB

run-pypy: setup-pypy
	PYPY_GC_NURSERY=$(PYPY_GC_NURSERY) $(PYPY_VENV)/bin/twistd -n --pidfile= agw --config etc/gw-demo.ini --demo

test-pypy: setup-pypy
	$(PYPY_VENV)/bin/python -m pytest -q -ra -p no:cacheprovider $(PYTEST_ARGS)

# The conformance run with the gateway and echo backend on PyPy, without the
# permessage-deflate groups 12 and 13 (not negotiated there: docs/pypy.rst).
conformance-pypy: setup-pypy
	bash conformance/setup-wstest.sh >/dev/null
	$(PYPY_VENV)/bin/python conformance/run_autobahn.py --cases '1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*'

# Autobahn conformance (.ci/run runs `make conformance`). setup-wstest.sh builds
# .cache/wstest-venv (or $$WSTEST_VENV), where run_autobahn.py looks for wstest.
# The compression groups 12.* and 13.* take ~28 min through the gateway, so the
# CI set has only their first subgroups; conformance-full runs them all.
conformance: setup
	bash conformance/setup-wstest.sh >/dev/null
	$(PY) conformance/run_autobahn.py --cases '1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.1.*,13.1.*'

conformance-full: setup
	bash conformance/setup-wstest.sh >/dev/null
	$(PY) conformance/run_autobahn.py --timeout 3600 --cases '1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.*,13.*'

# http_bench's agw-pypy row needs .venv-pypy (setup-pypy).
# The benches compare with Debian's nginx under wrk; the WebSocket one's
# client is node (bench/package.json).  Installed when missing, as above.
bench-tools:
	@need=""; for t in nginx:nginx wrk:wrk npm:npm h2load:nghttp2-client; do \
	    command -v $${t%%:*} >/dev/null 2>&1 || need="$$need $${t#*:}"; done; \
	if [ -n "$$need" ]; then set -x; apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$need; fi

bench: setup setup-pypy bench-tools
	$(PY) bench/http_bench.py
	$(PY) bench/h2_bench.py
	npm ci --prefix bench --silent && $(PY) bench/ws_bench.py --idle 9000
