# event-booking-api — `make run` serves the API, `make test` runs the whole suite.
# Both bootstrap their own tools from nothing but python3 and make.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := .tools/bin/uv
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.DEFAULT_GOAL := help
.PHONY: help install run test migrate migrations createsuperuser shell worker lint format profile \
	bench chaos cluster up up-d down build rebuild

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.synced ## Create .venv with the locked dependencies

run: $(VENV)/.synced ## Serve the API on http://127.0.0.1:8000 (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/python -m app serve

test: $(VENV)/.synced ## Run the whole test suite (real PostgreSQL and Redis; starts its own if none answers)
	$(BIN)/pytest

migrate: $(VENV)/.synced ## Apply the database migrations (alembic upgrade head)
	$(BIN)/python -m app migrate

migrations: $(VENV)/.synced ## New migration from the models: make migrations m="add something"
	@test -n "$(m)" || (echo 'usage: make migrations m="what changed"'; exit 2)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

createsuperuser: $(VENV)/.synced ## Create a staff account for the console at /admin (prompts for its details)
	$(BIN)/python -m app create-user --role organizer --staff

shell: $(VENV)/.synced ## Python shell with top-level await, settings, engine, sessionmaker and the models
	$(BIN)/python -m app shell

worker: $(VENV)/.synced ## Run the background job worker (email)
	$(BIN)/python -m app worker

lint: $(VENV)/.synced ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.synced ## Fix what ruff can fix and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.synced ## Run the benchmarks
	$(BIN)/python -m bench

chaos: $(VENV)/.synced ## Booking storm while a private PostgreSQL restarts, stops, freezes (and a worker, Redis die)
	$(BIN)/python -m bench.chaos

profile: $(VENV)/.synced ## CPU per request and its shares by package (in-process, cProfile)
	$(BIN)/python -m bench.profile

cluster: $(VENV)/.synced ## Scaled out, no Docker: PostgreSQL primary + replica, PgBouncer, Redis, 2 app instances, HAProxy on :8080
	$(BIN)/python -m deploy.cluster $(CLUSTER_ARGS)

COMPOSE ?= docker compose

up: ## Start db, redis, migrate, app and worker in containers (foreground)
	$(COMPOSE) up --build

up-d: ## The same, in the background
	$(COMPOSE) up --build --detach

down: ## Stop the containers (the data volumes stay)
	$(COMPOSE) down

build: ## Build the container image
	$(COMPOSE) build

rebuild: ## Build the container image from scratch
	$(COMPOSE) build --no-cache --pull
