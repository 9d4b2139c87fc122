# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# The second test pass runs against real services; these are the local defaults.
SERVICES_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatsite
SERVICES_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test lint test-embedded test-services

$(VENV)/installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

run: $(VENV)/installed
	DJANGO_DEBUG=on $(PY) manage.py migrate --verbosity 0
	DJANGO_DEBUG=on $(PY) manage.py demouser
	@echo "chatsite: open http://127.0.0.1:$(PORT)/"
	DJANGO_DEBUG=on $(PY) manage.py runserver 127.0.0.1:$(PORT)

test: lint test-embedded test-services

# Static checks: apps import one way (.importlinter).
lint: $(VENV)/installed
	$(VENV)/bin/lint-imports

# The embedded default: SQLite and the in-memory channel layer.
test-embedded: $(VENV)/installed
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest $(PYTEST_ARGS)

# The same suite on PostgreSQL and channels-redis (browser tests ran in the first pass).
# Outside CI it is skipped, with a note, where the services are not running.
test-services: $(VENV)/installed
	@if [ -z "$$CI" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5432 && exec 4<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then \
	  echo "PostgreSQL or Redis is not running on 127.0.0.1: skipping the services pass"; \
	else \
	  DATABASE_URL=$${DATABASE_URL:-$(SERVICES_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(SERVICES_REDIS_URL)} \
	    $(PY) -m pytest -m "not browser" $(PYTEST_ARGS); \
	fi
