#!/usr/bin/env python3
"""Send the pipeline's queue to the stack's storage: the uploader of every host, store and forward.

Runs in the pipeline's venv (google-cloud-storage for GCS, boto3 for S3-compatible stores; only the kind the
settings name is imported) as a long-running service of the pipeline's user. Python 3.10+.

    uploader.py run|drain|status --config /etc/circularnet/pipeline.json

- `run`: forever. Scan the queue, send the oldest file first, sleep `poll_seconds` when it is empty; while
  the store fails, retry with exponential backoff and jitter between `retry.min_seconds` and
  `retry.max_seconds`. SIGTERM (or SIGINT) finishes the file being sent, then exits 0.
- `drain`: send until the queue is empty (exit 0) or one attempt fails (exit 1). Prints one JSON line on
  stdout: what this run did (files, bytes sent, already present, dropped) and what is left.
- `status`: print the state file (<state>/upload.json) as JSON.

The queue is `<queue>/<role>/<object name>` (role `results` or `images`, sent to `storage.buckets.<role>`);
a file appears there by an atomic rename, and names starting with "." (files or directories) are files
still being written: never read. Oldest first (mtime, then name). A local file is deleted only after the
store confirmed its object, so nothing is lost offline or across a reboot.

No duplicates, no bytes sent twice: object names are fixed by the producer (the same batch always has the
same name) and every write is create-only (`WriteOnce`, the one copy of this rule: the bucket worker writes its
results with it too). GCS: `if_generation_match=0`; S3: `If-None-Match: *` with
Content-MD5. A create refused because the object exists means an earlier attempt stored it: the stored
object's size and MD5 are compared with the local file, equal counts as `already_present` and the file is
deleted; different content keeps the local file, is logged loudly and named in `last_error` (the rest of the
queue goes on). When an attempt failed mid-way (no answer: it may have landed), the next attempt of that
file asks the store first (a HEAD), so a landed object is never sent again; this holds across restarts
(`<state>/.upload-attempt` names the file in flight). A store reached through `storage.endpoint` (an
emulator, an on-site S3) is probed once per process with a create-only write of
`.cnctl-uploader-probe/<host>` (removed again where allowed); if it does not honour it (the GCS emulator
does not), every file is checked with a HEAD before its PUT.

Past `queue_budget_mib` the oldest files are deleted until the queue fits again, counted in
`dropped_files`/`dropped_bytes` and logged. The state file is written atomically after every file and every
failure; its counters are cumulative across restarts; a full disk stops neither the state nor the uploads.

Credentials (`storage.credentials`): GCS a service-account key JSON, S3 a JSON {accessKeyId, secretAccessKey,
region?}; the file must not be readable by group or others (0600, the service's user), else exit 2.
None: GCS uses the host's identity (a VM's service account) or, with an endpoint, anonymous access to the
emulator; S3 uses boto3's default chain.

Exit codes: 0 ok (drain: queue empty), 1 drain left files in the queue, 2 bad settings or credentials.
Log lines go to stderr (journald), one line per event, no traceback for a store that is down, refuses the
credentials or lacks a bucket.
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import mimetypes
import os
import random
import signal
import stat
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT = {"ok": 0, "pending": 1, "usage": 2}
ROLES = ("results", "images")
STATE_FILE = "upload.json"
ATTEMPT_FILE = ".upload-attempt"  # the file whose upload is in flight (or failed mid-way): HEAD it first
PROBE_PREFIX = ".cnctl-uploader-probe/"
MIB = 1 << 20
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
STALE_DIR_SECONDS = 86400  # empty queue directories older than this are removed

COUNTERS = ("uploaded_files", "uploaded_bytes", "already_present", "dropped_files", "dropped_bytes")
STATE_KEYS = ("updated", "queue_files", "queue_bytes", *COUNTERS[:3], "last_success", "last_error",
              "failing_since", *COUNTERS[3:])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class UsageError(Exception):
    """Bad settings or credentials: exit 2, the message says what and how to fix it."""


class StoreError(Exception):
    """The store failed an attempt (down, refused the credentials, no bucket, an error answer): retry later.

    `midway`: no answer arrived, so the object may have landed; the next attempt of the file asks first.
    `transient`: a connection that got no answer (timed out, reset) or a 429/5xx answer, which the same call may get
    past a moment later (an operator's one-shot command retries these); a connection nobody took (refused, no route,
    unknown name), a refusal or a missing bucket needs a fix first."""

    def __init__(self, message: str, midway: bool = False, transient: bool = False) -> None:
        super().__init__(message)
        self.midway = midway
        self.transient = transient


class Unreadable(Exception):
    """The store does not let us read the object's metadata (GCS objectCreator): cannot compare."""


