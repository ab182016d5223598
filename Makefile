# Console proxy suite. The two commands: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := scripts/uv.sh
PYTEST_ARGS ?=

.PHONY: help setup system novnc run test test-unit lint screenshots bench bench-quick compose-up compose-down netns-up netns-down clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Create .venv with every package and command (uv workspace), install pinned noVNC
	$(UV) sync --all-packages --locked
	bash scripts/install-novnc.sh

system: ## Install the Debian packages the tests use (Xvnc, QEMU, Chromium, Redis, ...)
	bash scripts/install-system.sh

run: setup ## Start a local cluster on embedded defaults and print console URLs (Ctrl-C stops)
	bash scripts/run-local.sh

test: system setup ## Install everything the tests need and run the whole suite
	bash scripts/install-autobahn.sh
	$(UV) run ruff check libs services tests bench
	$(UV) run lint-imports
	set +e; $(UV) run pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc
	$(UV) run python bench/run.py --quick --smoke

test-unit: setup ## Only the unit tests (no processes, no browser)
	$(UV) run pytest tests/unit -q

lint: setup ## ruff and the import contracts
	$(UV) run ruff check libs services tests bench
	$(UV) run lint-imports

screenshots: system setup ## Regenerate the README's pictures (docs/screenshots/) with the browser tests
	CONSOLE_SCREENSHOTS=$(CURDIR)/docs/screenshots $(UV) run pytest -q tests/e2e/test_novnc_compute_consoles.py -k builtin

bench: system setup ## Full benchmark vs websockify and socat (about 6 minutes)
	$(UV) run python bench/run.py

bench-quick: system setup ## Short benchmark run (about 2 minutes)
	$(UV) run python bench/run.py --quick

bench-logs: setup ## consolectl logs on a generated 1 GB log: lines/s on one core, peak RSS
	$(UV) run python bench/logs.py

compose-up: ## Build the images and start the compose cluster on a private dockerd (edge on :6080/:6081)
	bash scripts/compose-up.sh

compose-down: ## Stop the compose cluster and its dockerd, remove everything they made
	bash scripts/compose-down.sh

netns-up: system setup ## Bring up the seed's multi-host layout in network namespaces
	bash scripts/netns-up.sh

netns-down: ## Tear the multi-host layout down
	bash scripts/netns-down.sh

clean: ## Remove the virtualenv, caches, builds and local state
	rm -rf .venv .pytest_cache .state dist build services/novnc/web/node_modules
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: soak
soak: setup ## Long hostile-input runs: 100 000 fuzz inputs per test (about 1 h), slowloris at 18 000 connections
	CONSOLE_FUZZ_PROFILE=soak $(UV) run pytest -q --timeout 7200 tests/fuzz
	CONSOLE_SLOWLORIS_CONNECTIONS=18000 CONSOLE_SLOWLORIS_WAVES=5 $(UV) run pytest -q -s --timeout 1200 tests/integration/test_slowloris.py
