"""The two test tiers (docs/testing.md): every collected test gets exactly one of three markers.

- `fleet`: every test under tests/e2e (the sandbox fleet: root, systemd-nspawn, debootstrap).
- `slow`: a unit test that stands on something the fast tier does not assume or that takes long: it uses a
  fixture of SLOW_FIXTURES (the site content built as root into $CNCTL_CACHE, the storage emulators, real
  Triton), or SLOW lists it (measured with `pytest --durations=0`; the reason beside each entry).
- `check`: every other test. `make check` runs `pytest -m check` (no root, no sandbox, a few minutes);
  `make test` runs them all.

A new test is in `check` unless it is under tests/e2e or uses a slow fixture: if it is slow, add it to SLOW with
its reason. An entry of SLOW that names no test (renamed, removed) stops the run instead of silently matching
nothing.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# fixture -> why a test that uses it (directly or through another fixture) is slow
SLOW_FIXTURES = {
    "site_content": "the site content (apt repository, model archives, wheelhouse) built as root into $CNCTL_CACHE",
    "endpoints": "the GCS emulator and moto (S3) as processes (tests/unit/test_uploader.py)",
    "pubsub": "Google's Pub/Sub emulator (a JVM)",
    "gcs": "the GCS emulator as a process (tests/unit/test_bucket_worker.py)",
}

ROLE_RUNS = "an ansible-playbook run of the role per bad input"
# "tests/unit/<module>.py" (all of it) or "tests/unit/<module>.py::<test>" (all its cases) -> why it is slow
SLOW = {
    "tests/unit/test_model_layer.py::test_the_role_converges_then_changes_nothing_and_refuses_a_wrong_sha256":
        "root (the role makes root-owned files); ansible-playbook converges the role twice",
    "tests/unit/test_client_wheels.py::test_client_and_uploader_pins_together_are_closed":
        "reads every pinned wheel's METADATA off PyPI (network), kept in $CNCTL_CACHE",
    "tests/unit/test_client_wheels.py::test_source_packages_are_still_wanted_and_still_without_a_usable_wheel":
        "asks PyPI (network)",
    "tests/unit/test_client_wheels.py::test_trackpy_sdist_builds_offline_from_the_sets_pinned_setuptools_and_wheel":
        "fetches from PyPI into $CNCTL_CACHE; pip builds the sdist in a fresh venv",
    "tests/unit/test_cloud_day_two.py::test_plan_with_a_base_flags_and_refuses_like_plan_diff":
        "two `cnctl plan` processes of the prod stack on the mock engine",
    "tests/unit/test_cloud_day_two.py::test_plan_diff_refuses_a_prod_replacement_unless_allowed":
        "a prod plan and `cnctl plan-diff` processes",
    "tests/unit/test_plan_cli.py::test_installed_entry_point": "a `cnctl plan` process on the mock engine",
    "tests/unit/test_wheel_install.py": "`uv build` and `uv tool install` of the wheel, then cnctl processes of it",
    "tests/unit/test_cli_cloud.py": "`cnctl up/preview` processes that plan on the mock engine before the fake Pulumi",
    "tests/unit/test_client_adapter.py::test_upstream_client_rows_reach_the_queue_as_the_tables_columns_and_types":
        "an upstream-shaped client as a process (pandas, numpy)",
    "tests/unit/test_client_adapter.py::test_a_batch_without_objects_is_done_with_no_rows":
        "an upstream-shaped client as a process (pandas, numpy)",
    "tests/unit/test_client_adapter.py::test_a_client_that_did_not_write_every_row_fails_the_batch_and_it_is_retried":
        "upstream-shaped clients as processes (pandas, numpy)",
    # ansible-playbook runs, one per bad input (the specs themselves are checked in the fast tier:
    # test_ansible_lint.py's every-default-is-declared tests)
    "tests/unit/test_layers_roles.py::test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it": ROLE_RUNS,
    "tests/unit/test_pipeline_layer.py::test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it": ROLE_RUNS,
    "tests/unit/test_pull_layer.py::test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it": ROLE_RUNS,
    "tests/unit/test_verify_layer.py::test_a_bad_role_variable_is_stopped_by_argument_specs_naming_it": ROLE_RUNS,
}


def tier(item: pytest.Item) -> str:
    """fleet, slow or check: the one tier of a collected test."""
    path = Path(str(item.path)).resolve()
    if path.is_relative_to(TESTS / "e2e"):
        return "fleet"
    if SLOW_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
        return "slow"
    module = path.relative_to(REPO).as_posix()
    names = [part.split("[")[0] for part in item.nodeid.split("::")[1:]]  # [class,] function, without parameters
    return "slow" if module in SLOW or any(f"{module}::{name}" in SLOW for name in names) else "check"


@cache
def _names_in(module: Path) -> frozenset[str]:
    tree = ast.parse(module.read_text(), str(module))
    kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    return frozenset(node.name for node in tree.body if isinstance(node, kinds))


def stale_entries() -> list[str]:
    """Entries of SLOW that name no test (function or class) of an existing module."""
    stale = []
    for entry in SLOW:
        module, _, name = entry.partition("::")
        path = REPO / module
        if not path.is_file() or (name and name not in _names_in(path)):
            stale.append(entry)
    return stale


def pytest_configure(config: pytest.Config) -> None:
    stale = stale_entries()
    if stale:
        raise pytest.UsageError(f"tests/conftest.py SLOW names no test for {', '.join(stale)}: rename or remove")


@pytest.hookimpl(tryfirst=True)  # before -m selects by them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier(item))
