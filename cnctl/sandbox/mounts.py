"""Reading the machine's mount table, and unmounting and removing directory trees safely."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    target: Path
    fstype: str
    options: str  # the superblock options (overlay: lowerdir=..., upperdir=...)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...)
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts() -> list[Mount]:
    """Every mount in this mount namespace, in mount order."""
    found: list[Mount] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 3:
                continue
            found.append(Mount(Path(_unescape(fields[4])), rest[0], rest[2]))
    return found


def mounts_under(root: Path) -> list[Mount]:
    """Mounts at or below `root`, deepest first (the order to unmount them)."""
    root_s = str(root).rstrip("/")
    inside = [m for m in mounts() if str(m.target) == root_s or str(m.target).startswith(root_s + "/")]
    return sorted(inside, key=lambda m: len(m.target.parts), reverse=True)


def unmount_under(root: Path) -> list[Path]:
    """Ensure nothing is mounted at or below `root`; return what was unmounted.

    A busy mount (a process of ours still holds it) is detached lazily so that the next step can go on;
    the leftover scan has already killed every process we own by then.
    """
    done: list[Path] = []
    for _ in range(3):  # stacked mounts on one target need one pass each; bounded
        pending = mounts_under(root)
        if not pending:
            break
        for mount in pending:
            rc = subprocess.run(["umount", str(mount.target)], capture_output=True, check=False).returncode
            if rc != 0:
                subprocess.run(["umount", "--lazy", str(mount.target)], capture_output=True, check=False)
            done.append(mount.target)
    return done


def remove_tree(path: Path) -> None:
    """Ensure `path` is gone, never following a mount point out of it (`rm --one-file-system`)."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_under(path)
    if mounts_under(path):
        raise RuntimeError(f"{path} still has mounts; not removing it")
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True, capture_output=True)


def lower_dirs() -> set[str]:
    """The overlay lower directories in use on the machine (an image that is in use is not pruned)."""
    used: set[str] = set()
    for mount in mounts():
        if mount.fstype != "overlay":
            continue
        for option in mount.options.split(","):
            if option.startswith("lowerdir="):
                used.update(os.path.normpath(p) for p in option[len("lowerdir="):].split(":"))
    return used
