"""Pin a stack's model archive: download it once, write its sha256 into the stack file.

Upstream publishes no checksums, so the first download is the moment of trust: the operator
reviews the diff of the stack file like any other change. Comments and layout of the file are kept.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from cnctl.catalog import catalog
from cnctl.config.errors import Problem, StackConfigError
from cnctl.config.schema import StackConfig
from cnctl.model.fetch import Fetched, Progress, fetch

_SECTION = re.compile(r"^(?P<indent>\s*)circularnet:model:\s*$")
_KEY = re.compile(r"^(?P<indent>\s+)(?P<key>[A-Za-z0-9]+):")


def archive_url(cfg: StackConfig) -> str:
    """The URL a stack's archive is fetched from: the stack's mirror, else the catalog's upstream URL."""
    url = cfg.model.url or catalog().models.models[cfg.model.key].url
    if url is None:  # the schema's checks refuse this; kept for type narrowing
        raise StackConfigError("stack", [Problem("model.url", None, "no archive URL")])
    return url


def download(cfg: StackConfig, progress: Progress | None = None) -> Fetched:
    """Fetch the stack's archive into a temporary folder and hash it (the caller deletes the folder; a failed
    fetch leaves none behind)."""
    url = archive_url(cfg)
    folder = Path(tempfile.mkdtemp(prefix="cnctl-pin-"))
    try:
        return fetch(url, folder / url.rsplit("/", 1)[-1], progress=progress)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def write_pin(stack_file: Path, sha256: str) -> bool:
    """Ensure `circularnet:model.sha256` in `stack_file` is `sha256`; True when the file changed."""
    lines = stack_file.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _SECTION.match(line)), None)
    if start is None:
        raise StackConfigError(str(stack_file), [Problem("circularnet:model", None, "section not found in the file")])
    section_indent = len(_SECTION.match(lines[start]).group("indent"))  # type: ignore[union-attr]
    key_indent = None
    end = len(lines)
    for i in range(start + 1, len(lines)):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        if indent <= section_indent:
            end = i
            break
        match = _KEY.match(lines[i])
        if match and key_indent is None:
            key_indent = len(match.group("indent"))
        if match and match.group("key") == "sha256" and len(match.group("indent")) == key_indent:
            new = f'{match.group("indent")}sha256: "{sha256}"\n'
            if lines[i] == new:
                return False
            lines[i] = new
            stack_file.write_text("".join(lines), encoding="utf-8")
            return True
    pad = " " * (key_indent if key_indent is not None else section_indent + 2)
    insert_at = end
    while insert_at > start + 1 and not lines[insert_at - 1].strip():
        insert_at -= 1
    lines.insert(insert_at, f'{pad}sha256: "{sha256}"\n')
    stack_file.write_text("".join(lines), encoding="utf-8")
    return True
