# Telemetry Services — the two commands: `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PYTHON      ?= python3
PYTHON_REQS := scripts/python-requirements.txt
PYTHON_OK := $(VENV)/.installed
NODE_OK := node_modules/.installed
# `make dev` and `make test` use different ports, so tests can run while the dev stack is up.
DEV_EMULATOR_PORT  ?= 4566
TEST_EMULATOR_PORT ?= 4599
PORT ?= 3000

FUNCTIONS := ingest store forward post-process query
# Lambda architecture of `make build` (and of `sam build`, which calls the build-* targets).
ARCH ?= arm64
ifeq ($(ARCH),arm64)
  TRIPLE := aarch64-unknown-linux-gnu
else ifeq ($(ARCH),x86_64)
  TRIPLE := x86_64-unknown-linux-gnu
else
  $(error ARCH must be arm64 or x86_64, not $(ARCH))
endif
# provided.al2023's glibc. zig links every binary against exactly this version, and compiles
# aws-lc (the one C dependency) too, so the build host's own C library never matters.
LAMBDA_GLIBC := 2.34
BUILD_OK := $(VENV)/.build-installed
ZIGBUILD := $(CURDIR)/$(VENV)/bin/cargo-zigbuild
# The SAM CLI sends usage telemetry unless told not to.
export SAM_CLI_TELEMETRY := 0
export CARGO_ZIGBUILD_PYTHON_PATH := $(CURDIR)/$(VENV)/bin/python3
# aws-lc's cc builder prefers HOST_CC/CC when host and target are both x86_64; these win.
ZIG_ENV := CARGO_ZIGBUILD=$(ZIGBUILD) ZIG_CC_TARGET=$(subst -unknown-linux-gnu,-linux-gnu,$(TRIPLE)).$(LAMBDA_GLIBC) \
  AWS_LC_SYS_HOST_CC=$(CURDIR)/scripts/zig-cc AWS_LC_SYS_TARGET_CC=$(CURDIR)/scripts/zig-cc \
  AWS_LC_SYS_HOST_CXX=$(CURDIR)/scripts/zig-cxx AWS_LC_SYS_TARGET_CXX=$(CURDIR)/scripts/zig-cxx
CARGO_LAMBDA_BUILD = $(ZIG_ENV) $(ZIGBUILD) zigbuild --release --locked --target $(TRIPLE).$(LAMBDA_GLIBC)

# `make deploy` / `make deploy-check`: samconfig.toml's environment, and ARCH only when given.
SAM := $(VENV)/bin/sam
SAM_ENV ?= default
DEPLOY_ARCH := $(if $(filter command line environment,$(origin ARCH)),$(ARCH))
SAM_PARAMETERS := .aws-sam/parameters-$(SAM_ENV).yaml

BENCH_EMULATOR_PORT ?= 4597
BENCH_EVENTS ?= 10000
BENCH_RUNS ?= 20

SOAK_EVENTS ?= 20000
SOAK_EMULATOR_PORT ?= 4596

.PHONY: help dev test emulator fmt-check clippy build build-one lint bench soak deploy deploy-check build-check

help:
	@echo "make dev    run the whole pipeline locally (emulator + telemetry local on :$(PORT))"
	@echo "make test   install test needs once, start the emulator, run fmt, clippy, cfn-lint and every test, stop it"
	@echo "make soak   $(SOAK_EVENTS) events under ~10% injected AWS faults and a 5 s outage; checks every promise"
	@echo "make bench  criterion benches, cold start, peak RSS, AWS requests per event: one table"
	@echo "make build  Lambda artefacts in target/lambda/\$$ARCH/<function>.zip (ARCH=arm64|x86_64, default arm64)"
	@echo "make deploy ARCH=arm64|x86_64 [SAM_ENV=dev]   sam build + checks + sam deploy, one architecture throughout"
	@echo "make deploy-check [ARCH=...]   everything make deploy does before uploading"
	@echo "make build-check [REF=HEAD]    build REF inside a Debian 13 chroot (glibc 2.41); needs root"

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

# The template as CloudFormation and SAM see it, and the packaging scripts' own tests.
lint: $(PYTHON_OK)
	$(VENV)/bin/cfn-lint template.yaml
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-eu-west-1} $(SAM) validate --lint
	python3 -m unittest discover -s scripts -p 'test_*.py'

test: $(PYTHON_OK) $(NODE_OK) fmt-check clippy lint
	scripts/with-emulator.sh $(TEST_EMULATOR_PORT) cargo test --workspace

