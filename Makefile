# Telemetry Services — the two commands: `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PYTHON      ?= python3
EMULATOR_REQS := scripts/emulator-requirements.txt
EMULATOR_OK := $(VENV)/.emulator-installed
# `make dev` and `make test` use different ports, so tests can run while the dev stack is up.
DEV_EMULATOR_PORT  ?= 4566
TEST_EMULATOR_PORT ?= 4599
PORT ?= 3000

.PHONY: help dev test emulator fmt-check clippy unit e2e build

help:
	@echo "make dev    run the whole pipeline locally (emulator + telemetry local on :$(PORT))"
	@echo "make test   install test needs once, start the emulator, run fmt, clippy and every test, stop it"

# The emulator (moto server, pinned with all its dependencies) lives in .venv/.
$(EMULATOR_OK): $(EMULATOR_REQS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -r $(EMULATOR_REQS)
	touch $@

emulator: $(EMULATOR_OK)

dev: $(EMULATOR_OK)
	cargo build -p telemetry-cli
	scripts/dev.sh $(DEV_EMULATOR_PORT) $(PORT)

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

test: $(EMULATOR_OK) fmt-check clippy
	scripts/with-emulator.sh $(TEST_EMULATOR_PORT) cargo test --workspace
