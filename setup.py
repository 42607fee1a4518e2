"""The wheel's one step setuptools cannot declare: the tree the CLI runs (pyproject.toml's [tool.cnctl.wheel] tree)
copied into the package as cnctl/_tree/, keeping its place, so an installed cnctl finds deploy.py, hosts/,
templates/ and roles/ where a checkout keeps them (cnctl/paths.py). An editable install copies nothing: the
checkout is its own tree.

setuptools' package data holds only files inside a package directory; these live beside it, at the places both
engines, the bundles and the roles expect them, so the build copies them rather than the repository moving them.
"""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
TREE_DIR = "_tree"  # cnctl/paths.py's name for it
SKIPPED_PARTS = ("__pycache__",)
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def tree_patterns() -> tuple[list[str], list[str]]:
    """The globs of [tool.cnctl.wheel] tree and tree-exclude, relative to the checkout."""
    config = tomllib.loads((HERE / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["cnctl"]["wheel"]
    return list(config["tree"]), list(config.get("tree-exclude", []))


def tree_files(root: Path, patterns: list[str], excluded: list[str]) -> list[Path]:
    """Every regular file the patterns name under `root` and no exclusion does (relative, sorted), caches left out."""
    found = {path.relative_to(root) for pattern in patterns for path in root.glob(pattern) if path.is_file()}
    return sorted(p for p in found if not set(p.parts) & set(SKIPPED_PARTS) and p.suffix not in SKIPPED_SUFFIXES
                  and not any(fnmatch.fnmatch(p.as_posix(), pattern) for pattern in excluded))


class BuildWithTree(build_py):
    """build_py, then the tree into <build>/cnctl/_tree (not for an editable install: the checkout is the tree)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "cnctl" / TREE_DIR
        for relative in tree_files(HERE, *tree_patterns()):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / relative, target / relative)


setup(cmdclass={"build_py": BuildWithTree})
