"""The site's artifact server: static serving (HEAD, Range, ETag), switchable faults, the wheelhouse index."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest


def get(url: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def control(base: str, method: str, body: dict | None = None, path: str = "/_faults") -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def raw_get(url: str) -> tuple[int, int, bytes]:
    """GET without urllib's length checks: (status, Content-Length, body bytes actually received)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    conn.request("GET", parts.path)
    resp = conn.getresponse()
    length = int(resp.getheader("Content-Length") or -1)
    body = b""
    try:
        while chunk := resp.read1(65536):
            body += chunk
    except http.client.IncompleteRead as exc:
        body += exc.partial
    conn.close()
    return resp.status, length, body


@pytest.fixture
def model(site_content, artifact_server):
    base, _ = artifact_server
    archive = site_content.models[""]
    return base, f"{base}/artifacts/{archive.url_path}", archive.path.read_bytes(), archive.sha256


def test_get_head_etag(model):
    _, url, data, sha = model
    status, headers, body = get(url)
    assert status == 200 and body == data and hashlib.sha256(body).hexdigest() == sha
    assert int(headers["Content-Length"]) == len(data) and headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"] and headers["Last-Modified"].endswith("GMT")
    status, head_headers, body = get(url, method="HEAD")
    assert status == 200 and body == b"" and head_headers["Content-Length"] == str(len(data))
    assert get(url, {"If-None-Match": headers["ETag"]})[0] == 304
    assert get(url.replace(".zip", ".nope"))[0] == 404
    assert get(url.replace("/models/", "/../../"))[0] == 404


def test_range_requests(model):
    _, url, data, _ = model
    status, headers, body = get(url, {"Range": "bytes=10-99"})
    assert status == 206 and body == data[10:100] and headers["Content-Range"] == f"bytes 10-99/{len(data)}"
    status, _, body = get(url, {"Range": "bytes=-16"})
    assert status == 206 and body == data[-16:]
    status, _, body = get(url, {"Range": f"bytes={len(data) - 5}-"})
    assert status == 206 and body == data[-5:]
    status, headers, _ = get(url, {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"


def test_fault_cut_sends_fewer_bytes_than_content_length(model):
    base, url, data, _ = model
    assert control(base, "POST", {"kind": "cut", "bytes": 1000})[0] == 201
    status, length, body = raw_get(url)
    assert status == 200 and length == len(data) and len(body) == 1000 and body == data[:1000]


def test_fault_corrupt_changes_sha256(model):
    base, url, data, sha = model
    control(base, "POST", {"kind": "corrupt", "offset": 100})
    status, _, body = get(url)
    assert status == 200 and len(body) == len(data) and hashlib.sha256(body).hexdigest() != sha
    assert [i for i in range(len(data)) if body[i] != data[i]] == [100]


def test_fault_error_and_clearing_restores(model):
    base, url, data, _ = model
    status, fault = control(base, "POST", {"kind": "error", "status": 503})
    assert status == 201
    assert get(url)[0] == 503 and get(url, method="HEAD")[0] == 503
    assert control(base, "GET")[1]["faults"][0]["id"] == fault["id"]
    assert control(base, "DELETE")[1] == {"faults": []}
    assert get(url)[2] == data


def test_fault_times_prefix_and_validation(model, site_content):
    base, url, _, _ = model
    control(base, "POST", {"kind": "error", "times": 1})
    assert get(url)[0] == 500
    assert get(url)[0] == 200  # expired after one request
    # /apt/ is only faulted when a fault's prefix says so.
    control(base, "POST", {"kind": "error"})
    assert get(f"{base}/apt/Release")[0] == 200
    _, apt_fault = control(base, "POST", {"kind": "error", "prefix": "/apt/"})
    assert get(f"{base}/apt/Release")[0] == 500
    assert control(base, "DELETE", path=f"/_faults/{apt_fault['id']}")[0] == 200
    assert get(f"{base}/apt/Release")[0] == 200
    assert control(base, "POST", {"kind": "explode"})[0] == 400
    assert control(base, "POST", {"kind": "cut", "prefix": "/etc/"})[0] == 400
    assert control(base, "POST", {"kind": "slow"})[0] == 400


def test_fault_slow_is_measurable_but_bounded(model):
    base, url, data, _ = model
    control(base, "POST", {"kind": "slow", "rate": len(data) / 0.6})
    began = time.monotonic()
    assert get(url)[2] == data
    assert 0.4 < time.monotonic() - began < 3
    control(base, "DELETE")
    control(base, "POST", {"kind": "slow", "rate": 1000, "max_seconds": 0.5})  # would take seconds unbounded
    began = time.monotonic()
    assert get(url)[2] == data
    assert 0.4 < time.monotonic() - began < 2.5
    control(base, "DELETE")
    control(base, "POST", {"kind": "slow", "delay": 0.3})
    began = time.monotonic()
    get(url)
    assert time.monotonic() - began >= 0.3


def test_request_log(model, artifact_server, tmp_path):
    _, url, _, _ = model
    get(url, {"Range": "bytes=0-9"})
    deadline = time.monotonic() + 5  # the server logs just after the client has its answer
    while not (lines := (tmp_path / "requests.log").read_text().splitlines()) and time.monotonic() < deadline:
        time.sleep(0.02)
    last = json.loads(lines[-1])
    assert last["status"] == 206 and last["bytes"] == 10 and last["range"] == "bytes=0-9"


def test_wheelhouse_serves_pep503_index_to_pip(site_content, artifact_server, tmp_path):
    base, _ = artifact_server
    status, _, page = get(f"{base}/artifacts/wheelhouse/simple/nvidia-pytriton/")
    assert status == 200 and b"nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl#sha256=" in page
    assert get(f"{base}/artifacts/wheelhouse/simple/nvidia-pytriton")[0] == 200  # redirected to the slash form
    # The real client against the index only (--isolated: ignore this machine's pip configuration).
    res = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--no-cache-dir", "--quiet",
         "--index-url", f"{base}/artifacts/wheelhouse/simple/", "--only-binary=:all:", "--python-version", "3.11",
         "--platform", "manylinux2014_x86_64", "-d", str(tmp_path / "dl"), "numpy==1.26.4"],
        capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    got = list((tmp_path / "dl").glob("numpy-1.26.4-*.whl"))
    assert got and got[0].read_bytes() == (site_content.wheelhouse_dir / got[0].name).read_bytes()
