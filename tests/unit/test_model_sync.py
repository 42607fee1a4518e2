"""The model layer's host script (cnhost/model_sync.py), against the site's artifact server on 127.0.0.1:
a fresh install, a no-op that sends no request, resume after a cut, a wrong sha256 and HTTP 500 that leave
the installed version and its config untouched, archives without a config, keep-N, and bad arguments."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self

import pytest

from cnctl.sandbox.site.artifacts import ArtifactServer
from cnhost import model_sync

SCRIPT = Path(model_sync.__file__)


def _zip(members: dict[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data or b"")
    return buf.getvalue()


def triton_archive(revision: int) -> bytes:
    """Upstream Triton layout, like the sandbox stand-in: <model>/config.pbtxt and <model>/1/model.py."""
    return _zip({"circularnet/": None, "circularnet/config.pbtxt": f'name: "circularnet"\n# rev {revision}\n'.encode(),
                 "circularnet/1/": None, "circularnet/1/model.py": f"REVISION = {revision}\n".encode() + os.urandom(300_000)})


class Site:
    """Archives served under /artifacts/ by the sandbox's artifact server, with its faults and request log."""

    def __init__(self, root: Path, server: ArtifactServer, log: Path) -> None:
        self.root, self.server, self.log = root, server, log
        self.base = f"http://127.0.0.1:{server.server_address[1]}/artifacts/"

    def publish(self, name: str, data: bytes) -> tuple[str, str]:
        (self.root / name).write_bytes(data)
        return self.base + name, hashlib.sha256(data).hexdigest()

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def logged(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The request log once it has `count` lines (or `timeout` later): the server logs a request when its
        handler ends, which for a download the client gave up on is after the client returned."""
        deadline = time.monotonic() + timeout
        while len(self.requests()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.requests()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "artifacts"
    root.mkdir()
    log = tmp_path / "requests.log"
    server = ArtifactServer(("127.0.0.1", 0), {"/artifacts/": root}, log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Site(root, server, log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host's directories: the repository, staging and the engine-rendered default config."""
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "config.pbtxt").write_text('name: "circularnet"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n')
    return root


def run(host: Path, mode: str, url: str, sha256: str, version: int = 1, **extra: Any) -> tuple[int, dict[str, Any]]:
    argv = [mode, "--url", url, "--sha256", sha256, "--name", "circularnet", "--version", str(version),
            "--repository", str(host / "models"), "--staging", str(host / "staging"),
            "--default-config", str(host / "etc" / "config.pbtxt"), "--attempts", "2", "--timeout", "10"]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    result = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, check=False, timeout=120)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    return result.returncode, json.loads(lines[0])