# The tests' JavaScript tools (a real OpenID provider), pinned by package-lock.json, into
# node_modules/. Node.js comes from the OS (Debian's `nodejs` and `npm` packages).
$(NODE_OK): package.json package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "make test needs Node.js >= 20 and npm (Debian/Ubuntu: apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The tools of `make build` (cargo-zigbuild and zig, pinned), in .venv/ beside the emulator's.
$(BUILD_OK): scripts/build-requirements.txt
	test -x $(VENV)/bin/python3 || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -r scripts/build-requirements.txt
	touch $@

# Lambda artefacts: target/lambda/$(ARCH)/<function>/bootstrap and <function>.zip.
build: $(BUILD_OK)
	scripts/check-toolchain.sh $(TRIPLE)
	$(CARGO_LAMBDA_BUILD) $(addprefix -p ,$(FUNCTIONS))
	python3 scripts/lambda_artifacts.py package $(TRIPLE) target/lambda/$(ARCH) $(FUNCTIONS)

# `sam build` (BuildMethod: makefile) calls build-<LogicalId> with ARTIFACTS_DIR set, through
# sam-build/Makefile (the functions' CodeUri; see there why).
build-IngestFunction build-StoreFunction build-ForwardFunction build-PostProcessFunction build-QueryFunction:
	$(MAKE) build-one FUNCTION=$(shell echo '$@' | sed -e 's/^build-//' -e 's/Function$$//' -e 's/PostProcess/post-process/' | tr 'A-Z' 'a-z')

build-one: $(BUILD_OK)
	scripts/check-toolchain.sh $(TRIPLE)
	$(CARGO_LAMBDA_BUILD) -p $(FUNCTION)
	python3 scripts/lambda_artifacts.py package $(TRIPLE) target/lambda/$(ARCH) $(FUNCTION)
	cp target/lambda/$(ARCH)/$(FUNCTION)/bootstrap "$(ARTIFACTS_DIR)/bootstrap"

# What `make deploy` would ship, checked without an AWS account: the parameters resolved once
# (scripts/sam_parameters.py), `sam build` with that architecture, `sam validate --lint`, and
# every .aws-sam/build/*/bootstrap compared with the architecture the stack will have.
# SKIP_BUILD=1 checks the build already there (e.g. one made by a plain `sam build`).
deploy-check: $(PYTHON_OK) $(BUILD_OK)
	@arch=$$($(VENV)/bin/python3 scripts/sam_parameters.py --config-env $(SAM_ENV) --arch "$(DEPLOY_ARCH)" --out $(SAM_PARAMETERS)) || exit 1; \
	echo "deploy-check: config env $(SAM_ENV), Architecture=$$arch"; \
	if [ "$(SKIP_BUILD)" != 1 ]; then \
	  ARCH=$$arch $(SAM) build --config-env $(SAM_ENV) --parameter-overrides file://$(CURDIR)/$(SAM_PARAMETERS) || exit 1; \
	fi; \
	$(SAM) validate --lint || exit 1; \
	python3 scripts/lambda_artifacts.py check $$arch .aws-sam/build/*Function/bootstrap

# Build, check and deploy one architecture: `make deploy ARCH=x86_64 [SAM_ENV=dev] [GUIDED=1]`.
# GUIDED=1 (the first deploy) asks for the parameters, with the resolved ones as defaults, and
# saves them in samconfig.toml: keep the Architecture it offers, the one just built and checked.
deploy: deploy-check
	$(SAM) deploy --config-env $(SAM_ENV) $(if $(GUIDED),--guided) --parameter-overrides file://$(CURDIR)/$(SAM_PARAMETERS)

# Proof that the build does not depend on the host's C library: builds the committed REF
# (default HEAD) with `make build ARCH=x86_64` inside a Debian 13 chroot (glibc 2.41) made with
# debootstrap, and inspects every binary. Needs root. Not part of `make test`.
build-check:
	scripts/build-check.sh $(or $(REF),HEAD)

# Figures beside their floors; docs/PERFORMANCE.md explains each one.
bench: $(PYTHON_OK)
	cargo bench -p ingest -p store -p forward -p post-process --bench core -- --warm-up-time 1 --measurement-time 3
	cargo build --release --locked -p ingest -p store -p forward -p post-process -p query -p hello-lambda
	cargo build -p telemetry-e2e --bin perf
	scripts/with-emulator.sh $(BENCH_EMULATOR_PORT) sh -c 'target/debug/perf cold-start --runs $(BENCH_RUNS) && target/debug/perf requests --events $(BENCH_EVENTS)'
	cargo build --release -p telemetry-e2e --bin perf
	target/release/perf units
	python3 scripts/bench-summary.py

# The soak at full size (`make test` runs it with 2,000 events).
soak: $(PYTHON_OK)
	SOAK_EVENTS=$(SOAK_EVENTS) scripts/with-emulator.sh $(SOAK_EMULATOR_PORT) cargo test -p telemetry-e2e --test soak -- --nocapture
