# Entry points; each one makes sure .venv is up to date first (scripts/ensure-venv.sh).
#   make test [ARGS="-k frame -x"]   ruff + mypy + pytest, as CI runs them
#   make lint                        ruff + mypy only
#   make run                         the whole sample (Redis check, services, client)
#   make bench [ARGS=...]            scripts/bench.py

SHELL := /bin/bash
VENV := .venv
ARGS ?=

.PHONY: test lint run bench venv

venv:
	@./scripts/ensure-venv.sh

test:
	./scripts/test.sh $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

run:
	./run-sample.sh

bench: venv
	$(VENV)/bin/python scripts/bench.py $(ARGS)