def tree(path: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256 or 'dir', mode)} of everything under `path`."""
    out = {}
    for p in sorted(path.rglob("*")):
        digest = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        out[str(p.relative_to(path))] = (digest, p.stat().st_mode & 0o7777)
    return out


def test_a_fresh_host_gets_the_version_its_marker_and_config_and_staging_stays_empty(site: Site, host: Path) -> None:
    url, sha = site.publish("m1.zip", triton_archive(1))
    assert run(host, "check", url, sha) == (3, {"result": "pending", "changed": False, "reason": "pending",
                                                "message": "download and install circularnet version 1"})
    assert site.requests() == []  # check contacts nothing
    code, out = run(host, "sync", url, sha)
    assert (code, out["result"], out["changed"]) == (0, "changed", True), out
    model = host / "models" / "circularnet"
    assert (model / "1" / "model.py").read_bytes().startswith(b"REVISION = 1\n")
    # the archive's own config travels with its version; which version serves is model_serve.py's to write
    assert (model / "1" / model_sync.VERSION_CONFIG).read_text() == 'name: "circularnet"\n# rev 1\n'
    assert not (model / "config.pbtxt").exists()
    marker = json.loads((model / "1" / model_sync.MARKER).read_text())
    assert {k: marker[k] for k in ("name", "version", "sha256", "url")} == {"name": "circularnet", "version": 1,
                                                                             "sha256": sha, "url": url}
    modes = {mode for _, mode in tree(model).values()}
    assert modes == {0o755, 0o644}
    assert list((host / "staging").iterdir()) == []
    assert run(host, "check", url, sha)[0] == 0


def test_a_second_run_sends_no_request_at_all_because_the_marker_proves_the_pin(site: Site, host: Path) -> None:
    url, sha = site.publish("m1.zip", triton_archive(1))
    assert run(host, "sync", url, sha)[0] == 0
    before = len(site.requests())
    assert before == 1
    assert run(host, "sync", url, sha) == (0, {"result": "ok", "changed": False, "reason": "ok",
                                               "message": f"circularnet version 1 in place ({sha})"})
    assert len(site.requests()) == before  # not even a HEAD


def test_a_cut_download_resumes_with_a_range_request_in_the_same_run(site: Site, host: Path) -> None:
    data = triton_archive(1)
    url, sha = site.publish("m1.zip", data)
    site.server.faults.add({"kind": "cut", "bytes": 100_000, "times": 1})
    code, out = run(host, "sync", url, sha)
    assert (code, out["changed"]) == (0, True), out
    gets = [(r["status"], r["range"], r["bytes"]) for r in site.requests()]
    assert gets == [(200, None, 100_000), (206, "bytes=100000-", len(data) - 100_000)]
    assert list((host / "staging").iterdir()) == []


def test_a_cut_that_never_makes_progress_fails_then_a_rerun_converges(site: Site, host: Path) -> None:
    url1, sha1 = site.publish("m1.zip", triton_archive(1))
    assert run(host, "sync", url1, sha1)[0] == 0
    before = tree(host / "models")
    url2, sha2 = site.publish("m2.zip", triton_archive(2))
    fault = site.server.faults.add({"kind": "cut", "bytes": 0})
    code, out = run(host, "sync", url2, sha2, version=2)
    assert (code, out["reason"]) == (model_sync.EXIT["download"], "download")
    assert "download cut" in out["message"] and "2 attempts in a row made no progress" in out["message"]
    assert tree(host / "models") == before and list((host / "staging").iterdir()) == []
    site.server.faults.clear(fault.id)
    assert run(host, "sync", url2, sha2, version=2)[0] == 0
    assert (host / "models" / "circularnet" / "2" / model_sync.VERSION_CONFIG).read_text().endswith("# rev 2\n")


def test_a_wrong_sha256_names_both_and_leaves_the_installed_version_and_config(site: Site, host: Path) -> None:
    url1, sha1 = site.publish("m1.zip", triton_archive(1))
    assert run(host, "sync", url1, sha1)[0] == 0
    before = tree(host / "models")
    url2, actual = site.publish("m2.zip", triton_archive(2))
    pinned = "0" * 64
    code, out = run(host, "sync", url2, pinned, version=2)
    assert (code, out["reason"]) == (model_sync.EXIT["checksum"], "checksum")
    assert f"sha256 is {actual}, the stack pins {pinned}" in out["message"]
    assert tree(host / "models") == before
    assert list((host / "staging").iterdir()) == []


def test_http_500_fails_with_the_status_and_changes_nothing(site: Site, host: Path) -> None:
    url, sha = site.publish("m1.zip", triton_archive(1))
    site.server.faults.add({"kind": "error", "status": 500})
    code, out = run(host, "sync", url, sha)
    assert (code, out["reason"]) == (model_sync.EXIT["download"], "download")
    assert out["message"] == f"{url}: HTTP 500 Internal Server Error"
    assert not (host / "models" / "circularnet" / "1").exists() and list((host / "staging").iterdir()) == []


def test_a_bare_onnx_archive_gets_the_rendered_default_config(site: Site, host: Path) -> None:
    url, sha = site.publish("bare.zip", _zip({"CircularNet_model_v2/": None, "CircularNet_model_v2/model_v2.onnx": b"onnx"}))
    assert run(host, "sync", url, sha, format="onnx")[0] == 0
    model = host / "models" / "circularnet"
    assert (model / "1" / "model.onnx").read_bytes() == b"onnx"
    assert (model / "1" / model_sync.VERSION_CONFIG).read_bytes() == (host / "etc" / "config.pbtxt").read_bytes()


def test_only_the_last_n_installed_versions_remain(site: Site, host: Path) -> None:
    for version in (3, 1, 2):  # install order, not number, decides which are the last
        url, sha = site.publish(f"m{version}.zip", triton_archive(version))
        assert run(host, "sync", url, sha, version=version, keep=2)[0] == 0
    assert sorted(p.name for p in (host / "models" / "circularnet").iterdir()) == ["1", "2"]


def test_the_served_version_and_the_one_served_before_it_are_kept_past_keep(site: Site, host: Path) -> None:
    model = host / "models" / "circularnet"
    for version in (1, 2):
        url, sha = site.publish(f"m{version}.zip", triton_archive(version))
        assert run(host, "sync", url, sha, version=version, keep=2)[0] == 0
    # Triton serves 1 (2 was installed but never switched to), 3 is pinned next: 1 stays, 2 goes
    (model / model_sync.SERVED).write_text(json.dumps({"version": 1, "history": []}))
    url, sha = site.publish("m3.zip", triton_archive(3))
    assert run(host, "sync", url, sha, version=3, keep=2)[0] == 0
    assert sorted(p.name for p in model.iterdir() if p.name.isdigit()) == ["1", "3"]
    # serving 3, served 1 before: with keep=1 both stay all the same (the served one is never surplus)
    (model / model_sync.SERVED).write_text(json.dumps({"version": 1, "history": [3]}))
    url, sha = site.publish("m4.zip", triton_archive(4))
    assert run(host, "sync", url, sha, version=4, keep=1)[0] == 0
    assert sorted(p.name for p in model.iterdir() if p.name.isdigit()) == ["1", "4"]


@pytest.mark.parametrize(("flag", "value", "named"), [
    ("--sha256", "ABC", "--sha256 'ABC' is not 64 lowercase hex digits (pin it: `cnctl model pin`)"),
    ("--url", "gs://bucket/m.zip", "--url 'gs://bucket/m.zip': hosts fetch http(s) only"),
    ("--name", "../etc", "--name '../etc' is not a Triton model name"),
])
def test_bad_arguments_exit_2_naming_the_argument(host: Path, flag: str, value: str, named: str) -> None:
    args = {"--url": "http://127.0.0.1:9/m.zip", "--sha256": "a" * 64, "--name": "circularnet", flag: value}
    argv = ["sync", *(part for pair in args.items() for part in pair), "--version", "1", "--repository",
            str(host / "models"), "--staging", str(host / "staging"), "--default-config", str(host / "etc" / "config.pbtxt")]
    result = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, check=False, timeout=60)
    out = json.loads(result.stdout)
    assert (result.returncode, out["reason"]) == (2, "usage")
    assert named in out["message"] and named in result.stderr
    assert not (host / "models").exists() and not (host / "staging").exists()


def test_a_zip_member_outside_the_archive_is_refused(site: Site, host: Path) -> None:
    url, sha = site.publish("evil.zip", _zip({"../evil/1/x": b"x"}))
    code, out = run(host, "sync", url, sha)
    assert (code, out["reason"]) == (model_sync.EXIT["archive"], "archive")
    assert "points outside the archive" in out["message"]


class FullDisk:
    """A file whose filesystem fills after `room` bytes: a write past it raises ENOSPC, as the kernel does."""

    def __init__(self, real: Any, room: int) -> None:
        self.real, self.room = real, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return int(self.real.write(data))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()


def test_a_full_disk_is_named_with_the_space_needed_and_free_and_not_retried(
        site: Site, host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = triton_archive(1)
    url, sha = site.publish("m1.zip", data)
    real_open = open

    def filling_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle, 100_000) if mode in ("wb", "ab") and Path(path).parent.name == "staging" else handle

    monkeypatch.setattr(model_sync, "open", filling_open, raising=False)
    argv = ["sync", "--url", url, "--sha256", sha, "--name", "circularnet", "--version", "1",
            "--repository", str(host / "models"), "--staging", str(host / "staging"),
            "--default-config", str(host / "etc" / "config.pbtxt"), "--attempts", "5", "--timeout", "10"]
    code = model_sync.main(argv)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["reason"]) == (model_sync.EXIT["disk"], "disk"), out
    needed = model_sync.size_text(len(data))
    assert out["message"].startswith(f"{url}: No space left on device in {host / 'staging'}: the archive needs {needed}, ")
    assert out["message"].endswith(" free there; free space on that filesystem and deploy again")
    assert "download cut" not in out["message"]
    assert len(site.logged(1)) == 1  # not retried: waiting does not free a disk
    assert list((host / "staging").iterdir()) == [] and not (host / "models" / "circularnet" / "1").exists()



def test_a_disk_out_of_inodes_or_quota_says_so_in_the_systems_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A staging filesystem with bytes but no inode left (what the e2e test mounts) is not a lack of bytes, and a
    quota is named as one."""
    real = os.statvfs(tmp_path)
    statvfs = SimpleNamespace(f_frsize=real.f_frsize, f_bavail=real.f_bavail, f_favail=0)
    monkeypatch.setattr(model_sync.os, "statvfs", lambda _: statvfs)
    message = model_sync.disk_full("http://site/m.zip", tmp_path / "m.zip.part", 3000, errno.ENOSPC)
    assert message.startswith(f"http://site/m.zip: No space left on device in {tmp_path}: the archive needs 2.9 KiB, ")
    assert ", no inode free; " in message
    statvfs.f_favail = 1000
    quota = model_sync.disk_full("http://site/m.zip", tmp_path / "m.zip.part", None, errno.EDQUOT)
    assert ": Disk quota exceeded in " in quota and "needs more than was free" in quota and "no inode free" not in quota
