"""Where cnctl finds its tree and a user's stacks (cnctl/paths.py): a checkout's behaviour, and the Pulumi-like
lookup of a stack by name (CNCTL_STACKS_DIR alone, else ./stacks, ./, then the checkout's stacks/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnctl.config import StackConfigError, load_stack
from cnctl.paths import INSTALLED, PACKAGE_DIR, REPO_ROOT, STACKS_DIR, STACKS_DIR_ENV, TEMPLATES_DIR, stacks_dirs


def _stack(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"Pulumi.{name}.yaml"
    path.write_bytes((STACKS_DIR / "Pulumi.onprem.yaml").read_bytes())
    return path


def test_a_checkout_is_its_own_tree() -> None:
    assert not INSTALLED and REPO_ROOT == PACKAGE_DIR.parent and (TEMPLATES_DIR / "gce-startup.sh.j2").is_file()
    assert (REPO_ROOT / "deploy.py").is_file() and STACKS_DIR == REPO_ROOT / "stacks"


def test_stacks_are_looked_for_in_the_working_directory_then_the_checkout(tmp_path: Path) -> None:
    assert stacks_dirs({}, tmp_path) == (tmp_path / "stacks", tmp_path, STACKS_DIR)
    assert stacks_dirs({}, REPO_ROOT) == (REPO_ROOT / "stacks", REPO_ROOT)  # the checkout's stacks once
    assert stacks_dirs({STACKS_DIR_ENV: str(tmp_path / "mine")}, REPO_ROOT) == (tmp_path / "mine",)


def test_a_users_stack_is_found_by_name_where_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STACKS_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    _stack(tmp_path, "plant")
    assert load_stack("plant").environment == "plant"
    assert load_stack("prod").environment == "prod"  # not here: the checkout's, as before
    _stack(tmp_path / "stacks", "prod").write_text("config: {}\n")  # ./stacks wins over the checkout's
    with pytest.raises(StackConfigError):
        load_stack("prod")


def test_a_missing_stack_names_every_place_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STACKS_DIR_ENV, str(tmp_path))
    _stack(tmp_path, "plant")
    with pytest.raises(StackConfigError) as raised:
        load_stack("prod")
    assert (f"has no file Pulumi.prod.yaml in {tmp_path}; known stacks there: plant; run where your stacks are, "
            f"set {STACKS_DIR_ENV}=<dir>, or give --stack PATH") in str(raised.value)


def test_the_engine_is_told_where_a_stack_named_by_name_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnctl.engines.target import for_stack

    monkeypatch.delenv(STACKS_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    _stack(tmp_path, "plant")
    target = for_stack(load_stack("plant"), stack="plant")  # pyinfra runs in cnctl's tree, not here
    assert target.env == {"CNCTL_STACK": "plant", STACKS_DIR_ENV: str(tmp_path.resolve())}