class Differs(Exception):
    """The store holds the file's name with other content: keep the file, say so."""


class Unsupported(Exception):
    """The store rejected the create-only condition itself (S3 501 NotImplemented)."""


# --- settings -------------------------------------------------------------------------------------------


@dataclass
class Settings:
    host: str
    queue: Path
    state: Path
    kind: str
    endpoint: str | None
    project: str | None
    buckets: dict[str, str]
    credentials: Path | None
    budget_bytes: int
    retry_min: float
    retry_max: float
    poll: float


def load_settings(path: Path) -> Settings:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read the settings {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON ({exc})") from None
    problems = []
    storage = data.get("storage") if isinstance(data, dict) else None
    if not isinstance(storage, dict):
        raise UsageError(f"{path}: no `storage` section (deploy the pipeline layer again)")
    for key in ("queue", "state"):
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append(f"`{key}` must be a directory path")
    kind = storage.get("kind")
    if kind not in ("gcs", "s3"):
        problems.append(f"storage.kind is {kind!r}: gcs or s3")
    buckets = storage.get("buckets") or {}
    for role in ROLES:
        if not isinstance(buckets.get(role), str) or not buckets.get(role):
            problems.append(f"storage.buckets.{role} is missing")
    retry = data.get("retry") or {}
    try:
        retry_min = float(retry.get("min_seconds", 1))
        retry_max = float(retry.get("max_seconds", 300))
        poll = float(data.get("poll_seconds", 2))
        budget = float(data.get("queue_budget_mib", 1024))
    except (TypeError, ValueError):
        problems.append("retry.min_seconds, retry.max_seconds, poll_seconds and queue_budget_mib must be numbers")
        retry_min, retry_max, poll, budget = 1.0, 300.0, 2.0, 1024.0
    if not 0 < retry_min <= retry_max or poll <= 0 or budget <= 0:
        problems.append("retry needs 0 < min_seconds <= max_seconds; poll_seconds and queue_budget_mib must be > 0")
    if problems:
        raise UsageError(f"{path}: " + "; ".join(problems))
    credentials = storage.get("credentials")
    return Settings(host=str(data.get("host") or os.uname().nodename), queue=Path(data["queue"]),
                    state=Path(data["state"]), kind=str(kind), endpoint=storage.get("endpoint") or None,
                    project=storage.get("project") or None, buckets={r: buckets[r] for r in ROLES},
                    credentials=Path(credentials) if credentials else None, budget_bytes=int(budget * MIB),
                    retry_min=retry_min, retry_max=retry_max, poll=poll)


def read_credentials(path: Path | None) -> dict | None:
    """The credentials file's JSON, refused unless only its owner may read it."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError as exc:
        raise UsageError(f"storage credentials {path}: {exc.strerror or exc} (deploy the pipeline layer again, "
                         "or set storage.credentialsFile to none to use the host's identity)") from None
    if info.st_mode & 0o077:
        raise UsageError(f"storage credentials {path} have mode {stat.S_IMODE(info.st_mode):04o}: other users could "
                         f"read them; make the file 0600 and owned by the service's user "
                         f"(chmod 600 {path}), then restart")
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"storage credentials {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise UsageError(f"storage credentials {path} are not JSON") from None
    if not isinstance(data, dict):
        raise UsageError(f"storage credentials {path}: a JSON object expected")
    return data


# --- the queue ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    role: str
    key: str  # the object name
    path: Path
    size: int
    mtime_ns: int

    @property
    def label(self) -> str:
        return f"{self.role}/{self.key}"


def scan(queue: Path) -> list[Item]:
    """Every complete file of the queue, oldest first (mtime, then name)."""
    items: list[Item] = []
    now = time.time()
    for role in ROLES:
        root = queue / role
        stack = [root]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            if not entries and directory != root:
                _remove_stale_dir(directory, now)
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        key = Path(entry.path).relative_to(root).as_posix()
                        items.append(Item(role, key, Path(entry.path), info.st_size, info.st_mtime_ns))
                except OSError:  # vanished meanwhile
                    continue
    items.sort(key=lambda i: (i.mtime_ns, i.role, i.key))
    return items


def _remove_stale_dir(directory: Path, now: float) -> None:
    """An empty date directory the producer stopped using long ago (never a fresh one: it may be filling)."""
    try:
        if now - directory.stat().st_mtime > STALE_DIR_SECONDS:
            directory.rmdir()
    except OSError:
        pass


def md5_of(path: Path) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def content_type(key: str) -> str:
    if key.endswith(".ndjson"):
        return "application/x-ndjson"
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


@dataclass(frozen=True)
class Remote:
    """What the store holds under a name: size and MD5 (None when the store does not say, e.g. multipart)."""

    size: int
    md5: bytes | None


# --- stores ---------------------------------------------------------------------------------------------


class GcsStore:
    """Google Cloud Storage, or its emulator at `endpoint`."""

    def __init__(self, settings: Settings, credentials: dict | None) -> None:
        self.settings = settings
        self.label = f"GCS {settings.endpoint}" if settings.endpoint else "GCS"
        self.has_credentials = credentials is not None
        self.timeout = (CONNECT_TIMEOUT, READ_TIMEOUT)
        self._client: Any = None
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
        from google.api_core import exceptions as api  # only the store kind in use is imported

        self.api = api

    def client(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            s = self.settings
            try:
                if s.endpoint:
                    from google.auth.credentials import AnonymousCredentials

                    self._client = storage.Client(project=s.project or "cnctl", credentials=AnonymousCredentials(),
                                                  client_options={"api_endpoint": s.endpoint})
                elif s.credentials is not None:
                    self._client = storage.Client.from_service_account_json(str(s.credentials), project=s.project)
                else:
                    self._client = storage.Client(project=s.project)
            except Exception as exc:  # noqa: BLE001 - auth libraries raise many types; all mean "no usable identity"
                raise StoreError(f"{self.label}: no usable credentials ({_first_line(exc)}): "
                                 f"{self._credentials_hint()}") from None
        return self._client

    def _credentials_hint(self) -> str:
        if self.settings.credentials is not None:
            return f"check the key in {self.settings.credentials} (storage.credentialsFile in the stack)"
        return "give the host an identity (a VM's service account) or set storage.credentialsFile in the stack"

    def stat(self, bucket: str, key: str) -> Remote | None:
        try:
            blob = self.client().bucket(bucket).get_blob(key, timeout=self.timeout, retry=None)
        except (self.api.Forbidden, self.api.Unauthorized):
            raise Unreadable(f"{self.label} does not let this identity read gs://{bucket}/{key}") from None
        except Exception as exc:  # noqa: BLE001
            raise self.failure(exc, bucket, midway=False) from None
        if blob is None:
            return None
        md5 = base64.b64decode(blob.md5_hash) if blob.md5_hash else None
        return Remote(int(blob.size or 0), md5)

    def read(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes, None when there is none (pull mode's agent and `cnctl bundle` read with it)."""
        try:
            blob = self.client().bucket(bucket).get_blob(key, timeout=self.timeout, retry=None)
            return None if blob is None else bytes(blob.download_as_bytes(timeout=self.timeout, retry=None))
        except self.api.NotFound:
            return None  # deleted between the look-up and the download
        except (self.api.Forbidden, self.api.Unauthorized):
            raise Unreadable(f"{self.label} does not let this identity read gs://{bucket}/{key}") from None
        except Exception as exc:  # noqa: BLE001
            raise self.failure(exc, bucket, midway=False) from None

    def listing(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        """[(name, generation)] of every object under `prefix` (the results loader reads the bucket with it)."""
        try:
            return [(str(b.name), str(b.generation))
                    for b in self.client().list_blobs(bucket, prefix=prefix, timeout=self.timeout, retry=None)]
        except (self.api.Forbidden, self.api.Unauthorized):
            raise Unreadable(f"{self.label} does not let this identity list gs://{bucket}/{prefix}") from None
        except Exception as exc:  # noqa: BLE001 - a missing bucket is NotFound here: failure() names it
            raise self.failure(exc, bucket, midway=False) from None

    def newest(self, bucket: str, prefix: str) -> tuple[str, bytes] | None:
        """The last name under `prefix` in name order and its bytes, None when there is none (`cnctl status`
        reads pull mode's reports with it: their names are UTC times, so the last name is the newest)."""
        return newest(self, bucket, prefix)

    def create(self, bucket: str, key: str, body: Path | bytes, md5: bytes, conditional: bool) -> bool:
        """Store the object; False when a create-only write found it there already."""
        blob = self.client().bucket(bucket).blob(key)
        extra: dict[str, Any] = {"if_generation_match": 0} if conditional else {}
        try:
            if isinstance(body, Path):
                blob.upload_from_filename(str(body), content_type=content_type(key), checksum="md5",
                                          timeout=self.timeout, retry=None, **extra)
            else:
                blob.upload_from_string(body, content_type="text/plain", checksum="md5", timeout=self.timeout,
                                        retry=None, **extra)
        except self.api.PreconditionFailed:
            return False
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.failure(exc, bucket, midway=True) from None
        return True

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.client().bucket(bucket).delete_blob(key, timeout=self.timeout, retry=None)
        except Exception:  # noqa: BLE001, S110 - best effort (objectCreator may not delete)
            pass

    def failure(self, exc: BaseException, bucket: str, midway: bool) -> StoreError:
        api = self.api
        role = _role_of(self.settings, bucket)
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, api.NotFound):
            return StoreError(f"bucket {bucket} does not exist at {self.label}: create it (`cnctl up`) or fix "
                              f"storage.buckets.{role} in the stack and deploy again")
        if isinstance(exc, (api.Forbidden, api.Unauthorized)):
            return StoreError(f"{self.label} refused to let this identity write to bucket {bucket} "
                              f"({exc.code} {_first_line(exc.message)}): grant it roles/storage.objectCreator on "
                              f"{bucket}, or {self._credentials_hint()}")
        if isinstance(exc, api.GoogleAPICallError):
            return StoreError(f"{self.label} answered {exc.code} for bucket {bucket}: {_first_line(exc.message)}",
                              midway=midway and (exc.code or 0) >= 500, transient=_transient_status(exc.code))
        name = type(exc).__name__
        if "RefreshError" in name or "DefaultCredentialsError" in name:
            return StoreError(f"{self.label}: credentials refused ({_first_line(exc)}): {self._credentials_hint()}")
        return unreachable(self.label, exc, midway)


class S3Store:
    """An S3-compatible store (AWS, or an on-site one at `endpoint`)."""

    def __init__(self, settings: Settings, credentials: dict | None) -> None:
        import boto3  # only the store kind in use is imported
        import botocore.config
        import botocore.exceptions

        self.settings = settings
        self.label = f"S3 {settings.endpoint}" if settings.endpoint else "S3"
        self.errors = botocore.exceptions
        options: dict[str, Any] = {}
        if credentials is not None:
            if not credentials.get("accessKeyId") or not credentials.get("secretAccessKey"):
                raise UsageError(f"storage credentials {settings.credentials}: S3 needs accessKeyId and "
                                 "secretAccessKey")
            options = {"aws_access_key_id": credentials["accessKeyId"],
                       "aws_secret_access_key": credentials["secretAccessKey"]}
        region = (credentials or {}).get("region") or "us-east-1"
        config = botocore.config.Config(
            connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": 1},  # the queue retries, with backoff: no storm of internal retries
            request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self.client = boto3.client("s3", endpoint_url=settings.endpoint, region_name=region, config=config, **options)

    def _code(self, exc: BaseException) -> tuple[str, int]:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", "")), int(
            response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)

    def _absent(self, exc: BaseException, bucket: str, key: str) -> None:
        """Returns when a ClientError says the object is not there; raises Unreadable (403) or the failure."""
        code, status = self._code(exc)
        if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
            return
        if status == 403:
            raise Unreadable(f"{self.label} does not let this identity read s3://{bucket}/{key}") from None
        raise self.failure(exc, bucket, midway=False) from None

    def stat(self, bucket: str, key: str) -> Remote | None:
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except self.errors.ClientError as exc:
            self._absent(exc, bucket, key)
            return None
        except Exception as exc:  # noqa: BLE001
            raise self.failure(exc, bucket, midway=False) from None
        etag = str(head.get("ETag", "")).strip('"')
        md5 = bytes.fromhex(etag) if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower()) else None
        return Remote(int(head.get("ContentLength", 0)), md5)

    def read(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes, None when there is none (pull mode's agent and `cnctl bundle` read with it)."""
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.errors.ClientError as exc:
            self._absent(exc, bucket, key)
            return None
        except Exception as exc:  # noqa: BLE001
            raise self.failure(exc, bucket, midway=False) from None

    def listing(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        """[(key, ETag)] of every object under `prefix` (the results loader reads the bucket with it)."""
        found: list[tuple[str, str]] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                found += [(str(item["Key"]), str(item.get("ETag", "")).strip('"')) for item in page.get("Contents") or []]
        except self.errors.ClientError as exc:
            _, status = self._code(exc)
            if status == 403:
                raise Unreadable(f"{self.label} does not let this identity list s3://{bucket}/{prefix}") from None
            raise self.failure(exc, bucket, midway=False) from None
        except Exception as exc:  # noqa: BLE001
            raise self.failure(exc, bucket, midway=False) from None
        return found

    def newest(self, bucket: str, prefix: str) -> tuple[str, bytes] | None:
        """The last name under `prefix` in name order and its bytes, None when there is none (`cnctl status`
        reads pull mode's reports with it: their names are UTC times, so the last name is the newest)."""
        return newest(self, bucket, prefix)

    def digest(self, bucket: str, key: str) -> bytes:
        """The stored object's MD5, read back (stores whose ETag is not one)."""
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            digest = hashlib.md5(usedforsecurity=False)
            for chunk in iter(lambda: body.read(1 << 20), b""):
                digest.update(chunk)
            return digest.digest()
        except Exception as exc:  # noqa: BLE001
            raise self.failure(exc, bucket, midway=False) from None

    def create(self, bucket: str, key: str, body: Path | bytes, md5: bytes, conditional: bool) -> bool:
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
        try:
            if isinstance(body, Path):
                with open(body, "rb") as fh:
                    self.client.put_object(Bucket=bucket, Key=key, Body=fh, ContentMD5=base64.b64encode(md5).decode(),
                                           ContentType=content_type(key), **extra)
            else:
                self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=base64.b64encode(md5).decode(),
                                       **extra)
        except self.errors.ClientError as exc:
            code, status = self._code(exc)
            if status == 412 or code == "PreconditionFailed":
                return False
            if conditional and (status == 501 or code == "NotImplemented"):
                raise Unsupported(code) from None
            raise self.failure(exc, bucket, midway=status >= 500) from None
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.failure(exc, bucket, midway=True) from None
        return True

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except Exception:  # noqa: BLE001, S110 - best effort
            pass

    def failure(self, exc: BaseException, bucket: str, midway: bool) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        role = _role_of(self.settings, bucket)
        if isinstance(exc, self.errors.NoCredentialsError):
            return StoreError(f"{self.label}: no credentials: set storage.credentialsFile in the stack "
                              "({accessKeyId, secretAccessKey}) and deploy again")
        if isinstance(exc, self.errors.ClientError):
            code, status = self._code(exc)
            if code == "NoSuchBucket":
                return StoreError(f"bucket {bucket} does not exist at {self.label}: create it or fix "
                                  f"storage.buckets.{role} in the stack and deploy again")
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                where = self.settings.credentials or "boto3's default credentials"
                return StoreError(f"{self.label} refused the credentials for bucket {bucket} ({code}): check the "
                                  f"keys in {where} and their write permission on {bucket}")
            return StoreError(f"{self.label} answered {status} {code} for bucket {bucket}", midway=midway,
                              transient=_transient_status(status))
        return unreachable(self.label, exc, midway)


def newest(store: GcsStore | S3Store, bucket: str, prefix: str) -> tuple[str, bytes] | None:
    """The last name under `prefix` in name order and its bytes (both stores' `newest`)."""
    names = [name for name, _ in store.listing(bucket, prefix)]
    if not names:
        return None
    body = store.read(bucket, max(names))
    return None if body is None else (max(names), body)


def _role_of(settings: Settings, bucket: str) -> str:
    return next((role for role, name in settings.buckets.items() if name == bucket), "results")


def _transient_status(status: int | None) -> bool:
    """Too many requests, or the store's own failure: worth the same call again."""
    return status == 429 or (status or 0) >= 500


def _first_line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    """A connection failure in a few words: the innermost cause (e.g. 'Connection refused')."""
    seen = exc
    for _ in range(10):
        inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    text = str(seen)
    for phrase in ("Connection refused", "timed out", "Name or service not known", "Connection reset",
                   "No route to host", "Network is unreachable", "Remote end closed connection",
                   "Connection aborted", "Temporary failure in name resolution"):
        if phrase in text or phrase in str(exc):
            return phrase
    return f"{type(exc).__name__}: {_first_line(exc)}"


def unreachable(label: str, exc: BaseException, midway: bool) -> StoreError:
    """No answer. Refused or unresolved connections never reached the store; anything else may have landed."""
    reason = _reason(exc)
    never_sent = reason in ("Connection refused", "Name or service not known", "No route to host",
                            "Network is unreachable", "Temporary failure in name resolution")
    return StoreError(f"{label} unreachable ({reason})", midway=midway and not never_sent, transient=not never_sent)


def make_store(settings: Settings, credentials: dict | None) -> GcsStore | S3Store:
    return GcsStore(settings, credentials) if settings.kind == "gcs" else S3Store(settings, credentials)


# --- state ----------------------------------------------------------------------------------------------


class State:
    """<state>/upload.json (the design's keys, exactly), cumulative across restarts."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE
        self.data: dict[str, Any] = {key: None for key in STATE_KEYS}
        self.data.update({key: 0 for key in ("queue_files", "queue_bytes", *COUNTERS)})
        self._write_failed = False
        self.saved: tuple[float, str] = (0.0, "")  # when, and what (without `updated`), it was last written
        try:
            old = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log(f"state {self.path} unreadable ({exc}): counters start again from zero")
            return
        if isinstance(old, dict):
            for key in COUNTERS:
                if isinstance(old.get(key), int):
                    self.data[key] = old[key]
            for key in ("last_success", "last_error", "failing_since"):
                self.data[key] = old.get(key)

    def save(self, idle: bool = False) -> None:
        """Write the state; `idle`: only when it changed or a minute passed (flash storage wears)."""
        content = json.dumps({k: v for k, v in self.data.items() if k != "updated"}, sort_keys=True)
        if idle and content == self.saved[1] and time.monotonic() - self.saved[0] < 60:
            return
        self.saved = (time.monotonic(), content)
        self.data["updated"] = time.time()
        text = json.dumps(self.data, sort_keys=True) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.fchmod(fd, 0o644)
                os.write(fd, text.encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            if not self._write_failed:
                full = " (disk full)" if exc.errno == errno.ENOSPC else ""
                log(f"cannot write state {self.path}{full}: {exc.strerror or exc}; uploading goes on")
            self._write_failed = True
            return
        if self._write_failed:
            log(f"state {self.path} written again")
        self._write_failed = False


# --- the uploader ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """What this process did (drain's JSON line; the bench reads `sent_bytes`)."""

    uploaded_files: int = 0
    uploaded_bytes: int = 0
    already_present: int = 0
    sent_bytes: int = 0  # bodies put on the wire, including attempts that failed or found the object there
    resent_bytes: int = 0  # bodies sent although the store already held them (a create-only write refused)
    requests: int = 0
    dropped_files: int = 0
    dropped_bytes: int = 0
    started: float = field(default_factory=time.monotonic)


class WriteOnce:
    """Whole objects stored once under names the producer fixed: the uploader's queue files and the bucket worker's
    results (one copy of the rule for both; see the module docstring, "No duplicates").

    Every write is create-only. A create refused because the name is taken compares the stored object's size and
    MD5 with the local file: equal is `already_present`, different raises Differs. A store reached through an
    endpoint is probed once (`probe`) for honouring create-only writes; if it does not (the GCS emulator), every
    name is looked up before its write. Thread-safe: the worker writes a batch's results side by side.
    """

    def __init__(self, store: GcsStore | S3Store, host: str, probe: bool, run: Run | None = None) -> None:
        self.store = store
        self.host = host
        self.conditional: bool | None = None if probe else True  # None: probe the store first
        self.run = run if run is not None else Run()
        self.lock = threading.RLock()  # the probe counts its requests under it

    def count(self, requests: int = 0, sent: int = 0, resent: int = 0) -> None:
        with self.lock:
            self.run.requests += requests
            self.run.sent_bytes += sent
            self.run.resent_bytes += resent

    def put(self, bucket: str, key: str, path: Path, size: int, md5: bytes, label: str, ask_first: bool = False,
            before_write: Callable[[], None] | None = None) -> str:
        """'uploaded' or 'already_present'; Differs (the name holds other content), StoreError (retry later).

        `ask_first`: an earlier attempt may have landed (it failed mid-way), so look before writing again;
        `before_write`: called just before the body goes on the wire (the uploader records the attempt)."""
        with self.lock:
            if self.conditional is None:
                self.conditional = self._probe(bucket)
        remote: Remote | None = None
        if not self.conditional or ask_first:
            try:
                self.count(requests=1)
                remote = self.store.stat(bucket, key)
            except Unreadable:
                remote = None
        if remote is None:
            if before_write is not None:
                before_write()
            self.count(requests=1, sent=size)
            try:
                created = self.store.create(bucket, key, path, md5, bool(self.conditional))
            except Unsupported:
                log(f"{self.store.label} does not support create-only writes: asking before every write from now on")
                self.conditional = False
                created = self.store.create(bucket, key, path, md5, False)
            if created:
                return "uploaded"
            self.count(resent=size)
            try:
                self.count(requests=1)
                remote = self.store.stat(bucket, key)
            except Unreadable:  # objectCreator: trust the create-only precondition, the name is this file's
                log(f"{label}: already in {bucket} (this identity may not read it back to compare)")
                return "already_present"
            if remote is None:
                raise StoreError(f"{self.store.label} refused a create-only write of {key} in {bucket}, "
                                 "yet has no such object")
        if remote.size == size and (remote.md5 or self._read_back(bucket, key)) == md5:
            return "already_present"
        raise Differs(f"{label}: {bucket} already holds {key} with other content ({remote.size} bytes, "
                      f"here {size})")

    def _read_back(self, bucket: str, key: str) -> bytes | None:
        digest = getattr(self.store, "digest", None)
        return digest(bucket, key) if digest else None

    def _probe(self, bucket: str) -> bool:
        """Does the store at `endpoint` honour create-only writes? (The GCS emulator does not.)"""
        key = PROBE_PREFIX + self.host
        body = b"cnctl uploader probe: may be deleted\n"
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        self.count(requests=2)
        try:
            honoured = not self.store.create(bucket, key, body, md5, True) or \
                not self.store.create(bucket, key, body, md5, True)
        except Unsupported:
            honoured = False
        self.store.delete(bucket, key)
        if not honoured:
            log(f"{self.store.label} ignores create-only writes: each file is looked up before it is sent")
        return honoured


class Uploader:
    def __init__(self, settings: Settings, store: GcsStore | S3Store) -> None:
        self.settings = settings
        self.store = store
        self.state = State(settings.state)
        self.run = Run()
        self.writer = WriteOnce(store, settings.host, probe=bool(settings.endpoint), run=self.run)
        self.conflicts: dict[str, tuple[float, str]] = {}  # label -> (when found, message)
        self.stopping = False
        self.attempt_path = settings.state / ATTEMPT_FILE
        try:
            self.suspect = {self.attempt_path.read_text().strip()} - {""}
        except OSError:
            self.suspect = set()
        self.failures = 0

    # -- queue bookkeeping

    def pending(self) -> list[Item]:
        """The queue, oldest first, after the budget; also refreshes queue_files/bytes."""
        items = scan(self.settings.queue)
        total = sum(i.size for i in items)
        if total > self.settings.budget_bytes:
            items, total = self._drop_oldest(items, total)
        self.state.data["queue_files"], self.state.data["queue_bytes"] = len(items), total
        return items

    def _drop_oldest(self, items: list[Item], total: int) -> tuple[list[Item], int]:
        dropped: list[Item] = []
        while items and total > self.settings.budget_bytes:
            item = items.pop(0)
            try:
                item.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log(f"queue over budget: cannot delete {item.path}: {exc.strerror}")
                continue
            total -= item.size
            dropped.append(item)
        size = sum(i.size for i in dropped)
        self.state.data["dropped_files"] += len(dropped)
        self.state.data["dropped_bytes"] += size
        self.run.dropped_files += len(dropped)
        self.run.dropped_bytes += size
        if dropped:
            log(f"queue over its budget of {self.settings.budget_bytes / MIB:g} MiB: dropped the {len(dropped)} "
                f"oldest files ({size} bytes, {dropped[0].label} .. {dropped[-1].label}); "
                f"{len(items)} files ({total} bytes) remain")
            self.state.save()
        return items, total

    def _mark_attempt(self, item: Item | None) -> None:
        try:
            if item is None:
                self.attempt_path.unlink(missing_ok=True)
            else:
                self.attempt_path.write_text(item.label + "\n")
        except OSError:
            pass  # a full disk: the HEAD-first guard is lost for this file, nothing else

    # -- one file

    def send(self, item: Item) -> str:
        """Upload one file; 'uploaded' or 'already_present' (local file deleted), or raise."""
        bucket = self.settings.buckets[item.role]
        try:
            outcome = self.writer.put(bucket, item.key, item.path, item.size, md5_of(item.path), item.label,
                                      ask_first=item.label in self.suspect, before_write=lambda: self._mark_attempt(item))
        except Differs as exc:
            raise Differs(f"{exc}: kept in the queue at {item.path}; compare the two and remove one by hand") from None
        return self._done(item, outcome)

    def _done(self, item: Item, outcome: str) -> str:
        try:
            item.path.unlink()
        except FileNotFoundError:
            pass
        self.suspect.discard(item.label)
        data = self.state.data
        if outcome == "uploaded":
            data["uploaded_files"] += 1
            data["uploaded_bytes"] += item.size
            self.run.uploaded_files += 1
            self.run.uploaded_bytes += item.size
        else:
            data["already_present"] += 1
            self.run.already_present += 1
        data["queue_files"] = max(0, data["queue_files"] - 1)
        data["queue_bytes"] = max(0, data["queue_bytes"] - item.size)
        if self.failures or data["failing_since"]:
            since = data["failing_since"]
            log(f"{self.store.label} reachable again" + (f" after {time.time() - since:.0f} s" if since else ""))
        self.failures = 0
        data["failing_since"] = None
        data["last_success"] = time.time()
        self.conflicts.pop(item.label, None)
        data["last_error"] = next(iter(self.conflicts.values()))[1] if self.conflicts else None
        self.state.save()
        return outcome

    def failed(self, item: Item, exc: StoreError) -> None:
        if exc.midway:
            self.suspect.add(item.label)
        self.failures += 1
        data = self.state.data
        data["failing_since"] = data["failing_since"] or time.time()
        data["last_error"] = str(exc)
        self.state.save()

    def conflict(self, item: Item, exc: Differs) -> None:
        self._mark_attempt(None)
        self.suspect.discard(item.label)
        if item.label not in self.conflicts:
            log(f"CONFLICT {exc}")
        self.conflicts[item.label] = (time.monotonic(), str(exc))
        self.state.data["last_error"] = str(exc)
        self.state.save()

    def skipped(self, item: Item) -> bool:
        """A conflicting file waits retry.max_seconds before it is compared again."""
        found = self.conflicts.get(item.label)
        return found is not None and time.monotonic() - found[0] < self.settings.retry_max

    # -- modes

    def drain(self) -> int:
        items = self.pending()
        self.state.save()
        failure: StoreError | None = None
        for item in items:
            if self.stopping:
                break
            try:
                self.send(item)
            except Differs as exc:
                self.conflict(item, exc)
            except StoreError as exc:
                self.failed(item, exc)
                failure = exc
                break
            except FileNotFoundError:
                continue  # dropped or removed meanwhile
            except OSError as exc:
                log(f"{item.path}: cannot read it ({exc.strerror or exc}); skipped")
        left = self.pending()
        if not left:
            self._mark_attempt(None)
        self.state.save()
        run = self.run
        summary = {"result": "ok" if not left else "pending", "uploaded_files": run.uploaded_files,
                   "uploaded_bytes": run.uploaded_bytes, "already_present": run.already_present,
                   "sent_bytes": run.sent_bytes, "resent_bytes": run.resent_bytes, "requests": run.requests, "dropped_files": run.dropped_files,
                   "dropped_bytes": run.dropped_bytes, "queue_files": len(left),
                   "queue_bytes": sum(i.size for i in left),
                   "seconds": round(time.monotonic() - run.started, 3)}
        if failure is not None:
            log(f"drain stopped: {failure}; {len(left)} files wait in the queue")
        elif left:
            log(f"drain: {len(left)} files left in the queue: {self.state.data['last_error'] or 'stopped'}")
        else:
            log(f"drain: {run.uploaded_files} files sent ({run.uploaded_bytes} bytes), {run.already_present} were "
                f"already there, queue empty ({summary['seconds']} s)")
        print(json.dumps(summary, sort_keys=True), flush=True)
        return EXIT["ok"] if not left else EXIT["pending"]

    def backoff(self) -> float:
        ceiling = min(self.settings.retry_max, self.settings.retry_min * 2 ** max(0, self.failures - 1))
        return random.uniform(self.settings.retry_min, max(self.settings.retry_min, ceiling))

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))

    def forever(self) -> int:
        log(f"uploading {self.settings.queue} to {self.store.label} (results: {self.settings.buckets['results']}, "
            f"images: {self.settings.buckets['images']})")
        self.state.save()
        sent_since_log, last_log = 0, time.monotonic()
        while not self.stopping:
            items = [i for i in self.pending() if not self.skipped(i)]
            if not items:
                if self.attempt_path.exists():
                    self._mark_attempt(None)
                self.state.save(idle=True)
                self.sleep(self.settings.poll)
                continue
            rescan_at = time.monotonic() + 10
            progressed = False
            for item in items:
                if self.stopping or time.monotonic() > rescan_at:
                    break  # rescan now and then: the budget and newer files
                try:
                    self.send(item)
                    progressed = True
                    sent_since_log += 1
                except Differs as exc:
                    self.conflict(item, exc)
                except StoreError as exc:
                    self.failed(item, exc)
                    delay = self.backoff()
                    log(f"{exc}; {self.state.data['queue_files']} files wait in the queue; retry in {delay:.0f} s")
                    self.sleep(delay)
                    break
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log(f"{item.path}: cannot read it ({exc.strerror or exc}); skipped")
            if sent_since_log and (self.state.data["queue_files"] == 0 or time.monotonic() - last_log > 60):
                log(f"sent {sent_since_log} files; {self.state.data['queue_files']} wait in the queue")
                sent_since_log, last_log = 0, time.monotonic()
            if not progressed and not self.failures:
                self.sleep(self.settings.poll)  # only conflicts or vanished files: nothing to hurry for
        log("stopped (SIGTERM): the queue is kept for the next start")
        self.state.save()
        return EXIT["ok"]


# --- command line ---------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="uploader.py", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("run", "drain", "status"))
    parser.add_argument("--config", default="/etc/circularnet/pipeline.json", help="the pipeline's settings file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(Path(args.config))
        if args.mode == "status":
            state = State(settings.state)
            try:
                state.data = json.loads(state.path.read_text())
            except (OSError, ValueError):
                pass
            print(json.dumps(state.data, indent=2, sort_keys=True))
            return EXIT["ok"]
        store = make_store(settings, read_credentials(settings.credentials))
    except UsageError as exc:
        log(str(exc))
        return EXIT["usage"]
    except ImportError as exc:
        log(f"the pipeline venv lacks the {settings.kind} library ({exc.name}): deploy the pipeline layer again")
        return EXIT["usage"]
    uploader = Uploader(settings, store)

    def stop(signum: int, _frame: object) -> None:
        uploader.stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return uploader.drain() if args.mode == "drain" else uploader.forever()
    except UsageError as exc:
        log(str(exc))
        return EXIT["usage"]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
