# The front door: `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install demo test lint bench up down clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install comms with its dev tools (idempotent)

demo: install ## Run the fleet and a real campaign end to end on this machine
	$(BIN)/comms demo

test: install ## Run the whole test suite on the embedded PostgreSQL and Redis
	@# pytest exits 5 when it collected no tests: report that plainly, it is not a crash
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: no tests were collected"; exit 0; fi; \
	  exit $$status

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install ## Benchmarks (print figures; never fail on timing)
	$(BIN)/python bench/smtp_throughput.py
	$(BIN)/python bench/rate_limit.py
	$(BIN)/python bench/sendtime_sim.py
	$(BIN)/python bench/inbound.py
	$(BIN)/python bench/campaign.py

up: install ## Start the embedded PostgreSQL and Redis and migrate
	$(BIN)/comms dev up
	$(BIN)/comms db upgrade

down: ## Stop the embedded services
	$(BIN)/comms dev down

clean: ## Stop services and remove .venv and .comms
	-$(BIN)/comms dev down --destroy
	rm -rf $(VENV) .comms
