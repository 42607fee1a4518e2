"""MkDocs hooks (mkdocs.yml `hooks:`): the site carries three files that live outside docs/.

README.md is the site's home page, bench/README.md and CHANGELOG.md are pages of it. Every page keeps its
links as they work when the files are read in the repository (on GitHub, in an editor): `docs/stack.md` in
the README, `../bench/README.md` in a docs page. Here each relative link is resolved against the file's place
in the repository and pointed at the page that carries its target. A link to anything else is left as
written, so `mkdocs build --strict` reports it as broken.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
DOCS = "docs"

# repository path -> the site page that carries it
CARRIED = {"README.md": "index.md", "bench/README.md": "bench.md", "CHANGELOG.md": "changelog.md"}

LINK = re.compile(r"(\]\()([^)\s#]*)(#[^)\s]*)?(?=[)\s])")


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    """Add the carried files as pages, read from their place in the repository."""
    for repo_path, page in CARRIED.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / repo_path)))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """The page's relative links, pointed from the repository's layout to the site's."""
    source = repo_path_of(page.file.src_uri)
    return LINK.sub(lambda match: rewritten(match, source, page.file.src_uri), markdown)


def repo_path_of(src_uri: str) -> str:
    """Where the file a site page is made from lives in the repository."""
    carried_by = {page: repo_path for repo_path, page in CARRIED.items()}
    return carried_by.get(src_uri, posixpath.join(DOCS, src_uri))


def site_page_of(repo_path: str) -> str | None:
    """The site page that carries a repository file, or None when the site does not carry it."""
    if repo_path in CARRIED:
        return CARRIED[repo_path]
    if repo_path.startswith(DOCS + "/"):
        return repo_path[len(DOCS) + 1 :]
    return None


def rewritten(match: re.Match[str], source: str, src_uri: str) -> str:
    """One link, rewritten when it is relative and its target is a page of the site."""
    opening, target, anchor = match.group(1), match.group(2), match.group(3) or ""
    if not target or "://" in target or target.startswith(("/", "mailto:")):
        return match.group(0)
    page = site_page_of(posixpath.normpath(posixpath.join(posixpath.dirname(source), target)))
    if page is None:
        return match.group(0)
    return opening + posixpath.relpath(page, posixpath.dirname(src_uri) or ".") + anchor
