"""The repository is lint-clean: ruff (pyproject.toml [tool.ruff]) over every Python file, yamllint (.yamllint)
over every YAML file. Both run in `make check` and `make test`; a finding fails with the tool's own file:line report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cnctl.paths import REPO_ROOT

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "ruff"), "check", "--no-cache", "--output-format", "concise", "."],
        [str(BIN / "yamllint"), "--strict", "-f", "parsable", "."],
    ],
    ids=["ruff", "yamllint"],
)
def test_no_lint_finding(command: list[str]) -> None:
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{Path(command[0]).name} found:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(("length", "ok"), [(120, True), (121, False)])
def test_yaml_lines_may_be_120_long_like_python(tmp_path: Path, length: int, ok: bool) -> None:
    """.yamllint relaxes yamllint's 80 columns to ruff's 120, no further."""
    key = "key: "
    (tmp_path / "doc.yml").write_text("---\n" + key + "x" * (length - len(key) - 4) + " y z\n")
    result = subprocess.run([str(BIN / "yamllint"), "--strict", "-c", str(REPO_ROOT / ".yamllint"), str(tmp_path / "doc.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode == 0) is ok, result.stdout


def _imports(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layers_point_one_way_nothing_below_the_cli_imports_it() -> None:
    """Errors and exit codes live in cnctl/errors.py so that engines, sandbox, inventory, deploys never need
    cnctl.cli (DESIGN: cli -> engines/cloud/plan/sandbox/model -> config/catalog)."""
    below = [p for p in (REPO_ROOT / "cnctl").rglob("*.py") if "cli" not in p.relative_to(REPO_ROOT / "cnctl").parts[:1]]
    below += [*(REPO_ROOT / "deploy").rglob("*.py"), *(REPO_ROOT / "hosts").glob("*.py"), REPO_ROOT / "deploy.py"]
    offenders = sorted(str(p.relative_to(REPO_ROOT)) for p in below
                       if any(name == "cnctl.cli" or name.startswith("cnctl.cli.") for name in _imports(p)))
    assert len(below) > 40 and offenders == []
