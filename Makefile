# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# The second test pass runs against real services; these are the local defaults.
SERVICES_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatsite
SERVICES_REDIS_URL ?= redis://127.0.0.1:6379/0

# Both locks pin every package with its hashes (README, "Dependencies"); `make lock` recompiles them.
PIP_INSTALL := $(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes
LOCK := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 --custom-compile-command "make lock"

.PHONY: run test lint test-embedded test-services check-deploy lock

# What the web and worker processes need: the runtime lock only.
$(VENV)/installed: requirements.txt
	python3 -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	touch $@

# The runtime set and the test and development tools, at the same versions.
$(VENV)/installed-dev: requirements-dev.txt
	python3 -m venv $(VENV)
	$(PIP_INSTALL) -r requirements-dev.txt
	touch $@

run: $(VENV)/installed
	DJANGO_DEBUG=on $(PY) manage.py migrate --verbosity 0
	DJANGO_DEBUG=on $(PY) manage.py demouser
	@echo "chatsite: open http://127.0.0.1:$(PORT)/"
	DJANGO_DEBUG=on $(PY) manage.py runserver 127.0.0.1:$(PORT)

test: lint test-embedded test-services

# Static checks: apps import one way (.importlinter), ruff's lint and format, mypy with django-stubs
# (pyproject.toml). mypy checks the apps, not tests/, whose fixtures and doubles are typed loosely;
# importing the settings needs a secret key, and any will do.
lint: $(VENV)/installed-dev
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	DJANGO_SECRET_KEY=mypy $(VENV)/bin/mypy chatsite threads streaming
	$(VENV)/bin/ruff format --check .

# Django's deployment checks on production settings (debug off, a real key, a host name), warnings failing.
check-deploy: $(VENV)/installed
	DJANGO_DEBUG=off DJANGO_ALLOWED_HOSTS=chat.example.com \
	DJANGO_SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))') \
	  $(PY) manage.py check --deploy --fail-level WARNING

# The embedded default: SQLite and the in-memory channel layer.
test-embedded: $(VENV)/installed-dev
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest $(PYTEST_ARGS)

# The same suite on PostgreSQL and channels-redis (browser tests ran in the first pass).
# Outside CI it is skipped, with a note, where the services are not running.
test-services: $(VENV)/installed-dev
	@if [ -z "$$CI" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5432 && exec 4<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then \
	  echo "PostgreSQL or Redis is not running on 127.0.0.1: skipping the services pass"; \
	else \
	  DATABASE_URL=$${DATABASE_URL:-$(SERVICES_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(SERVICES_REDIS_URL)} \
	    $(PY) -m pytest -m "not browser" $(PYTEST_ARGS); \
	fi

# Recompile both locks from requirements.in and requirements-dev.in, keeping every pin they
# already hold unless told otherwise: LOCK_ARGS="--upgrade-package anthropic" moves one package.
lock: $(VENV)/installed-dev
	$(LOCK) $(LOCK_ARGS) requirements.in --output-file requirements.txt
	$(LOCK) $(LOCK_ARGS) requirements-dev.in --output-file requirements-dev.txt
