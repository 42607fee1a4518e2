"""A bundle's bytes: the manifest, the reproducible archive, and unpacking that trusts nothing until checked.

Reproducible: the same tree (and the same commit) gives the same bytes, so a version names one byte string.
- tar (PAX) of regular files only, no directory entries: `manifest.json` first, then every file sorted by
  path; mtime 0, uid/gid 0, no user/group names; mode 0755 for a file with any execute bit, else 0644.
- gzip at level 9 with mtime 0 and no file name in its header.
- mtime is 0 even when SOURCE_DATE_EPOCH is set: the bytes would change with the environment while the
  version (a digest of the manifest) would not, and publication refuses other bytes under a published version.

The manifest (JSON, sorted keys, two-space indent, final newline):
    {"format": 1, "stack": "<env>", "version": "<16 hex>", "createdFrom": "<git commit>" | null,
     "dirty": true | false, "namespace": "circularnet-bundle:<env>",
     "files": [{"path": ..., "sha256": ..., "size": ..., "mode": 420 | 493}, ...]}   # sorted by path
`version` is the first 16 hex digits of the sha256 of the manifest without its `version` key, serialized
canonically (json.dumps(sort_keys=True, separators=(",", ":"))): it covers the file list, every file's sha256,
size and mode, the stack, the commit and the format. `dirty` says the bundled files differ from that commit.

Unpacking (`unpack`) checks the signature over the archive's bytes first, then reads the tar into a fresh
temporary directory beside the destination: every entry must be a regular file under a relative path with no
`..`, listed in the manifest once, of the manifest's size, sha256 and mode; every listed file must be there;
the manifest's stack, format and version must be right. Only then is the directory renamed into place; on any
refusal it is removed, and the message names the entry.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cnctl.bundle import FORMAT, MANIFEST, BundleRefused, contents, namespace
from cnctl.bundle.signing import verify
from cnctl.config.schema import BundleSigner
from cnctl.errors import UsageProblem

MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20


@dataclass(frozen=True)
class Bundle:
    """A built bundle: its archive's bytes and the manifest inside it."""

    archive: bytes
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.archive).hexdigest()

    def manifest_bytes(self) -> bytes:
        return manifest_bytes(self.manifest)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode()


