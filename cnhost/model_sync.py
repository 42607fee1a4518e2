#!/usr/bin/env python3
"""Ensure one pinned model version in a Triton model repository: the model layer's one copy of its logic.

Shipped to the host by both engines (deploy/model.py, roles/model) and run with the host's python3: hosts
have no curl or wget, and one script means one download, verification and unpack behaviour for pyinfra and
Ansible. Standard library only; Python 3.10+ (Ubuntu 22.04 / JetPack 6 hosts).

    model_sync.py check|sync --url U --sha256 HEX --name N --version V --repository DIR --staging DIR
                             --default-config FILE [--keep 2] [--format tf_savedmodel|onnx|python]

End state (`sync`; `check` only reports what `sync` would do, changing nothing and contacting nothing):
- `<repository>/<name>/<version>/` holds the archive's model, with `.cnctl-pin.json` (name, version,
  sha256, url) written inside it before it was renamed into place: that marker is the proof of the pin, so
  a converged host downloads nothing, not even a HEAD;
- the archive was downloaded into `<staging>` with resume (HTTP Range + If-Range after a cut, as long as
  each attempt makes progress) and its sha256 verified before anything in the repository changed;
- it was unpacked into a temporary directory beside the version and renamed into place (atomic);
- the version carries its config as `.cnctl-config.pbtxt`: the archive's own, or, when the archive has
  none, the engine-rendered `--default-config` (templates/triton/config.pbtxt.j2) as it was at install;
- only the `--keep` versions that matter most remain: the pinned one, the one Triton serves and the ones
  it served before (`.cnctl-served.json`, written by model_serve.py), then the most recently installed;
- `<staging>` is empty afterwards, whether the run succeeded or not.

Which version Triton serves is not this script's business: `<repository>/<name>/config.pbtxt` is written
by model_serve.py (the inference layer) when it switches, so installing a version never changes what serves.

Output: one JSON line {"result", "changed", "reason", "message"} on stdout (the message also on stderr when
the run fails); the exit code is EXIT[reason].
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

# reason -> exit code (the engines read these; deploy/model.py re-exports them for the roles).
EXIT = {"ok": 0, "usage": 2, "pending": 3, "download": 4, "checksum": 5, "archive": 6, "disk": 7}

MARKER = ".cnctl-pin.json"
CONFIG = "config.pbtxt"
VERSION_CONFIG = ".cnctl-config.pbtxt"  # the version's config (the archive's own, or the rendered default)
SERVED = ".cnctl-served.json"  # which version Triton serves and served before (model_serve.py writes it)
TEMP_PREFIXES = (".cnctl-unpack-", ".cnctl-old-")
CHUNK = 1 << 16
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full filesystem or quota: not a cut download, never retried
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# Where a bare model lands inside its version directory (Triton's default_model_filename per platform).
PAYLOAD = {"tf_savedmodel": "model.savedmodel", "onnx": "model.onnx"}


class Failure(Exception):
    """A run that cannot converge: `reason` is a key of EXIT, the message says what and how to fix it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- what is there ------------------------------------------------------------------------------------


def pin(args: argparse.Namespace) -> dict:
    """The pin a version's marker must prove."""
    return {"name": args.name, "version": args.version, "sha256": args.sha256}


