"""Running the machine's tools: one place that turns a failed command into a message worth reading."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from cnctl.sandbox.errors import SandboxFailure


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd`, capture its output; raise SandboxFailure naming the command and its stderr on failure."""
    try:
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,  # the exit status is judged below, with the command's own words
        )
    except subprocess.TimeoutExpired:
        raise SandboxFailure(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise SandboxFailure(f"`{cmd[0]}` is not installed") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SandboxFailure(f"`{' '.join(cmd)}` failed (exit {result.returncode}): {' / '.join(detail)}")
    return result


def in_netns(netns: str, cmd: Sequence[str]) -> list[str]:
    """`cmd` run inside a named network namespace."""
    return ["ip", "netns", "exec", netns, *cmd]


def write_file(path: os.PathLike[str] | str, content: str | bytes, mode: int = 0o644) -> None:
    """Ensure `path` holds `content` with `mode`, written beside it and renamed (never half a file)."""
    target = os.fspath(path)
    staging = f"{target}.tmp-{os.getpid()}"
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(staging, mode)  # the umask may have narrowed it
        os.replace(staging, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise


@contextlib.contextmanager
def locked(path: Path, *, directory: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the duration of the block.

    With `directory=True` the lock is on a directory (created if missing), which leaves no lock file
    behind; otherwise on a file (created if missing).
    """
    if directory:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
