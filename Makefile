# The two commands a fresh machine needs are `make demo` (the main job on the local sandbox stack)
# and `make test`. Everything else here is what they are made of.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STACK   ?= dev
# Built artifacts (sandbox image, stand-in packages, wheelhouse) live outside the repo.
export CNCTL_CACHE ?= /var/cache/cnctl

.PHONY: setup venv plan test typecheck bench clean

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

typecheck: venv
	$(BIN)/mypy cnctl

test: setup venv  ## the whole test suite (unit, mock engine, type check, sandbox fleet)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest --durations=30 tests

bench: venv  ## print the benchmark tables (the sandbox one needs root)
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/site.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/rollout.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache

# --- the sandbox fleet (stacks/Pulumi.local.yaml): needs root; see docs/sandbox.md -----------------
.PHONY: demo demo-down

demo: setup venv  ## boot the sandbox fleet, converge it with pyinfra as a real fleet, one inference per host, the fleet's status
	$(BIN)/cnctl sandbox up --stack local
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pyinfra -y hosts/fleet.py deploy.py
	$(BIN)/cnctl infer --stack local
	$(BIN)/cnctl status --stack local

demo-down: venv  ## stop the sandbox fleet and remove everything it made (idempotent)
	$(BIN)/cnctl sandbox down
