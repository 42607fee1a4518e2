#!/usr/bin/env python3
"""Ensure Triton serves one version of a model, switched without dropping a request: the inference layer's script.

Shipped next to model_sync.py by both engines (deploy/inference.py, roles/inference) and run with the host's
python3; the unit's ExecStartPost runs it too. Standard library only (Python 3.10+). It speaks Triton's HTTP
API (KServe v2 and its repository extension) on the address the unit binds.

    model_serve.py check|serve --url URL --repository DIR --name N --version V [--previous] [--timeout S]
    model_serve.py load        --url URL --repository DIR --name N [--timeout S]
    model_serve.py status      --url URL --repository DIR --name N
    model_serve.py probe       --url URL --name N [--timeout S]

Instead of `--url`, `--interface NAME --port N`: Triton binds that interface's IPv4 address, which the script
looks up itself (`ip -4 -o addr show dev NAME`, through triton_endpoint.py beside it), so that no caller has to
compute it in a shell.

Files (in `<repository>/<name>/`, beside the versions model_sync.py installs):
- `.cnctl-served.json` {"version", "history"}: the version proven to serve, and the versions served before
  it (newest first). Written only after Triton reported the version READY: it is the truth a restart and a
  rollback go back to. No time in it (two hosts that served the same versions hold the same bytes); its
  mtime is when the last switch happened.
- `config.pbtxt`: the served version's own config (`<version>/.cnctl-config.pbtxt`) with
  `version_policy: { specific: { versions: [V] } }`, so that Triton serves exactly that version whatever
  else the repository keeps.

`serve` (the deploy's step): the target is `--version` (the stack's pin) or, with `--previous`, the
version served before it (a rollback; nothing to do when that is already served). It writes the target's
config and asks Triton to load the model: Triton loads the new version while the old one keeps answering,
then retires the old one (measured with the CPU build: no request fails). When Triton refuses, the config
of the recorded version is put back (the old version never stopped serving) and the run fails with
Triton's own error. A run killed halfway is finished or undone by the next one: the record decides.

`load` (the unit's ExecStartPost, after a start or a crash): makes config.pbtxt the recorded version's and
loads it, so that a restarted Triton serves the last proven version, never a half-switched one.
`status` and `probe` read only: what serves, and one real inference (a zero tensor for each input, shapes
and types from the model's metadata, through the binary tensor extension).

Output: one JSON line {"result", "changed", "reason", "message", ...} on stdout (the message also on stderr
when the run fails); the exit code is EXIT[reason].
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cnhost import replace_file, triton_endpoint

EXIT = {"ok": 0, "usage": 2, "pending": 3, "missing": 4, "triton": 5, "load": 6, "probe": 7, "disk": 8}

MARKER = ".cnctl-pin.json"  # model_sync.py's proof of a complete version
VERSION_CONFIG = ".cnctl-config.pbtxt"  # model_sync.py: the version's config
SERVED = ".cnctl-served.json"
CONFIG = "config.pbtxt"
HISTORY = 5  # served versions remembered (model_sync.py keeps what --keep allows of them)
POLL_S = 0.5
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# Bytes per element of Triton's fixed-size datatypes (the probe builds zero tensors of them).
DATATYPE_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4,
                  "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


class Failure(Exception):
    """A run that cannot converge: `reason` is a key of EXIT, the message says what and how to fix it."""

    def __init__(self, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.extra = extra


# --- files ------------------------------------------------------------------------------------------------


def model_dir(args: argparse.Namespace) -> Path:
    return Path(args.repository) / args.name


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(args: argparse.Namespace) -> dict:
    """The served record ({} before the first switch)."""
    data = read_json(model_dir(args) / SERVED)
    return data if isinstance(data.get("version"), int) else {}


def installed(args: argparse.Namespace, version: int) -> bool:
    """model_sync.py finished installing `version` (its marker is written last, before the rename)."""
    return read_json(model_dir(args) / str(version) / MARKER).get("version") == version


def config_for(args: argparse.Namespace, version: int) -> bytes:
    """The config.pbtxt that serves exactly `version`: its own config plus a specific version policy."""
    path = model_dir(args) / str(version) / VERSION_CONFIG
    try:
        own = path.read_text()
    except OSError:
        raise Failure("missing", f"{path} is missing: reinstall version {version} (the model layer)") from None
    return (without_version_policy(own).rstrip("\n") +
            f"\nversion_policy: {{ specific: {{ versions: [ {version} ] }} }}  # cnctl: the served version\n").encode()


def without_version_policy(text: str) -> str:
    """`text` without a top-level `version_policy { ... }` field (the served version is cnctl's to set)."""
    match = re.search(r"(?m)^\s*version_policy\s*:?\s*\{", text)
    if not match:
        return text
    depth, end = 0, len(text)
    for i in range(match.end() - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            end = i + 1
            break
    return text[:match.start()] + text[end:]


def write_atomic(path: Path, data: bytes) -> bool:
    """`path` holds `data` (0644), replaced in one rename; True when it changed."""
    if path.is_file() and path.read_bytes() == data:
        return False
    replace_file(path, data)
    return True


def remember(args: argparse.Namespace, version: int) -> None:
    """Record `version` as the one proven to serve; the one before it heads the history."""
    old = record(args)
    history = [old["version"]] if old and old["version"] != version else []
    history += [v for v in old.get("history", []) if isinstance(v, int) and v != version and v not in history]
    data = {"version": version, "history": history[:HISTORY]}
    write_atomic(model_dir(args) / SERVED, (json.dumps(data, sort_keys=True) + "\n").encode())


def target(args: argparse.Namespace) -> int:
    """The version to serve: the pin, or with --previous the version served before the pin."""
    if not args.previous:
        return args.version
    old = record(args)
    if old and old["version"] != args.version:
        return old["version"]  # already rolled back (or never rolled forward): stay
    previous = [v for v in old.get("history", []) if v != args.version]
    if not previous:
        raise Failure("missing", f"{args.name}: no version was served before version {args.version} on this host; "
                                 "nothing to roll back to")
    return previous[0]


# --- Triton's HTTP API -------------------------------------------------------------------------------------


def call(args: argparse.Namespace, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of one request; status 0 when Triton does not answer."""
    request = urllib.request.Request(args.url.rstrip("/") + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout or args.timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)
    except (OSError, ValueError):
        return 0, b"", {}


def triton_error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", "")).strip() or body.decode(errors="replace")
    except ValueError:
        return body.decode(errors="replace").strip()


def live(args: argparse.Namespace) -> bool:
    return call(args, "GET", "/v2/health/live", timeout=5)[0] == 200


def wait_live(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.timeout
    while not live(args):
        if time.monotonic() > deadline:
            raise Failure("triton", f"Triton does not answer on {args.url} after {args.timeout:.0f} s; "
                                    "see `journalctl -u circularnet-triton`")
        time.sleep(POLL_S)


def version_ready(args: argparse.Namespace, version: int) -> bool:
    return call(args, "GET", f"/v2/models/{args.name}/versions/{version}/ready", timeout=5)[0] == 200


def loaded(args: argparse.Namespace) -> list[int]:
    """Versions of the model Triton reports READY."""
    status, body, _ = call(args, "POST", "/v2/repository/index", b"{}", timeout=10)
    if status != 200:
        return []
    try:
        rows = json.loads(body)
    except ValueError:
        return []
    return sorted(int(r["version"]) for r in rows
                  if r.get("name") == args.name and r.get("state") == "READY" and str(r.get("version", "")).isdigit())


def load(args: argparse.Namespace, version: int) -> None:
    """Ask Triton to (re)load the model from its config; fail with Triton's words unless `version` is READY."""
    status, body, _ = call(args, "POST", f"/v2/repository/models/{args.name}/load", b"{}", timeout=args.timeout)
    if status != 200:
        reason = triton_error(body) if status else f"no answer from {args.url} within {args.timeout:.0f} s"
        raise Failure("load", f"Triton did not load {args.name} version {version}: {reason}")
    if not version_ready(args, version):
        raise Failure("load", f"Triton loaded {args.name} but version {version} is not READY "
                              f"(READY: {loaded(args) or 'none'})")


# --- runs ------------------------------------------------------------------------------------------------


def pending(args: argparse.Namespace) -> list[str]:
    """What `serve` would change, in words (empty: converged). Reads files and asks Triton; changes nothing."""
    try:
        version = target(args)
    except Failure as exc:
        return [str(exc)]
    todo = []
    if not installed(args, version):
        todo.append(f"version {version} is not installed")
    elif record(args).get("version") != version:
        todo.append(f"switch to version {version}")
    else:
        try:
            want = config_for(args, version)
        except Failure as exc:
            return [str(exc)]
        current = model_dir(args) / CONFIG
        if not current.is_file() or current.read_bytes() != want:
            todo.append(f"write {current}")
        if not version_ready(args, version):
            todo.append(f"load version {version} (Triton does not report it READY)")
    return todo


def serve(args: argparse.Namespace) -> tuple[bool, str]:
    """Converge: Triton serves the target version; (changed, what was done)."""
    version = target(args)
    if not installed(args, version):
        raise Failure("missing", f"{args.name} version {version} is not in {model_dir(args)} (the model layer installs it)")
    wait_live(args)
    want = config_for(args, version)
    proven = record(args).get("version")
    if proven == version and (model_dir(args) / CONFIG).is_file() and \
            (model_dir(args) / CONFIG).read_bytes() == want and version_ready(args, version):
        return False, f"{args.name} version {version} serving"
    write_atomic(model_dir(args) / CONFIG, want)
    try:
        load(args, version)
    except Failure:
        if proven is not None and installed(args, proven):
            write_atomic(model_dir(args) / CONFIG, config_for(args, proven))  # what serves now, on disk again
        raise
    remember(args, version)
    was = f" (was {proven})" if proven not in (None, version) else ""
    return True, f"{args.name} version {version} serving{was}"


def load_recorded(args: argparse.Namespace) -> tuple[bool, str]:
    """After Triton (re)started: the recorded version's config, loaded. Nothing recorded: nothing to load yet."""
    proven = record(args).get("version")
    if proven is None:
        return False, f"no version of {args.name} recorded yet; the deploy's serve step loads the first"
    write_atomic(model_dir(args) / CONFIG, config_for(args, proven))
    wait_live(args)
    load(args, proven)
    return True, f"{args.name} version {proven} loaded"


def status(args: argparse.Namespace) -> dict:
    """What serves: the record, Triton's view of it, and a verdict."""
    old = record(args)
    try:
        switched: int | None = int((model_dir(args) / SERVED).stat().st_mtime)
    except OSError:
        switched = None
    up = live(args)
    served = old.get("version")
    ready = bool(up and served is not None and version_ready(args, served))
    if not up:
        message = f"Triton does not answer on {args.url}; see `journalctl -u circularnet-triton`"
    elif served is None:
        message = f"no version of {args.name} served yet"
    elif not ready:
        message = f"{args.name} version {served} is not READY in Triton"
    else:
        message = f"{args.name} version {served} READY"
    return {"result": "ok" if ready else "failed", "changed": False, "reason": "ok" if ready else "triton",
            "message": message, "live": up, "served": served, "ready": ready,
            "loaded": loaded(args) if up else [], "history": old.get("history", []), "switched": switched}


def test_card(shape: list[int], size: int) -> bytes:
    """An input tensor of `shape`: an image-shaped UINT8 one ([1, H, W, 3]) is a grey card with one red square
    (a quarter of the side, in the upper right quadrant), so a detection model has one object to find; any
    other input is zeros."""
    count = 1
    for d in shape:
        count *= d
    if size != 1 or len(shape) != 4 or shape[-1] != 3 or min(shape[1:3]) < 8:
        return bytes(count * size)
    height, width = shape[1], shape[2]
    card = bytearray(b"\x28" * count)
    top, left, side = height // 4, width // 2, min(height, width) // 4
    red = bytes((200, 30, 30)) * side
    for row in range(top, top + side):
        start = (row * width + left) * 3
        card[start:start + len(red)] = red
    return bytes(card)


def probe(args: argparse.Namespace) -> dict:
    """One real inference of the served model on a test card (`test_card`); the outputs' names and shapes, and
    how many detections it reports where the model has a `num_detections` output."""
    status_code, body, _ = call(args, "GET", f"/v2/models/{args.name}")
    if status_code != 200:
        raise Failure("probe", f"no metadata for {args.name} from {args.url}: "
                               f"{triton_error(body) if status_code else 'Triton does not answer'}")
    meta = json.loads(body)
    inputs, blobs = [], []
    for tensor in meta.get("inputs", []):
        size = DATATYPE_BYTES.get(tensor["datatype"])
        if size is None:
            raise Failure("probe", f"input {tensor['name']} is {tensor['datatype']}: the probe sends fixed-size tensors only")
        shape = [d if d > 0 else 1 for d in tensor["shape"]]
        blob = test_card(shape, size)
        blobs.append(blob)
        inputs.append({"name": tensor["name"], "datatype": tensor["datatype"], "shape": shape,
                       "parameters": {"binary_data_size": len(blob)}})
    # every output in binary, but num_detections as JSON: the one number worth showing
    header = json.dumps({"inputs": inputs, "outputs": [
        {"name": t["name"], "parameters": {"binary_data": t["name"] != "num_detections"}}
        for t in meta.get("outputs", [])]}).encode()
    started = time.monotonic()
    status_code, body, headers = call(args, "POST", f"/v2/models/{args.name}/infer", header + b"".join(blobs),
                                      {"Inference-Header-Content-Length": str(len(header)),
                                       "Content-Type": "application/octet-stream"})
    elapsed = (time.monotonic() - started) * 1000
    if status_code != 200:
        raise Failure("probe", f"inference on {args.name} failed: "
                               f"{triton_error(body) if status_code else 'Triton does not answer'}")
    length = int(headers.get("Inference-Header-Content-Length") or len(body))
    answer = json.loads(body[:length])
    outputs = {o["name"]: o["shape"] for o in answer.get("outputs", [])}
    found = next((o.get("data") for o in answer.get("outputs", []) if o["name"] == "num_detections"), None)
    detections = int(found[0]) if isinstance(found, list) and found else None
    seen = f", {detections} detection(s)" if detections is not None else ""
    return {"result": "ok", "changed": False, "reason": "ok", "message": f"{args.name} version "
            f"{answer.get('model_version')} answered in {elapsed:.0f} ms{seen}",
            "model_version": answer.get("model_version"), "outputs": outputs, "detections": detections,
            "ms": round(elapsed, 1)}


# --- command line ----------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="model_serve.py", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("check", "serve", "load", "status", "probe"))
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="Triton's HTTP endpoint, e.g. http://127.0.0.1:8000")
    where.add_argument("--interface", help="the interface whose IPv4 address Triton binds (with --port)")
    parser.add_argument("--port", type=int, help="Triton's HTTP port on --interface")
    parser.add_argument("--name", required=True)
    parser.add_argument("--repository")
    parser.add_argument("--version", type=int)
    parser.add_argument("--previous", action="store_true", help="serve the version served before --version")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for Triton (start, load)")
    args = parser.parse_args(argv)
    problems = []
    if not _NAME.match(args.name):
        problems.append(f"--name {args.name!r} is not a Triton model name")
    if args.interface is not None:
        args.url = interface_url(args.interface, args.port)
    if not args.url.startswith(("http://", "https://")):
        problems.append(f"--url {args.url!r} is not an http(s) URL")
    if args.mode != "probe" and not args.repository:
        problems.append(f"{args.mode} needs --repository")
    if args.mode in ("check", "serve") and (args.version is None or args.version < 1):
        problems.append(f"{args.mode} needs --version (at least 1)")
    if problems:
        raise Failure("usage", "; ".join(problems))
    return args


def interface_url(interface: str, port: int | None) -> str:
    """Triton's URL on the IPv4 address of `interface` (Failure "usage" without --port; "triton" without an address)."""
    if port is None or not 0 < port < 65536:
        raise Failure("usage", f"--interface {interface!r} needs --port (Triton's HTTP port, 1-65535)")
    address = triton_endpoint.interface_ipv4(interface)
    if address is None:
        raise Failure("triton", f"interface {interface!r} has no IPv4 address here, so Triton cannot be bound to it; "
                                "check `ip -4 addr show` and inference.bindInterface")
    return triton_endpoint.http_url(address, port)


# The options an engine passes to check/serve (deploy/inference.py `options`), in the order the script takes them
# (deploy/rules/scripts.py builds the command line).
OPTIONS = ("url", "repository", "name", "version")


def report(data: dict) -> int:
    print(json.dumps(data, sort_keys=True), flush=True)
    if data["reason"] not in ("ok", "pending"):
        print(data["message"], file=sys.stderr, flush=True)
    return EXIT[data["reason"]]


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        if args.mode == "check":
            todo = pending(args)
            return report({"result": "pending" if todo else "ok", "changed": False,
                           "reason": "pending" if todo else "ok", "message": "; ".join(todo) or "serving"})
        if args.mode == "status":
            return report(status(args))
        if args.mode == "probe":
            return report(probe(args))
        changed, message = serve(args) if args.mode == "serve" else load_recorded(args)
        return report({"result": "changed" if changed else "ok", "changed": changed, "reason": "ok", "message": message})
    except Failure as exc:
        return report({"result": "failed", "changed": False, "reason": exc.reason, "message": str(exc), **exc.extra})
    except OSError as exc:
        return report({"result": "failed", "changed": False, "reason": "disk",
                       "message": f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")})


if __name__ == "__main__":
    sys.exit(main())
