"""mypy over every Python file of the repository: the packages (cnctl, deploy, hosts, tools, bench, tests), the
Pulumi and policy programs, the Ansible filter plugins, and the pyinfra entry point deploy.py.

pyproject.toml's [tool.mypy] `files` is the one list (`mypy` with no arguments checks it; `make typecheck` runs
these tests). The cloud layer is checked against pulumi-gcp's typed `*Args` classes: a
misspelt or mistyped resource argument (`enable_vtpmm=`, `size="300"`) fails here instead of in `pulumi up`.
pulumi-gcp is large: pyproject.toml lets mypy follow only the modules the cloud layer uses (cold run ~30 s of
CPU, warm a few seconds with the cache in .mypy_cache).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from cnctl.paths import REPO_ROOT

ROOT = REPO_ROOT
# deploy.py's module name is `deploy`, the package's: mypy checks a copy of it under another name
ENTRY = ROOT / "deploy.py"
# directories of the repository that hold no source of its own (.gitignore'd, or tools' caches)
NOT_SOURCE = {"build", "artifacts", "site"}


def _mypy(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "mypy", *args], check=False, cwd=ROOT, capture_output=True,
                            text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Success: no issues found" in result.stdout, output
    return output


def test_every_package_and_script_typechecks() -> None:
    _mypy()


def test_the_pyinfra_entry_point_typechecks(tmp_path: Path) -> None:
    """deploy.py under another module name (its own is the deploy package's); `deploy` still imports from here."""
    copy = tmp_path / "pyinfra_entry_point.py"
    copy.write_text(ENTRY.read_text())
    _mypy(str(copy))


def _configured() -> set[Path]:
    files: set[Path] = set()
    for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]:
        for path in ROOT.glob(pattern):
            files.update(path.rglob("*.py") if path.is_dir() else [path])
    return files


def _sources() -> set[Path]:
    return {path for path in ROOT.rglob("*.py")
            if not any(part.startswith(".") or part in NOT_SOURCE for part in path.relative_to(ROOT).parts)}


def test_mypy_is_given_every_python_file_of_the_repository() -> None:
    """A new package or script is type-checked once it is in [tool.mypy] `files`: this names any that is not."""
    unchecked = sorted(str(p.relative_to(ROOT)) for p in _sources() - _configured() - {ENTRY})
    assert unchecked == [], "add them to [tool.mypy] files in pyproject.toml"
    assert len(_configured()) > 200
