# IPA — top-level tasks. Each part of the project keeps its targets in mk/*.mk.
SHELL := /bin/bash
.DEFAULT_GOAL := help

include $(wildcard mk/*.mk)

.PHONY: help check test unit
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

check: ## fmt, clippy, generated-artefact drift
	scripts/check.sh

unit: ## unit and property tests (no test bed)
	cargo test --workspace

test: ## every test: checks, unit tests, then the real test bed (control plane, Prometheus, llama-server) and the integration tests
	scripts/test-all.sh