def read_marker(version_dir: Path) -> dict:
    try:
        data = json.loads((version_dir / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def installed(args: argparse.Namespace) -> bool:
    """The pinned version is in the repository, complete (its marker is written before the rename)."""
    marker = read_marker(Path(args.repository) / args.name / str(args.version))
    return {key: marker.get(key) for key in ("name", "version", "sha256")} == pin(args)


def served_record(model_dir: Path) -> dict:
    """{"version": V, "history": [...]} of model_serve.py: what Triton serves and served before ({} if nothing)."""
    try:
        data = json.loads((model_dir / SERVED).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def versions(model_dir: Path) -> list[Path]:
    """The version directories Triton would serve (numeric names), newest install first."""
    found = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return sorted(found, key=lambda p: (read_marker(p).get("installed", 0), p.stat().st_mtime), reverse=True)


def surplus(args: argparse.Namespace) -> list[Path]:
    """Versions beyond `--keep` and leftovers of interrupted runs. Kept first: the pinned version and the
    served one (never surplus, even past --keep), then the versions served before, newest first, then the
    most recently installed."""
    model_dir = Path(args.repository) / args.name
    found = {p.name: p for p in versions(model_dir)}
    record = served_record(model_dir)
    must = [str(args.version), str(record.get("version", args.version))]
    preferred = must + [str(v) for v in record.get("history", [])] + list(found)
    order = [name for i, name in enumerate(preferred) if name in found and name not in preferred[:i]]
    kept = max(args.keep, len({name for name in must if name in found}))
    leftovers = [p for p in model_dir.iterdir() if p.name.startswith(TEMP_PREFIXES)] if model_dir.is_dir() else []
    return [found[name] for name in order[kept:]] + leftovers


def pending(args: argparse.Namespace) -> list[str]:
    """What `sync` would change, in words (empty: converged)."""
    todo = []
    if not installed(args):
        todo.append(f"download and install {args.name} version {args.version}")
    if installed(args) and surplus(args):
        todo.append("remove " + ", ".join(p.name for p in surplus(args)))
    staging = Path(args.staging)
    if staging.is_dir() and any(staging.iterdir()):
        todo.append(f"clean {staging}")
    return todo


# --- download ------------------------------------------------------------------------------------------


def download(args: argparse.Namespace, dest: Path) -> None:
    """`dest` holds the whole archive: resumed with Range/If-Range after a cut while attempts make
    progress; a server that ignores the range restarts it from zero."""
    validator = None
    stalled = 0
    while True:
        have = dest.stat().st_size if dest.exists() else 0
        try:
            validator, done = _fetch(args, dest, have, validator)
        except Failure:
            raise
        except (OSError, http.client.HTTPException) as exc:
            done, problem = False, str(exc) or type(exc).__name__
        else:
            problem = "connection closed early"
        if done:
            return
        gained = (dest.stat().st_size if dest.exists() else 0) > have
        stalled = 0 if gained else stalled + 1
        if stalled >= args.attempts:
            got = dest.stat().st_size if dest.exists() else 0
            raise Failure("download", f"{args.url}: download cut ({problem}) after {got} bytes; "
                                      f"{args.attempts} attempts in a row made no progress")
        time.sleep(min(0.2 * stalled, 2.0))


def _fetch(args: argparse.Namespace, dest: Path, have: int, validator: str | None) -> tuple[str | None, bool]:
    """One request: the rest of the file after `have` bytes. Returns (entity validator, complete?)."""
    headers = {"User-Agent": "cnctl-model-sync"}
    if have and validator:
        headers.update({"Range": f"bytes={have}-", "If-Range": validator})
    request = urllib.request.Request(args.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=args.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the file already complete (or changed): start over, verify decides
            dest.unlink()
            return None, False
        raise Failure("download", f"{args.url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise Failure("download", f"{args.url}: cannot connect ({exc.reason})") from None
    with response:
        resumed = response.status == 206
        if resumed and not (response.headers.get("Content-Range") or "").startswith(f"bytes {have}-"):
            dest.unlink()  # a range that does not continue the file: start over
            return None, False
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        got = 0
        try:
            with open(dest, "ab" if resumed else "wb") as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except http.client.IncompleteRead as exc:
                        out.write(exc.partial)
                        return validator, False
                    except (OSError, http.client.HTTPException):  # reset or silent mid-body: resume what arrived
                        return validator, False
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
        except OSError as exc:  # writing: the disk's failure, not the download's
            if exc.errno in NO_SPACE:  # waiting does not free a disk: never retried, says what it needs
                needed = None if expected is None else (have if resumed else 0) + expected
                raise Failure("disk", disk_full(args.url, dest, needed, exc.errno)) from None
            raise
    return validator, expected is None or got >= expected


def disk_full(url: str, dest: Path, needed: int | None, error: int) -> str:
    """What a download that filled the disk says: the system's words for `error` (ENOSPC, EDQUOT), the directory,
    the archive's size and the space free there once the partial download is removed (it is: nothing of it can be
    used), and whether the filesystem ran out of inodes rather than bytes."""
    dest.unlink(missing_ok=True)
    fs = os.statvfs(dest.parent)
    size = size_text(needed) if needed is not None else "more than was free"
    inodes = ", no inode free" if fs.f_favail == 0 else ""
    return (f"{url}: {os.strerror(error)} in {dest.parent}: the archive needs {size}, "
            f"{size_text(fs.f_bavail * fs.f_frsize)} free there{inodes}; free space on that filesystem and deploy again")


def size_text(size: int) -> str:
    """`size` bytes as a person reads them: KiB below a MiB, MiB above."""
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size / 1024:.1f} KiB"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(args: argparse.Namespace, archive: Path) -> None:
    """Refuse an archive whose sha256 is not the pin: before anything in the repository changes."""
    actual = sha256_of(archive)
    if actual != args.sha256:
        raise Failure("checksum", f"{args.url}: sha256 is {actual}, the stack pins {args.sha256}; "
                                  f"the repository was left as it was (re-pin with `cnctl model pin` if the "
                                  "archive changed on purpose)")


# --- unpack ---------------------------------------------------------------------------------------------


def _safe_members(archive: zipfile.ZipFile, url: str) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    for info in members:
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or ".." in parts:
            raise Failure("archive", f"{url}: member {info.filename!r} points outside the archive")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise Failure("archive", f"{url}: member {info.filename!r} is a symbolic link")
    return members


def extract(args: argparse.Namespace, archive: Path, into: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into, members=_safe_members(zf, args.url))
    except zipfile.BadZipFile as exc:
        raise Failure("archive", f"{args.url}: not a zip archive ({exc})") from None


def locate(args: argparse.Namespace, root: Path) -> tuple[Path, Path | None, str]:
    """(what goes into the version directory, the archive's config.pbtxt or None, how it is placed).

    A Triton layout (`<model>/config.pbtxt`, `<model>/<n>/...`, anywhere in the archive): the highest
    version's content. Otherwise a bare model: a SavedModel directory or one .onnx file, placed under
    Triton's default file name for the platform."""
    models = sorted({p.parent for p in root.rglob("*") if p.is_dir() and p.name.isdigit()}, key=lambda p: len(p.parts))
    if models:
        model = models[0]
        newest = max((p for p in model.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        config = model / CONFIG
        return newest, config if config.is_file() else None, "contents"
    if args.format == "tf_savedmodel":
        saved = sorted((p.parent for p in root.rglob("saved_model.pb")), key=lambda p: len(p.parts))
        if saved:
            return saved[0], None, PAYLOAD["tf_savedmodel"]
    if args.format == "onnx":
        onnx = sorted(root.rglob("*.onnx"))
        if len(onnx) == 1:
            return onnx[0], None, PAYLOAD["onnx"]
    raise Failure("archive", f"{args.url}: no Triton model directory (<model>/<version>/) and no bare "
                             f"{args.format} model in the archive")


def _normalise(path: Path) -> None:
    """root-owned by the caller; directories 0755, files 0644 (zip permissions vary by who made it)."""
    for dirpath, dirnames, filenames in os.walk(path):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def install(args: argparse.Namespace, archive: Path) -> None:
    """The verified archive unpacked beside its version directory, marked, then renamed into place."""
    model_dir = Path(args.repository) / args.name
    model_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(model_dir, 0o755)
    work = Path(tempfile.mkdtemp(prefix=TEMP_PREFIXES[0], dir=model_dir))
    try:
        extract(args, archive, work / "archive")
        source, config, placement = locate(args, work / "archive")
        version = work / "version"
        if placement == "contents":
            source.rename(version)
        else:
            version.mkdir()
            source.rename(version / placement)
        default = Path(args.default_config)
        if config is None and not default.is_file():
            raise Failure("usage", f"{args.url}: the archive has no config.pbtxt and {default} does not exist")
        shutil.copyfile(config if config is not None else default, version / VERSION_CONFIG)
        record = {**pin(args), "url": args.url, "installed": time.time()}
        (version / MARKER).write_text(json.dumps(record, sort_keys=True) + "\n")
        _normalise(version)
        target = model_dir / str(args.version)
        if target.exists():  # an incomplete or differently pinned copy: swap it out, then remove it
            target.rename(Path(tempfile.mkdtemp(prefix=TEMP_PREFIXES[1], dir=model_dir)) / "version")
        version.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prune(args: argparse.Namespace) -> list[str]:
    gone = surplus(args)
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in gone]


def clean(staging: Path) -> None:
    """Staging empty (the directory itself stays, mode 0700)."""
    if staging.is_dir():
        for entry in staging.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


# --- runs -------------------------------------------------------------------------------------------------


def sync(args: argparse.Namespace) -> tuple[bool, str]:
    """Converge; (changed, what was done)."""
    staging = Path(args.staging)
    done = []
    try:
        if any(staging.iterdir()) if staging.is_dir() else False:
            done.append("cleaned staging")
        clean(staging)
        if not installed(args):
            staging.mkdir(parents=True, exist_ok=True, mode=0o700)
            archive = staging / f"{args.name}-{args.version}.zip"
            download(args, archive)
            verified(args, archive)
            install(args, archive)
            done.append(f"installed {args.name} version {args.version} ({args.sha256})")
        removed = prune(args)
        if removed:
            done.append("removed " + ", ".join(removed))
    finally:
        clean(staging)
    return bool(done), "; ".join(done) or f"{args.name} version {args.version} in place ({args.sha256})"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="model_sync.py", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("check", "sync"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--repository", required=True)
    parser.add_argument("--staging", required=True)
    parser.add_argument("--default-config", required=True)
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--format", default="python")
    parser.add_argument("--attempts", type=int, default=5, help="attempts in a row without progress before giving up")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a connection may stay silent")
    args = parser.parse_args(argv)
    problems = []
    if not _SHA256.match(args.sha256):
        problems.append(f"--sha256 {args.sha256!r} is not 64 lowercase hex digits (pin it: `cnctl model pin`)")
    if not args.url.startswith(("http://", "https://")):
        problems.append(f"--url {args.url!r}: hosts fetch http(s) only; serve the archive from a site mirror")
    if not _NAME.match(args.name):
        problems.append(f"--name {args.name!r} is not a Triton model name")
    if args.version < 1 or args.keep < 1 or args.attempts < 1:
        problems.append("--version, --keep and --attempts must be at least 1")
    if problems:
        raise Failure("usage", "; ".join(problems))
    return args


# The options an engine passes (deploy/model.py `options`), in the order the script takes them
# (deploy/rules/scripts.py builds the command line).
OPTIONS = ("url", "sha256", "name", "version", "repository", "staging", "default-config", "keep", "format")


def report(result: str, changed: bool, reason: str, message: str) -> int:
    print(json.dumps({"result": result, "changed": changed, "reason": reason, "message": message}), flush=True)
    if reason not in ("ok", "pending"):
        print(message, file=sys.stderr, flush=True)
    return EXIT[reason]


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        if args.mode == "check":
            todo = pending(args)
            return report("pending" if todo else "ok", False, "pending" if todo else "ok",
                          "; ".join(todo) or f"{args.name} version {args.version} in place")
        changed, message = sync(args)
        return report("changed" if changed else "ok", changed, "ok", message)
    except Failure as exc:
        return report("failed", False, exc.reason, str(exc))
    except OSError as exc:
        return report("failed", False, "disk", f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))


if __name__ == "__main__":
    sys.exit(main())
