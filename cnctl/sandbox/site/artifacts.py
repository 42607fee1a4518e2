"""The sandbox site's artifact server: the apt repository under /apt/, artifacts under /artifacts/, faults on demand.

A ThreadingHTTPServer (HTTP/1.1, keep-alive) that serves static files from mounted directories with
HEAD, Content-Length, ETag / Last-Modified (+ If-None-Match, If-Range), and single Range requests (206 +
Content-Range; 416 when unsatisfiable; multi-range requests get the whole file, as RFC 9110 allows). The
header grammar (ranges, entity tags) is werkzeug's; the server only decides what to send and injects faults. Every request is logged
as one JSON line to the request log.

Faults, switched through the control endpoint /_faults (never faulted itself):
  POST   /_faults  {"kind": ..., "prefix": "/artifacts/", "times": null, ...}  -> 201 {"id": n, ...}
  GET    /_faults                                                            -> {"faults": [...]}
  DELETE /_faults  (all)   DELETE /_faults/<id>  (one)
Kinds (several may match one request; they combine):
  cut      {"bytes": N}    send headers with the full Content-Length, then close after N body bytes
  corrupt  {"offset": N}   flip one byte (xor 0xFF) at file offset N, when the response carries it
  error    {"status": 500} answer that status instead of the file
  slow     {"rate": B/s, "delay": s, "max_seconds": s}  wait `delay` before the headers, then throttle the
           body to `rate` bytes/s; the added time is capped at `max_seconds` (default 30, at most 120),
           after which the rest goes at full speed
`prefix` scopes a fault to paths starting with it; it must lie under /artifacts/ or /apt/ (apt traffic is
only faulted when a fault's prefix says so). `times`: apply to the next N matching requests, then expire.

Run: python -m cnctl.sandbox.site.artifacts --bind ADDR --port P --mount /apt/=DIR --mount /artifacts/=DIR
     --log FILE
"""

from __future__ import annotations

import argparse
import email.utils
import json
import mimetypes
import os
import posixpath
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from werkzeug.http import parse_etags, parse_if_range_header, parse_range_header, quote_etag

CONTROL = "/_faults"
HEALTH = "/_health"
FAULTABLE = ("/artifacts/", "/apt/")
KINDS = ("cut", "corrupt", "error", "slow")
MAX_SLOW_SECONDS = 120.0
CHUNK = 64 * 1024


