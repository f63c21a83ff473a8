# SampleDB operator. `make help` lists the targets by group.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION ?= 0.1.0
# The Python environment: a venv in the repo by default (CI points VENV at its cache).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PY := $(abspath $(PYTHON))
TOOLS_DIR := $(shell hack/build-tools.sh --print-dir)
include hack/versions.env
KUBECTL := $(TOOLS_DIR)/kubectl-$(KUBERNETES_VERSION)/kubectl
CLUSTER_DIR ?= .local/cluster
DEMO_DIR ?= .local/demo
# Test selection, e.g. `make test PYTEST_ARGS="-k deletion -x"`.
PYTEST_ARGS ?=

##@ General
.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development
$(PYTHON): operator/pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e 'operator[dev]'
	@touch $(PYTHON)

.PHONY: venv
venv: $(PYTHON) ## Create the Python environment (operator + dev dependencies).

.PHONY: tools
tools: ## Build the pinned Kubernetes toolchain into ~/.cache/sampledb-operator/tools (cached by version).
	hack/build-tools.sh

.PHONY: cluster-tools
cluster-tools: ## Build only what the local cluster needs (etcd, kube-*, kwok, kubectl).
	hack/build-tools.sh etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl

.PHONY: generate
generate: $(PYTHON) ## Regenerate crds/ from the pydantic models.
	cd operator && $(PY) -m sampledb_operator generate-crds --out ../crds

.PHONY: lint
lint: $(PYTHON) ## ruff (lint + format check) and mypy --strict.
	cd operator && $(PY) -m ruff check sampledb_operator sampledb_localcluster ../tests
	cd operator && $(PY) -m ruff format --check sampledb_operator sampledb_localcluster
	cd operator && $(PY) -m mypy sampledb_operator sampledb_localcluster

##@ Tests
.PHONY: test
test: lint cluster-tools ## Everything CI runs: lint, then unit, PostgreSQL and integration tests in one pytest run.
	$(PYTHON) -m pytest tests/unit tests/postgres tests/integration $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(PYTHON) ## Unit tests (no cluster).
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-postgres
test-postgres: $(PYTHON) ## The operator's scripts against real PostgreSQL (every major under /usr/lib/postgresql).
	$(PYTHON) -m pytest tests/postgres $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: $(PYTHON) cluster-tools ## Integration tests on a local control plane started for the run (or $KUBECONFIG).
	$(PYTHON) -m pytest tests/integration $(PYTEST_ARGS)

##@ Local cluster
.PHONY: cluster-up
cluster-up: $(PYTHON) cluster-tools ## Start the local control plane (etcd, kube-*, kwok) in the background.
	cd operator && $(PY) -m sampledb_localcluster --state-dir ../$(CLUSTER_DIR) up

.PHONY: cluster-down
cluster-down: $(PYTHON) ## Stop the local control plane; safe to run twice.
	cd operator && $(PY) -m sampledb_localcluster --state-dir ../$(CLUSTER_DIR) down

.PHONY: cluster-env
cluster-env: $(PYTHON) ## Print `export KUBECONFIG=...` for the local cluster: eval "$(make -s cluster-env)".
	@cd operator && $(PY) -m sampledb_localcluster --state-dir ../$(CLUSTER_DIR) env

##@ Run
.PHONY: install
install: $(PYTHON) ## Install the CRDs into the cluster of $KUBECONFIG.
	$(KUBECTL) apply --server-side -f crds/

.PHONY: uninstall
uninstall: ## Remove the CRDs (and with them every SampleDB!) from the cluster of $KUBECONFIG.
	$(KUBECTL) delete --ignore-not-found -f crds/

.PHONY: run
run: $(PYTHON) ## Run the operator out of cluster against $KUBECONFIG.
	cd operator && $(PY) -m sampledb_operator run

.PHONY: demo
demo: $(PYTHON) cluster-tools ## The main job: local cluster + operator + a sample SampleDB reconciled to Ready.
	PYTHON=$(PYTHON) KUBECTL=$(KUBECTL) CLUSTER_DIR=$(CLUSTER_DIR) DEMO_DIR=$(DEMO_DIR) hack/demo.sh

.PHONY: demo-down
demo-down: ## Stop what `make demo` started (operator, webhook, then the local cluster).
	@for p in operator webhook; do \
	  if [ -f $(DEMO_DIR)/$$p.pid ]; then kill $$(cat $(DEMO_DIR)/$$p.pid) 2>/dev/null || true; rm -f $(DEMO_DIR)/$$p.pid; fi; \
	done
	$(MAKE) cluster-down
