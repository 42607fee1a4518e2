# The two commands a fresh machine needs are `make demo` (the main job on the local sandbox stack)
# and `make test`; `make check` is the fast tier a change is checked with first (docs/testing.md).
# Everything else here is what they are made of.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STACK   ?= dev
# Built artifacts (sandbox image, stand-in packages, wheelhouse) live outside the repo.
export CNCTL_CACHE ?= /var/cache/cnctl

.PHONY: setup venv plan check check-lint check-rest test typecheck bench clean

# System packages (one list: cnctl/sandbox/prereqs.py) and arm64 emulation; as root it installs what is
# missing, otherwise it says what to run. Standard library only: it runs before the virtualenv exists.
setup:
	@$(PYTHON) cnctl/sandbox/prereqs.py ensure

UV_VERSION := $(shell sed -n 's/^dev = \["uv==\([0-9.]*\)"\]/\1/p' pyproject.toml)

# The locked set (uv.lock): the same versions on every machine and in CI. pip only bootstraps uv, once.
$(BIN)/cnctl: pyproject.toml uv.lock
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv==$(UV_VERSION); }
	$(BIN)/uv sync --frozen --all-extras --quiet
	touch $@

venv: $(BIN)/cnctl

plan: venv  ## the offline plan of a stack (STACK=dev): resources and guardrail verdicts, no credentials
	$(BIN)/cnctl plan --stack $(STACK)

typecheck: venv  ## mypy over every package and script (pyproject.toml [tool.mypy] files) and deploy.py
	$(BIN)/pytest -q tests/unit/test_typecheck.py

# The fast tier, `pytest -m check` (tests/conftest.py): no root, no sandbox, no emulator, no network; a few
# minutes on 2 cores. Two pytest runs side by side, each printing its output when it ends: the linters'
# tests (mypy, ansible-lint, ruff, yamllint, zizmor, actionlint run as tests, so `make test` runs them too) and
# the rest of the tier, itself spread over two pytest-xdist workers a test file at a time (module fixtures, such
# as a stack's plan, are made once per file).
LINT_TESTS := tests/unit/test_typecheck.py tests/unit/test_ansible_lint.py tests/unit/test_lint.py \
              tests/unit/test_workflows.py
PYTEST     := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest

check: venv  ## the fast tier: lint, types, schema, plan, templates, facts and operations as data
	@$(MAKE) --no-print-directory -j2 --output-sync=target check-lint check-rest

check-lint:
	$(PYTEST) -q -m check $(LINT_TESTS)

check-rest:
	$(PYTEST) -q -m check -n 2 --dist loadfile --durations=15 $(addprefix --ignore=,$(LINT_TESTS)) tests

# The whole suite in two pytest processes side by side: the fleet tier (tests/e2e, one sandbox fleet, its tests
# one after another; its output as it runs) and the unit tier (tests/unit, check + slow; its output when both
# have ended). The fleet tier mostly waits on its hosts, so the unit tier runs in the time it leaves. Each part
# prints its 30 slowest tests and its summary line; the target fails if either part does, and a failed part's
# summary line is printed again last, so the closing line is a failing part's (docs/testing.md).
test: SHELL := /bin/bash
test: setup venv  ## the whole test suite (unit, mock engine, type check, sandbox fleet)
	@set -o pipefail; unit_log=$$(mktemp); fleet_log=$$(mktemp); \
	$(PYTEST) -m "not fleet" --durations=30 tests > "$$unit_log" 2>&1 & unit_pid=$$!; \
	trap 'kill $$unit_pid 2>/dev/null; rm -f "$$unit_log" "$$fleet_log"' EXIT; \
	$(PYTEST) -m fleet --durations=30 tests 2>&1 | tee "$$fleet_log"; fleet=$$?; \
	wait $$unit_pid; unit=$$?; \
	echo; echo "make test: the unit tier (tests/unit), run beside the fleet tier:"; cat "$$unit_log"; \
	if [ $$fleet -ne 0 ]; then echo "make test: the fleet tier failed (exit $$fleet):"; tail -n 1 "$$fleet_log"; fi; \
	if [ $$unit -ne 0 ]; then echo "make test: the unit tier failed (exit $$unit):"; tail -n 1 "$$unit_log"; fi; \
	[ $$unit -eq 0 ] && [ $$fleet -eq 0 ]

bench: venv  ## print the benchmark tables (the sandbox one needs root)
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/site.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/rollout.py
	$(BIN)/python bench/exporters.py
	$(BIN)/python bench/status_sources.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache

# --- the sandbox fleet (stacks/Pulumi.local.yaml): needs root; see docs/sandbox.md -----------------
.PHONY: demo demo-down

# Each step of the demo says when it starts and how long it took (a log of `make demo` shows where the time went).
# The fleet's status is asked over SSH: each host's report run now, right after the deploy, when the site's
# Prometheus (just started) may not hold every host's first samples yet.
define demo_step
@echo "demo: $(1) ..."; start=$$(date +%s); $(2) && echo "demo: $(1) took $$(( $$(date +%s) - start )) s"
endef

demo: setup venv  ## boot the sandbox fleet, converge it with pyinfra as a real fleet, one inference per host, the fleet's status, the site's dashboards
	$(call demo_step,sandbox up,$(BIN)/cnctl sandbox up --stack local)
	$(call demo_step,deploy,PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pyinfra -y hosts/fleet.py deploy.py)
	$(call demo_step,one inference per host,$(BIN)/cnctl infer --stack local)
	$(call demo_step,fleet status,$(BIN)/cnctl status --stack local --source ssh)
	$(call demo_step,the site's dashboards and alerts,$(BIN)/cnctl monitoring urls --stack local)

demo-down: venv  ## stop the sandbox fleet and remove everything it made (idempotent)
	$(BIN)/cnctl sandbox down
