# Kestrel's front door. `make run` and `make test` need nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-dev manage run worker cron test test-cluster test-faults e2e reliability security audit lint format migrations-check bench bench-cluster clean

# `make run` needs only the runtime requirements; the test, lint, audit and benchmark
# tools come with the targets that use them.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

## manage.py in a second terminal while `make run` runs: `make manage ARGS=createsuperuser`.
## It reads the running stack's settings (Redis URL, DEBUG) from var/devstack.env.
manage: install
	@test -f var/devstack.env || { echo "make manage: start \`make run\` first (var/devstack.env is written while it runs)"; exit 2; }
	set -a && . var/devstack.env && set +a && $(PY) manage.py $(ARGS)

## Redis (unless REDIS_URL is set), migrations, demo data, web on :8000 and a worker.
run: install
	$(PY) -m devstack.run

## Only the RQ workers, against the queue role (REDIS_QUEUE_URL, default REDIS_URL): a pool of
## WORKER_PROCESSES (default: one per core).
WORKER_PROCESSES ?= $(shell nproc 2>/dev/null || echo 2)
worker: install
	$(PY) manage.py rqworker-pool periodic email reports default --num-workers $(WORKER_PROCESSES)

## Only RQ's cron scheduler (enqueues the periodic jobs of jobs/cron.py).
cron: install
	$(PY) manage.py rqcron jobs/cron.py

## The test suite: starts its own private Redis; SQLite unless DATABASE_URL is set.
test: install-dev
	$(PY) -m pytest

## The same suite with the cache and state roles each on a private Redis Cluster (three
## primaries) and the queue role on a private server of its own.
test-cluster: install-dev
	KESTREL_TEST_CLUSTER=1 $(PY) -m pytest

## Only the fault tests (real processes killed, servers stopped); also part of `make test`.
test-faults: install-dev
	$(PY) -m pytest -m 'slow and not e2e and not reliability'

## The browser suite: headless Debian Chromium against a live Kestrel (web, worker, Redis).
## Screenshots land in var/e2e/.
e2e: install-dev
	$(PY) -m pytest tests/e2e -m e2e

## Fault, memory-pressure and fuzz suites, a load run, then the security checks.
## Bounded, loopback only; reports land in var/reliability/.
reliability: install-dev
	$(PY) -m pytest tests/reliability -m reliability
	$(PY) -m bench load
	$(MAKE) security

## Deploy checks under production settings, and a static security lint.
security: install-dev
	$(PY) -m devstack.deploycheck
	$(PY) -m bandit -q -c pyproject.toml -r config core accounts posts feeds jobs ops devstack
	$(MAKE) audit

## Known vulnerabilities in the pinned dependencies; fails if any package went unchecked.
audit: install-dev
	$(PY) -m pip_audit --strict --progress-spinner off -r requirements.txt -r requirements-dev.txt

## Ruff, the import rules (import-linter contracts in pyproject.toml) and the types (mypy).
lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	DEBUG=1 $(VENV)/bin/mypy --strict core
	DEBUG=1 $(VENV)/bin/mypy accounts posts feeds jobs ops config

format: install-dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

migrations-check: install-dev
	DEBUG=1 $(PY) manage.py makemigrations --check --dry-run

## Benchmarks: starts its own Redis and gunicorn, loads them on 127.0.0.1, prints figures.
bench: install-dev
	$(PY) -m bench

## The HTTP benchmarks on one Redis server and, interleaved, with the cache and state roles
## each on a private three-primary Redis Cluster (queue role on a server of its own): prints
## what the cluster costs each path (req/s and round trips per request, cluster over one server).
bench-cluster: install-dev
	$(PY) -m bench --cluster

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
