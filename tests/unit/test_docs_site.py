"""The documentation site (mkdocs.yml) builds with --strict: every link and anchor resolves, every page is in the nav.

The README is its home page and its links, written for the repository, reach the site's pages
(tools/docs_site.py); a broken link fails the build, which this file proves on a copy of the site.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SITE_SOURCES = ("mkdocs.yml", "README.md", "CHANGELOG.md", "bench/README.md", "tools/docs_site.py", "docs")


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of one configuration into `site`."""
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def copy_of_the_site_sources(into: Path) -> Path:
    """The files the site is built from, copied at their places under `into`."""
    for name in SITE_SOURCES:
        source, target = ROOT / name, into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return into


def test_the_site_builds_strictly_with_the_readme_as_its_home(tmp_path: Path) -> None:
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "Two commands on a fresh machine" in home and "make test" in home
    assert 'href="stack/"' in home  # the README's docs/stack.md, pointed at the site's page
    for page in [*(ROOT / "docs").glob("*.md"), Path("bench.md"), Path("changelog.md")]:
        assert (tmp_path / "site" / page.stem / "index.html").is_file(), f"{page.name} was not built"


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    sources = copy_of_the_site_sources(tmp_path / "repo")
    page = sources / "docs" / "stack.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [the old page](environments.md).\n", encoding="utf-8")
    result = build(sources / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "'environments.md'" in result.stderr and "stack.md" in result.stderr


def test_a_page_left_out_of_the_nav_fails_the_build(tmp_path: Path) -> None:
    sources = copy_of_the_site_sources(tmp_path / "repo")
    (sources / "docs" / "orphan.md").write_text("# A page no menu leads to\n", encoding="utf-8")
    result = build(sources / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "orphan.md" in result.stderr
