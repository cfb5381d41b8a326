# Kestrel's front door. `make run` and `make test` need nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run worker cron test test-faults lint format migrations-check bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

## Redis (unless REDIS_URL is set), migrations, demo data, web on :8000 and a worker.
run: install
	$(PY) -m core.devstack

## Only the RQ worker, against REDIS_URL.
worker: install
	$(PY) manage.py rqworker email reports default --with-scheduler --worker-ttl 75

## Only RQ's cron scheduler (enqueues the periodic jobs of jobs/cron.py).
cron: install
	$(PY) manage.py rqcron jobs/cron.py

## The test suite: starts its own private Redis; SQLite unless DATABASE_URL is set.
test: install
	$(PY) -m pytest

## Only the fault tests (real processes killed, servers stopped); also part of `make test`.
test-faults: install
	$(PY) -m pytest -m slow

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

migrations-check: install
	DEBUG=1 $(PY) manage.py makemigrations --check --dry-run

## Benchmarks: starts its own Redis and gunicorn, loads them on 127.0.0.1, prints figures.
bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
