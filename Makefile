# Telemetry Services — the two commands: `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PYTHON      ?= python3
PYTHON_REQS := scripts/python-requirements.txt
PYTHON_OK := $(VENV)/.installed
# `make dev` and `make test` use different ports, so tests can run while the dev stack is up.
DEV_EMULATOR_PORT  ?= 4566
TEST_EMULATOR_PORT ?= 4599
PORT ?= 3000

FUNCTIONS := ingest store forward post-process query
# Lambda architecture of `make build` (and of `sam build`, which calls the build-* targets).
ARCH ?= arm64
ifeq ($(ARCH),arm64)
  TRIPLE := aarch64-unknown-linux-gnu
  # Cross-compiling from x86_64: the C parts (aws-lc) and the link need an aarch64 toolchain.
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER ?= aarch64-linux-gnu-gcc
  export CC_aarch64_unknown_linux_gnu ?= aarch64-linux-gnu-gcc
else ifeq ($(ARCH),x86_64)
  TRIPLE := x86_64-unknown-linux-gnu
else
  $(error ARCH must be arm64 or x86_64, not $(ARCH))
endif

BENCH_EMULATOR_PORT ?= 4597
BENCH_EVENTS ?= 10000
BENCH_RUNS ?= 20

SOAK_EVENTS ?= 20000
SOAK_EMULATOR_PORT ?= 4596

.PHONY: help dev test emulator fmt-check clippy build lint bench soak

help:
	@echo "make dev    run the whole pipeline locally (emulator + telemetry local on :$(PORT))"
	@echo "make test   install test needs once, start the emulator, run fmt, clippy, cfn-lint and every test, stop it"
	@echo "make soak   $(SOAK_EVENTS) events under ~10% injected AWS faults and a 5 s outage; checks every promise"
	@echo "make bench  criterion benches, cold start, peak RSS, AWS requests per event: one table"
	@echo "make build  Lambda artefacts in target/lambda/\$$ARCH/<function>.zip (ARCH=arm64|x86_64, default arm64)"

# The emulator (moto server, pinned with all its dependencies) lives in .venv/.
$(PYTHON_OK): $(PYTHON_REQS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -r $(PYTHON_REQS)
	touch $@

emulator: $(PYTHON_OK)

dev: $(PYTHON_OK)
	cargo build -p telemetry-cli
	scripts/dev.sh $(DEV_EMULATOR_PORT) $(PORT)

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

lint: $(PYTHON_OK)
	$(VENV)/bin/cfn-lint template.yaml

test: $(PYTHON_OK) fmt-check clippy lint
	scripts/with-emulator.sh $(TEST_EMULATOR_PORT) cargo test --workspace

# Lambda artefacts: target/lambda/$(ARCH)/<function>/bootstrap and <function>.zip.
build:
	scripts/check-toolchain.sh $(TRIPLE)
	cargo build --release --locked --target $(TRIPLE) $(addprefix -p ,$(FUNCTIONS))
	scripts/package.sh $(TRIPLE) target/lambda/$(ARCH) $(FUNCTIONS)

# `sam build` (BuildMethod: makefile) calls build-<LogicalId> with ARTIFACTS_DIR set.
build-IngestFunction build-StoreFunction build-ForwardFunction build-PostProcessFunction build-QueryFunction:
	$(MAKE) build-one FUNCTION=$(shell echo '$@' | sed -e 's/^build-//' -e 's/Function$$//' -e 's/PostProcess/post-process/' | tr 'A-Z' 'a-z')

build-one:
	scripts/check-toolchain.sh $(TRIPLE)
	cargo build --release --locked --target $(TRIPLE) -p $(FUNCTION)
	scripts/package.sh $(TRIPLE) target/lambda/$(ARCH) $(FUNCTION)
	cp target/lambda/$(ARCH)/$(FUNCTION)/bootstrap "$(ARTIFACTS_DIR)/bootstrap"

# Figures beside their floors; docs/PERFORMANCE.md explains each one.
bench: $(PYTHON_OK)
	cargo bench -p ingest -p store -p forward -p post-process --bench core -- --warm-up-time 1 --measurement-time 3
	cargo build --release --locked -p ingest -p store -p forward -p post-process -p query -p hello-lambda
	cargo build -p telemetry-e2e --bin perf
	scripts/with-emulator.sh $(BENCH_EMULATOR_PORT) sh -c 'target/debug/perf cold-start --runs $(BENCH_RUNS) && target/debug/perf requests --events $(BENCH_EVENTS)'
	python3 scripts/bench-summary.py

# The soak at full size (`make test` runs it with 2,000 events).
soak: $(PYTHON_OK)
	SOAK_EVENTS=$(SOAK_EVENTS) scripts/with-emulator.sh $(SOAK_EMULATOR_PORT) cargo test -p telemetry-e2e --test soak -- --nocapture