@dataclass
class Fault:
    """One switched-on fault (see the module docstring for the fields of each kind)."""

    id: int
    kind: str
    prefix: str = "/artifacts/"
    times: int | None = None
    bytes: int = 0
    offset: int = 0
    status: int = 500
    rate: float = 0.0
    delay: float = 0.0
    max_seconds: float = 30.0

    @classmethod
    def parse(cls, fid: int, data: dict) -> Fault:
        """Validate a POSTed fault; raises ValueError with a message for the client."""
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        allowed = {"kind", "prefix", "times", "bytes", "offset", "status", "rate", "delay", "max_seconds"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        try:
            fault = cls(
                id=fid, kind=data["kind"], prefix=str(data.get("prefix", "/artifacts/")),
                times=None if data.get("times") is None else int(data["times"]),
                bytes=int(data.get("bytes", 0)), offset=int(data.get("offset", 0)),
                status=int(data.get("status", 500)), rate=float(data.get("rate", 0)),
                delay=float(data.get("delay", 0)), max_seconds=float(data.get("max_seconds", 30)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad field value: {exc}") from None
        if not fault.prefix.startswith(FAULTABLE):
            raise ValueError(f"prefix must start with one of {FAULTABLE}")
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be >= 1 or null")
        if min(fault.bytes, fault.offset) < 0 or fault.rate < 0 or fault.delay < 0:
            raise ValueError("bytes, offset, rate and delay must be >= 0")
        if fault.kind == "error" and not 400 <= fault.status <= 599:
            raise ValueError("status must be 4xx or 5xx")
        if fault.kind == "slow" and not (fault.rate or fault.delay):
            raise ValueError("slow needs rate and/or delay")
        fault.max_seconds = max(0.0, min(float(fault.max_seconds), MAX_SLOW_SECONDS))
        return fault


class Faults:
    """The server's switched-on faults; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next = 1

    def add(self, data: dict) -> Fault:
        with self._lock:
            fault = Fault.parse(self._next, data)
            self._next += 1
            self._faults.append(fault)
            return fault

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def clear(self, fid: int | None = None) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if fid is not None and f.id != fid]
            return len(self._faults) != before

    def take(self, path: str) -> list[Fault]:
        """The faults that apply to a request for `path`; counts down and expires `times`-limited ones."""
        with self._lock:
            hits = [f for f in self._faults if path.startswith(f.prefix)]
            for f in hits:
                if f.times is not None:
                    f.times -= 1
            self._faults = [f for f in self._faults if f.times is None or f.times > 0]
            return hits


class RequestLog:
    """Append-only JSON-lines request log."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._fh = open(path, "a", buffering=1, encoding="utf-8") if path else None  # noqa: SIM115 - lives with the server

    def write(self, **record: object) -> None:
        if self._fh:
            with self._lock:
                self._fh.write(json.dumps({"t": round(time.time(), 3), **record}) + "\n")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """A single `bytes=` range as (start, end inclusive); None for "whole file"; "unsatisfiable" for 416.

    Parsing is werkzeug's (RFC 9110); a multi-range request gets the whole file, as the RFC allows.
    """
    requested = parse_range_header(header)
    if requested is None or len(requested.ranges) != 1:
        return None
    span = requested.range_for_length(size)
    return "unsatisfiable" if span is None else (span[0], span[1] - 1)


class Handler(BaseHTTPRequestHandler):
    """Static files from the mounts, the fault control endpoint and a health check."""

    protocol_version = "HTTP/1.1"
    server_version = "cnctl-sandbox-artifacts/1 (STAND-IN site server)"
    server: ArtifactServer

    # -- plumbing ---------------------------------------------------------------------------------

    def log_message(self, format: str, *args: object) -> None:
        pass  # the JSON request log replaces stderr logging

    def _log(self, status: int, sent: int, **extra: object) -> None:
        self.server.request_log.write(client=self.client_address[0], method=self.command, path=self.path,
                                      status=status, bytes=sent, range=self.headers.get("Range"), **extra)

    def _reply(self, status: int, body: bytes = b"", ctype: str = "text/plain; charset=utf-8",
               headers: dict[str, str] | None = None, **log: object) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._log(status, len(body) if self.command != "HEAD" else 0, **log)

    def _json(self, status: int, data: object) -> None:
        self._reply(status, json.dumps(data, indent=2).encode() + b"\n", "application/json")

    # -- control ----------------------------------------------------------------------------------

    def _control(self) -> None:
        faults = self.server.faults
        if self.command == "GET" and self.path == CONTROL:
            self._json(200, {"faults": faults.snapshot()})
        elif self.command == "POST" and self.path == CONTROL:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                fault = faults.add(json.loads(self.rfile.read(length) or b"null"))
            except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
                self._json(400, {"error": str(exc)})
                return
            self._json(201, asdict(fault))
        elif self.command == "DELETE" and self.path == CONTROL:
            faults.clear()
            self._json(200, {"faults": []})
        elif self.command == "DELETE" and self.path.startswith(CONTROL + "/"):
            fid = self.path[len(CONTROL) + 1:]
            found = fid.isdigit() and faults.clear(int(fid))
            self._json(200 if found else 404, {"faults": faults.snapshot()})
        else:
            self._json(405, {"error": f"{self.command} not supported on {CONTROL}"})

    # -- files ------------------------------------------------------------------------------------

    def _resolve(self, path: str) -> Path | None:
        """The file a URL path names under its mount, or None; refuses any `..`."""
        for prefix, root in self.server.mounts.items():
            if path.startswith(prefix):
                # apt asks for "<url>./InRelease" on flat repositories: "." is fine, ".." never is.
                rel = posixpath.normpath(path[len(prefix):] or ".")
                if rel == ".." or rel.startswith(("../", "/")):
                    return None
                return root if rel == "." else root / rel
        return None

    def _serve_file(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if posixpath.normpath(path) in ("/apt", "/artifacts") and not path.endswith("/"):
            self._reply(301, b"", headers={"Location": path + "/"})
            return
        target = self._resolve(path)
        if target is not None and target.is_dir():
            if not path.endswith("/"):
                self._reply(301, b"", headers={"Location": path + "/"})
                return
            target = target / "index.html"
        if target is None or not target.is_file():
            self._reply(404, b"not found\n")
            return
        faults = self.server.faults.take(path) if path.startswith(FAULTABLE) else []
        ids = [f.id for f in faults]
        error = next((f for f in faults if f.kind == "error"), None)
        if error:
            self._reply(error.status, f"injected fault {error.id}: {error.status}\n".encode(), faults=ids)
            return
        self._send_file(target, faults, ids)

    def _send_file(self, target: Path, faults: list[Fault], ids: list[int]) -> None:
        stat = target.stat()
        size = stat.st_size
        tag = f"{stat.st_mtime_ns:x}-{size:x}"
        etag = quote_etag(tag)
        headers = {
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
            "Accept-Ranges": "bytes",
        }
        if parse_etags(self.headers.get("If-None-Match")).contains(tag):
            self._reply(304, b"", headers=headers, faults=ids)
            return
        wanted = parse_range(self.headers.get("Range"), size)
        if_range = self.headers.get("If-Range")
        if if_range and parse_if_range_header(if_range).etag != tag:
            wanted = None  # the client's copy is of another version: send the whole file
        if wanted == "unsatisfiable":
            self._reply(416, b"", headers={"Content-Range": f"bytes */{size}"}, faults=ids)
            return
        start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
        status = 206 if isinstance(wanted, tuple) else 200
        slow = [f for f in faults if f.kind == "slow"]
        delay = min(sum(f.delay for f in slow), MAX_SLOW_SECONDS)
        if delay:
            time.sleep(delay)
        self.send_response(status)
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        sent = 0 if self.command == "HEAD" else self._stream(target, start, end, faults)
        self._log(status, sent, faults=ids)

    def _stream(self, target: Path, start: int, end: int, faults: list[Fault]) -> int:
        """Write bytes start..end of the file, applying cut / corrupt / slow; returns the bytes sent."""
        cut = min((f.bytes for f in faults if f.kind == "cut"), default=None)
        flips = {f.offset for f in faults if f.kind == "corrupt"}
        slow = [f for f in faults if f.kind == "slow" and f.rate]
        rate = min((f.rate for f in slow), default=0.0)
        budget = min((f.max_seconds for f in slow), default=0.0)
        began, sent, pos = time.monotonic(), 0, start
        with open(target, "rb") as fh:
            fh.seek(start)
            while pos <= end:
                throttling = rate and time.monotonic() - began < budget
                n = min(max(1, int(rate / 10)) if throttling else CHUNK, end - pos + 1)
                if cut is not None:
                    n = min(n, cut - sent)
                    if n <= 0:
                        break
                chunk = bytearray(fh.read(n))
                if not chunk:
                    break
                for off in flips:
                    if pos <= off < pos + len(chunk):
                        chunk[off - pos] ^= 0xFF
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return sent
                sent += len(chunk)
                pos += len(chunk)
                if throttling:
                    elapsed = time.monotonic() - began
                    ahead = sent / rate - elapsed
                    if ahead > 0:
                        time.sleep(min(ahead, max(0.0, budget - elapsed)))
        if cut is not None and sent < end - start + 1:
            # Break the connection mid-body: the client saw the full Content-Length and gets fewer bytes.
            self.close_connection = True
            self.wfile.flush()
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
        return sent

    # -- verbs ------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.path == CONTROL or self.path.startswith(CONTROL + "/"):
            self._control()
        elif self.command in ("GET", "HEAD") and self.path == HEALTH:
            self._reply(200, b"ok\n")
        elif self.command in ("GET", "HEAD"):
            self._serve_file()
        else:
            self._reply(405, b"method not allowed\n")

    do_GET = do_HEAD = do_POST = do_DELETE = _dispatch


class ArtifactServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the mounts, faults and request log the handler uses."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], mounts: dict[str, Path], log_path: Path | None) -> None:
        super().__init__(address, Handler)
        self.mounts = dict(sorted(mounts.items(), key=lambda kv: -len(kv[0])))
        self.faults = Faults()
        self.request_log = RequestLog(log_path)


def parse_mount(text: str) -> tuple[str, Path]:
    prefix, sep, directory = text.partition("=")
    if not sep or not prefix.startswith("/") or not prefix.endswith("/"):
        raise argparse.ArgumentTypeError("--mount wants /prefix/=DIRECTORY")
    return prefix, Path(directory)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="cnctl sandbox artifact server (STAND-IN site service)")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--mount", type=parse_mount, action="append", default=[])
    parser.add_argument("--log", type=Path)
    args = parser.parse_args(argv)
    server = ArtifactServer((args.bind, args.port), dict(args.mount), args.log)
    print(f"serving {sorted(server.mounts)} on http://{args.bind}:{args.port}/ (pid {os.getpid()})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
