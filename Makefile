# Everything the next person needs to run is here (STYLE.md §8).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
GEN := build/gen
# Qiji's own contracts. protos/google/ holds the Google API and error-detail protos they import,
# vendored for callers in other languages; their Python modules come from the pinned
# googleapis-common-protos package (generating them again would register each file twice).
# protos/grpc/ (reflection v1, vendored) is generated with Qiji's: grpcio-reflection has no v1.
PROTOS := $(shell find protos -name '*.proto' -not -path 'protos/google/*' | sort)
PROTO_DEPS := $(shell find protos/google -name '*.proto' | sort)
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run demo test test-fast test-unit test-integration test-e2e protos lint bench clean venv k8s docs \
	console-assets

## run: start Qiji on its embedded default (SQLite files under ./data, no servers)
run: $(STAMP) protos console-assets
	$(PY) -m shared.tools.cli run

## demo: tell the city's report against a Qiji of its own (embedded default, throwaway data
## dir, free ports), then stop it; exits with the demo's status
demo: $(STAMP) protos console-assets
	$(PY) -m shared.tools.cli demo --embedded

## test: the whole suite, with a pytest summary
# On two workers (pytest-xdist), each test file on one of them: most of the suite's time is spent
# waiting on processes, PostgreSQL and a browser, not on a core. Measured on the 2-core machine:
# in one process 788-896 s (CI, three runs); on two workers 452 s with whole files, 595 s with
# tests dealt one by one (a file's module fixtures, such as a started stack, made on both).
# `auto`: two workers where PostgreSQL allows 200 connections, else one (tests/conftest.py);
# TEST_WORKERS=0: in this one process. Each worker is a session with its own PostgreSQL database;
# files that share the RabbitMQ node, or the told Qiji, run on one worker in turn
# (RUN_TOGETHER in tests/conftest.py).
TEST_WORKERS ?= auto
test: $(STAMP) protos $(NODE_STAMP) console-assets
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile

# The working loop: unit and in-process integration tests on SQLite (no PostgreSQL, no
# processes, no network), on both cores: about 40 s. Not what CI runs: `make test` is the whole suite.
test-fast: $(STAMP) protos
	$(PY) -m pytest tests/unit tests/integration -q -m "not postgres and not e2e" -n 2

test-unit: $(STAMP) protos
	$(PY) -m pytest tests/unit

test-integration: $(STAMP) protos
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP) protos $(NODE_STAMP) console-assets
	$(PY) -m pytest tests/e2e

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[dev]'
	# Generated protobuf code lives outside the tree; put it on the venv's path.
	echo "$(CURDIR)/$(GEN)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/qiji_gen.pth"
	touch $(STAMP)

## protos: generate Python code from protos/ (never edited by hand)
# protoc warns that the google/rpc imports are unused: each service imports them on purpose,
# so that reflection serves the error types with it (protos/google/README.md). Only that
# warning is dropped; any other message and protoc's exit status pass through.
protos: $(GEN)/.stamp
$(GEN)/.stamp: $(PROTOS) $(PROTO_DEPS) $(STAMP)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS) 2>$(GEN)/protoc.log; \
		status=$$?; grep -v 'warning: Import google/rpc/[a-z_]*.proto is unused' $(GEN)/protoc.log >&2; exit $$status
	touch $@

# The npm packages package.json pins: buf (lint; `buf curl` in tests/e2e/test_reflection.py),
# what tests/node/client.mjs, the Node.js client the e2e tests run, imports, and ECharts.
$(NODE_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --silent
	touch $@

## console-assets: vendor Apache ECharts (pinned in package.json) into build/console, which the
## console serves as /static/vendor/: the pages never load anything from a CDN at run time
CONSOLE_ASSETS := build/console/echarts.min.js
console-assets: $(CONSOLE_ASSETS)
$(CONSOLE_ASSETS): $(NODE_STAMP)
	mkdir -p $(dir $@)
	cp node_modules/echarts/dist/echarts.min.js node_modules/echarts/LICENSE $(dir $@)

# The contract of the newest release whose log the upgrade tests keep: `buf build` of that
# release's protos/ (e.g. buf build '.git#ref=bc4f4f7,subdir=protos' --exclude-source-info -o
# tests/upgrade/releases/0.1.0/contract.binpb). Nothing may break what its callers rely on.
LAST_CONTRACT := $(shell ls tests/upgrade/releases/*/contract.binpb | sort -V | tail -n 1)

## lint: ruff over the Python, import-linter over the layers (pyproject's [tool.importlinter]:
## the kernel imports no service, a service no other service but its published topics, a domain
## no gRPC, SQL, AMQP or the library's persistence), mypy over shared/, services/ and bench/
## (strict for the domain; [tool.mypy]), buf over the contracts (style, and no break of the last
## release)
lint: $(STAMP) $(NODE_STAMP) protos
	$(BIN)/ruff check shared services tests bench deploy
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy
	node_modules/.bin/buf lint
	node_modules/.bin/buf breaking protos --against $(LAST_CONTRACT)

## k8s: write deploy/k8s/monitoring.yaml (Prometheus, Grafana and their ConfigMaps) from
## deploy/monitoring/; the tests fail while it is out of date
k8s: $(STAMP)
	$(PY) deploy/k8s/monitoring.py

## docs: write docs/api/, the API reference, from protos/ and the services' Python (every
## service, RPC, message, field, enum and error reason); the tests fail while it is out of date
docs: $(STAMP)
	$(PY) deploy/apidoc.py

## bench: every benchmark in bench/, each printing figures beside its raw baseline
bench: $(STAMP) protos
	$(PY) -m bench.run_all

clean:
	rm -rf build data .pytest_cache
