# Everything a newcomer needs: `make demo` runs the whole pipeline offline, `make test` runs the tests.
# Each target creates what it needs (virtualenvs, node_modules) on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
CHECKOV_VENV := .venv-checkov
PY := $(VENV)/bin/python
CDK := JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" node_modules/.bin/cdk
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
PYTEST_ARGS ?=

.PHONY: install test test-unit test-infra test-integration lint format synth bootstrap deploy diff destroy demo bench bench-handler bench-batch bench-importer clean

install: $(VENV)/.installed node_modules/.installed $(CHECKOV_VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# The checkout's other packages (stacks, functions, zstc_local) for the console script and the benchmarks.
	echo "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zstc-checkout.pth"
	touch $@

# checkov pins old dependencies (boto3 1.35, sagemaker-core 1.x): it gets a virtualenv of its own.
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Fast loops: one layer of the suite at a time (make test runs all three).
test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-infra: install
	$(PY) -m pytest tests/infrastructure $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

synth: install
	$(CDK) synth --quiet $(CDK_ARGS)
	@$(PY) -m stacks.summary cdk.out

bootstrap: install
	$(CDK) bootstrap $(CDK_ARGS)

# Two stacks: <stack_name> (bucket, key, batch path, monitoring) and, unless endpoint_mode=none,
# <stack_name>-Endpoint (the real-time endpoint), deployed after it: a failed endpoint rolls back only its own stack.
# STACKS picks stacks, e.g. STACKS=ZeroShotClassification-Endpoint retries the endpoint (and updates what it needs).
STACKS ?= --all

diff: install
	$(CDK) diff $(filter-out --all,$(STACKS)) $(CDK_ARGS)

deploy: install
	$(CDK) deploy $(STACKS) $(CDK_ARGS)

destroy: install
	$(CDK) destroy $(STACKS) $(CDK_ARGS)

demo: install
	$(VENV)/bin/zstc demo $(DEMO_ARGS)

bench: bench-handler bench-batch bench-importer

bench-handler: install
	$(PY) benchmarks/bench_handler.py $(BENCH_ARGS)

bench-batch: install
	$(PY) benchmarks/bench_batch.py $(BENCH_ARGS)

bench-importer: install
	$(PY) benchmarks/bench_importer.py $(BENCH_ARGS)

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis
