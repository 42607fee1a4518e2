"""Cached, atomic builds of site content: rebuilt only when the hash of their recipe inputs changes.

A part (the apt repository, the wheelhouse, the model archives) is built into a temporary sibling directory
and swapped into place only when complete, so a crashed or interrupted build never leaves half a repository
behind, and a running artifact server only ever sees a whole one. The recipe digest is stored outside the
served directories, in `<site>/stamps/<part>.sha256`. A file lock serialises builds of one cache between
processes (the fleet's session and this module's tests may share /var/cache/cnctl).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from cnctl.sandbox import system

# Bump when the builders change in a way their hashed sources do not show (e.g. a tool's flags).
BUILDER_VERSION = "1"


def digest(parts: Iterable[str | bytes | Path]) -> str:
    """sha256 over the recipe inputs: strings, bytes, and files (by content; directories recursively)."""
    h = hashlib.sha256(BUILDER_VERSION.encode())
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for f in files:
                if "__pycache__" in f.parts:
                    continue
                h.update(str(f.name).encode() + b"\0" + f.read_bytes() + b"\0")
        else:
            h.update(part.encode() if isinstance(part, str) else part)
            h.update(b"\0")
    return h.hexdigest()


def locked(site_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the site cache's build lock (blocking) for the duration of the block (the sandbox's one lock)."""
    return system.locked(site_dir / ".lock")


def _stamp(site_dir: Path, part: str) -> Path:
    return site_dir / "stamps" / f"{part}.sha256"


def is_current(site_dir: Path, part: str, target: Path, recipe: str) -> bool:
    """True when `target` exists and was built from exactly this recipe."""
    stamp = _stamp(site_dir, part)
    return target.is_dir() and stamp.is_file() and stamp.read_text().strip() == recipe


def is_current_any(site_dir: Path, part: str, target: Path) -> bool:
    """True when `target` exists and was stamped by a completed build (whatever its recipe)."""
    return target.is_dir() and _stamp(site_dir, part).is_file()


def build_part(site_dir: Path, part: str, target: Path, recipe: str, builder: Callable[[Path], None]) -> bool:
    """Ensure `target` holds the output of `builder` for `recipe`; returns True when it had to build.

    `builder` fills the (empty, temporary) directory it is given; on success that directory replaces
    `target` and the recipe is stamped. On failure the old `target`, if any, stays as it was.
    """
    if is_current(site_dir, part, target, recipe):
        return False
    tmp = target.with_name(f".{target.name}.new-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        builder(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    stamp = _stamp(site_dir, part)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(recipe + "\n")
    return True
