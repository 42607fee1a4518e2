"""`cnctl --version`: the version a user has, from the installed package or, in a checkout never installed,
from pyproject.toml (the one place the version is written)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnctl import paths
from cnctl.cli import main
from cnctl.paths import REPO_ROOT

CNCTL = Path(sys.executable).parent / "cnctl"
DECLARED = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def test_the_installed_command_prints_the_declared_version() -> None:
    result = subprocess.run([str(CNCTL), "--version"], capture_output=True, text=True, check=False, cwd="/")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"cnctl {DECLARED}\n", "")


def test_the_version_comes_before_any_command(tmp_path: Path) -> None:
    """--version is answered alone: the command after it does not run (its stack does not even exist)."""
    result = CliRunner().invoke(main.app, ["--version", "plan", "--stack", str(tmp_path / "absent.yaml")])
    assert (result.exit_code, result.output) == (0, f"cnctl {DECLARED}\n")


def test_an_installed_cnctl_prints_its_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "INSTALLED", True)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.8.7" if name == "cnctl" else "")
    assert CliRunner().invoke(main.app, ["--version"]).output == "cnctl 9.8.7\n"


def test_a_checkout_prints_its_pyproject_s_whatever_an_editable_install_recorded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "INSTALLED", False)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1")  # installed before a version bump
    result = CliRunner().invoke(main.app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"cnctl {DECLARED}\n")
