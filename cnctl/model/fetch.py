"""Download an archive with a streaming sha256, staged so that a cut or corrupt download changes nothing."""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20
TIMEOUT_S = 60
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full filesystem or quota: the disk's failure, not the download's


class FetchError(Exception):
    """The archive could not be fetched or did not match its pin. The message says which and why."""


class _NoSpace(Exception):
    """Writing the archive filled the disk after `written` bytes of `total` (None: the server did not say)."""

    def __init__(self, written: int, total: int | None) -> None:
        super().__init__(written, total)
        self.written, self.total = written, total


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int


Progress = Callable[[int, int | None], None]


def fetch(url: str, dest: Path, *, expected_sha256: str | None = None, progress: Progress | None = None) -> Fetched:
    """Ensure `dest` holds the archive at `url` (and matches `expected_sha256` when given).

    The body is streamed into a temporary file beside `dest` while it is hashed; only a complete,
    verified download is renamed onto `dest`. A short body, a bad checksum or an HTTP error leave
    `dest` exactly as it was.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _stream(url, out, progress)
        if expected_sha256 is not None and digest != expected_sha256:
            raise FetchError(f"{url}: sha256 is {digest}, the stack pins {expected_sha256}; nothing was replaced")
        os.replace(staging, dest)
    except _NoSpace as full:
        Path(staging).unlink(missing_ok=True)
        raise FetchError(no_space(url, dest.parent, full)) from None
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return Fetched(dest, digest, size)


def no_space(url: str, directory: Path, full: _NoSpace) -> str:
    """The directory, the archive's size and the space free there (the partial download removed)."""
    needed = _mib(full.total) if full.total is not None else f"more than {_mib(full.written)}"
    free = _mib(shutil.disk_usage(directory).free)
    return (f"{url}: no space left on device in {directory}: the archive needs {needed}, {free} free there; "
            "free space on that filesystem and try again")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _stream(url: str, out: BinaryIO, progress: Progress | None) -> tuple[str, int]:
    if url.startswith("gs://"):
        return _stream_gcs(url, out, progress)
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # http(s)/file URLs from the stack
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)})") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length else None
        digest, size = _copy(url, response, out, total, progress)
    if total is not None and size != total:
        raise FetchError(f"{url}: download cut: got {size} of {total} bytes")
    return digest, size


def _stream_gcs(url: str, out: BinaryIO, progress: Progress | None) -> tuple[str, int]:
    try:
        from google.cloud import storage
    except ImportError:
        raise FetchError(f"{url}: gs:// URLs need google-cloud-storage (pip install google-cloud-storage)") from None
    bucket, _, name = url.removeprefix("gs://").partition("/")
    with storage.Client().bucket(bucket).blob(name).open("rb") as blob:
        return _copy(url, blob, out, None, progress)


def _copy(url: str, source: Any, out: BinaryIO, total: int | None, progress: Progress | None) -> tuple[str, int]:
    """Copy `source` into `out` chunk by chunk, hashing as it goes; a broken connection is a cut download."""
    digest = hashlib.sha256()
    size = 0
    while True:
        try:
            chunk = source.read(CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{url}: download cut after {size} bytes ({exc})") from None
        if not chunk:
            return digest.hexdigest(), size
        digest.update(chunk)
        try:
            out.write(chunk)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise _NoSpace(size, total) from None
            raise
        size += len(chunk)
        if progress:
            progress(size, total)