def version_of(manifest: dict[str, Any]) -> str:
    body = {key: value for key, value in manifest.items() if key != "version"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def normal_mode(st_mode: int) -> int:
    return 0o755 if st_mode & 0o111 else 0o644


def git_origin(root: Path, paths: list[str]) -> tuple[str | None, bool]:
    """(HEAD's commit, whether any of `paths` differs from it), or (None, False) outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=False)
        if head.returncode != 0:
            return None, False
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *paths],
                                capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None, False
    return head.stdout.strip() or None, bool(status.stdout.strip())


def build(root: Path, stack: str, stack_file: Path) -> Bundle:
    """The bundle of the tree at `root` for `stack`, whose stack file is `stack_file` (bundled as
    stacks/Pulumi.<stack>.yaml). Checks nothing about the stack: cnctl.bundle.publish does."""
    listed = contents.files(root)
    stack_entry = f"stacks/Pulumi.{stack}.yaml"
    sources: dict[str, Path] = {path: root / path for path in listed}
    sources[stack_entry] = stack_file
    entries: list[dict[str, Any]] = []
    data: dict[str, bytes] = {}
    for path in sorted(sources):
        body = sources[path].read_bytes()
        data[path] = body
        entries.append({"path": path, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body),
                        "mode": normal_mode(sources[path].stat().st_mode)})
    tracked = [path for path in sorted(sources) if sources[path] == root / path]
    if stack_file.resolve().is_relative_to(root.resolve()):
        tracked.append(stack_file.resolve().relative_to(root.resolve()).as_posix())
    commit, dirty = git_origin(root, tracked)
    manifest: dict[str, Any] = {"format": FORMAT, "stack": stack, "createdFrom": commit, "dirty": dirty,
                                "namespace": namespace(stack), "files": entries}
    manifest["version"] = version_of(manifest)
    return Bundle(pack(manifest, data), manifest)


def _member(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def pack(manifest: dict[str, Any], data: dict[str, bytes]) -> bytes:
    """The archive: manifest.json, then the files in the manifest's (sorted) order; gzip with mtime 0."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        body = manifest_bytes(manifest)
        tar.addfile(_member(MANIFEST, len(body), 0o644), io.BytesIO(body))
        for entry in manifest["files"]:
            tar.addfile(_member(entry["path"], entry["size"], entry["mode"]), io.BytesIO(data[entry["path"]]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _safe_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (not name or name.startswith("/") or "\\" in name or "\0" in name or path.is_absolute()
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise BundleRefused(f"{name!r}: a path outside the bundle's directory (absolute, .. or empty parts); refused")
    return path


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, stack: str) -> dict[str, Any]:
    if not member.isreg() or member.size > MAX_MANIFEST:
        raise BundleRefused(f"{MANIFEST}: not a regular file of at most {MAX_MANIFEST} bytes")
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file
    try:
        manifest = json.loads(handle.read())
    except ValueError as exc:
        raise BundleRefused(f"{MANIFEST}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleRefused(f"{MANIFEST}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}; "
                            f"this cnctl reads format {FORMAT}")
    if manifest.get("stack") != stack:
        raise BundleRefused(f"{MANIFEST}: a bundle of stack {manifest.get('stack')!r}, not {stack!r}")
    files = manifest.get("files")
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
            and isinstance(f.get("size"), int) and f.get("mode") in (0o644, 0o755) for f in files):
        raise BundleRefused(f"{MANIFEST}: `files` must list {{path, sha256, size, mode 0644|0755}} entries")
    if manifest.get("version") != version_of(manifest):
        raise BundleRefused(f"{MANIFEST}: version {manifest.get('version')!r} is not the digest of its contents "
                            f"({version_of(manifest)})")
    return manifest


def unpack(archive: Path, signature: bytes | None, signers: list[BundleSigner], stack: str,
           destination: Path) -> tuple[dict[str, Any], str]:
    """Verify `archive` (signature, then every file) and unpack it as `destination`, which must not exist:
    (the manifest, the signer's identity). BundleRefused naming the entry or check otherwise, with nothing
    left behind."""
    if destination.exists() or destination.is_symlink():
        raise UsageProblem(f"{destination} exists already; unpack into a new directory")
    data = archive.read_bytes()
    signer = verify(data, signature, signers, namespace(stack))
    scratch = destination.parent / f".{destination.name}.unpacking-{secrets.token_hex(4)}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(mode=0o700)
    try:
        manifest = _unpack_into(data, stack, scratch)
        os.chmod(scratch, 0o755)
        os.rename(scratch, destination)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return manifest, signer


def _unpack_into(data: bytes, stack: str, scratch: Path) -> dict[str, Any]:
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"not a gzip'd tar archive ({exc})") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleRefused(f"the archive is damaged ({exc})") from None
        names = [m.name for m in members]
        for name in names:
            _safe_path(name)
        if names.count(MANIFEST) != 1:
            raise BundleRefused(f"{MANIFEST}: {'missing' if MANIFEST not in names else 'present twice'} in the archive")
        manifest = _read_manifest(tar, members[names.index(MANIFEST)], stack)
        expected = {f["path"]: f for f in manifest["files"]}
        for path in expected:
            _safe_path(path)
        seen: set[str] = set()
        for member in members:
            if member.name == MANIFEST:
                continue
            if member.name in seen:
                raise BundleRefused(f"{member.name}: present twice in the archive")
            seen.add(member.name)
            if not member.isreg():
                kind = "a symlink" if member.issym() else "a hard link" if member.islnk() else "not a regular file"
                raise BundleRefused(f"{member.name}: {kind}; a bundle holds regular files only")
            entry = expected.get(member.name)
            if entry is None:
                raise BundleRefused(f"{member.name}: in the archive but not in the manifest (an extra file)")
            _extract(tar, member, entry, scratch)
        missing = sorted(set(expected) - seen)
        if missing:
            raise BundleRefused(f"{missing[0]}: in the manifest but missing from the archive"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    (scratch / MANIFEST).write_bytes(manifest_bytes(manifest))
    return manifest


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: dict[str, Any], scratch: Path) -> None:
    if member.size != entry["size"]:
        raise BundleRefused(f"{member.name}: {member.size} bytes, the manifest says {entry['size']}")
    if stat.S_IMODE(member.mode) != entry["mode"]:
        raise BundleRefused(f"{member.name}: mode {stat.S_IMODE(member.mode):04o}, the manifest says {entry['mode']:04o}")
    target = scratch / member.name
    digest = hashlib.sha256()
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(scratch.resolve()):
            raise BundleRefused(f"{member.name}: its directory leaves the bundle's directory")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:  # a path that is a file and a directory at once, a full disk
        raise BundleRefused(f"{member.name}: cannot be unpacked ({exc.strerror or exc})") from None
    if digest.hexdigest() != entry["sha256"]:
        raise BundleRefused(f"{member.name}: sha256 {digest.hexdigest()} differs from the manifest's {entry['sha256']}")
    os.chmod(target, entry["mode"])
