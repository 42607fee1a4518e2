"""`cnctl model pin` and the staged fetch it rests on, against a real HTTP server on loopback."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from typer.testing import CliRunner

from cnctl.cli.model import app
from cnctl.config import load_stack
from cnctl.model import fetch as fetch_module
from cnctl.model.fetch import FetchError, fetch
from cnctl.paths import STACKS_DIR
from tests.unit.http_server import http_server

ARCHIVE = b"PK\x03\x04 stand-in archive " * 4096


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ARCHIVE at /model.zip; /cut.zip promises the full length and stops halfway."""

    def do_GET(self) -> None:  # http.server's naming
        if self.path not in ("/model.zip", "/cut.zip"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(ARCHIVE)))
        self.end_headers()
        body = ARCHIVE if self.path == "/model.zip" else ARCHIVE[: len(ARCHIVE) // 2]
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with http_server(_Handler) as base:
        yield base


def _stack_with_url(tmp_path: Path, url: str) -> Path:
    text = (STACKS_DIR / "Pulumi.dev.yaml").read_text()
    text = text.replace("    version: 1\n", f"    version: 1\n    url: {url}\n", 1)
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(text)
    return path


def test_pin_writes_the_archive_sha256_and_keeps_comments(tmp_path: Path, server: str) -> None:
    stack = _stack_with_url(tmp_path, f"{server}/model.zip")
    before = stack.read_text()
    result = CliRunner().invoke(app, ["pin", "--stack", str(stack)])
    assert result.exit_code == 0, result.output
    expected = hashlib.sha256(ARCHIVE).hexdigest()
    assert load_stack(str(stack)).model.sha256 == expected
    after = stack.read_text()
    assert [l for l in before.splitlines() if l.lstrip().startswith("#")] == [
        l for l in after.splitlines() if l.lstrip().startswith("#")
    ]
    assert len(after.splitlines()) == len(before.splitlines()), "only the sha256 line changed"
    again = CliRunner().invoke(app, ["pin", "--stack", str(stack)])
    assert again.exit_code == 0 and "already pinned" in again.output


def test_pin_adds_the_key_when_the_stack_has_none(tmp_path: Path, server: str) -> None:
    stack = _stack_with_url(tmp_path, f"{server}/model.zip")
    stack.write_text("".join(l for l in stack.read_text().splitlines(keepends=True) if "sha256:" not in l))
    result = CliRunner().invoke(app, ["pin", "--stack", str(stack)])
    assert result.exit_code == 0, result.output
    assert load_stack(str(stack)).model.sha256 == hashlib.sha256(ARCHIVE).hexdigest()


def test_pin_dry_run_changes_nothing(tmp_path: Path, server: str) -> None:
    stack = _stack_with_url(tmp_path, f"{server}/model.zip")
    before = stack.read_text()
    result = CliRunner().invoke(app, ["pin", "--stack", str(stack), "--dry-run"])
    assert result.exit_code == 0
    assert hashlib.sha256(ARCHIVE).hexdigest() in result.output
    assert stack.read_text() == before


@pytest.mark.parametrize(("path", "phrase"), [("/cut.zip", "download cut"), ("/missing.zip", "HTTP 404")])
def test_pin_failure_exits_2_and_leaves_the_stack_alone(tmp_path: Path, server: str, path: str, phrase: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    stack = _stack_with_url(tmp_path, f"{server}{path}")
    before = stack.read_text()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = CliRunner().invoke(app, ["pin", "--stack", str(stack)])
    assert result.exit_code == 2
    assert phrase in result.output and "Traceback" not in result.output
    assert stack.read_text() == before
    assert list(scratch.iterdir()) == [], "no download folder left behind"


def test_fetch_keeps_the_old_file_on_a_bad_checksum_or_a_cut(tmp_path: Path, server: str) -> None:
    dest = tmp_path / "model.zip"
    dest.write_bytes(b"the archive that serves today")
    with pytest.raises(FetchError, match="nothing was replaced"):
        fetch(f"{server}/model.zip", dest, expected_sha256="0" * 64)
    with pytest.raises(FetchError, match="cut"):
        fetch(f"{server}/cut.zip", dest)
    assert dest.read_bytes() == b"the archive that serves today"
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"], "no staging file left behind"
    good = fetch(f"{server}/model.zip", dest, expected_sha256=hashlib.sha256(ARCHIVE).hexdigest())
    assert dest.read_bytes() == ARCHIVE and good.size == len(ARCHIVE)


def test_a_full_disk_names_the_directory_and_the_space_needed_and_free(tmp_path: Path, server: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fills the disk is not a cut download: the message names where, how much is needed and free."""
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, real: Any) -> None:
            self.real = real

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self) -> Self:
            return self

        def __exit__(self, *exc: object) -> None:
            self.real.close()

    def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, mode, *args, **kwargs)
        return Full(handle) if mode == "wb" else handle

    monkeypatch.setattr(fetch_module.os, "fdopen", fdopen)
    dest = tmp_path / "model.zip"
    with pytest.raises(FetchError) as info:
        fetch(f"{server}/model.zip", dest)
    message = str(info.value)
    assert message.startswith(f"{server}/model.zip: no space left on device in {tmp_path}: the archive needs "
                              f"{len(ARCHIVE) / (1 << 20):.1f} MiB, ")
    assert message.endswith(" MiB free there; free space on that filesystem and try again") and "cut" not in message
    assert list(tmp_path.iterdir()) == [], "no staging file left behind"
