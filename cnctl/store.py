"""One bucket through the uploader's store client: the one wrapper of it, for the operator's machine (`cnctl
bundle`, `cnctl status`) and for pull mode's agent on a host.

    store = Store.of_stack(cfg, "models")     # the operator: storage.buckets.<role>, this machine's identity
    store = Store("gcs", "cn-bundles", "models", endpoint=None, project="p", credentials=Path("/etc/..."), host="belt-3")
    store.read("bundles/dev/channels/canary.json"), store.newest("pull-reports/dev/belt-3-orin/")

The client is the uploader's (cnhost/uploader.py: google-cloud-storage, boto3; create-only writes, its errors in
one line). The operator's store has **this machine's own identity**: Application Default Credentials for GCS
(anonymous for an emulator at storage.endpoint), boto3's default chain for S3. The devices' upload credentials
(storage.credentialsFile) are never used there: devices must not be able to write bundles, and the operator's
reads must not depend on a device's key; a host's store (the agent's) is given its credentials file. Every store
error becomes a StoreProblem (a UsageProblem) naming the bucket (`storage.buckets.<role> (<url>)` for the
operator, with the fix on this machine; `<url>/<key>` on a host).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from cnctl.config import StackConfig
from cnctl.errors import UsageProblem
from cnhost import uploader

Role = Literal["models", "results"]
T = TypeVar("T")
PAUSES = (1.0, 3.0)  # between the attempts of a call that got no answer or a 429/5xx: three attempts in ~4 s


class StoreProblem(UsageProblem):
    """The bucket could not be read or written (no network, no permission, no such bucket): nothing changed."""


class Store:
    """One bucket, through the uploader's store client."""

    def __init__(self, kind: str, bucket: str, role: Role, *, endpoint: str | None = None, project: str | None = None,
                 credentials: Path | None = None, host: str = "cnctl", field: str | None = None) -> None:
        self.uploader = uploader
        self.kind = kind
        self.bucket = bucket
        self.url = f"{'gs' if kind == 'gcs' else 's3'}://{bucket}"
        self.field = field  # how errors name the bucket; None: by the object's URL
        self.operator = credentials is None
        self.sleep: Callable[[float], None] = time.sleep
        settings = uploader.Settings(
            host=host, queue=Path("/nonexistent"), state=Path("/nonexistent"), kind=kind, endpoint=endpoint,
            project=project, buckets={role: bucket}, credentials=credentials, budget_bytes=1, retry_min=1,
            retry_max=1, poll=1)
        try:
            self.store: Any = uploader.make_store(settings, uploader.read_credentials(credentials))
        except ImportError as exc:
            raise UsageProblem(f"storage.kind {kind} needs {exc.name} on this machine (uv sync)") from None
        except uploader.UsageError as exc:
            raise UsageProblem(str(exc)) from None

    @classmethod
    def of_stack(cls, cfg: StackConfig, role: Role = "models") -> Store:
        """The bucket `storage.buckets.<role>` of the stack, with this machine's identity."""
        bucket: str = getattr(cfg.storage.buckets, role)
        scheme = "gs" if cfg.storage.kind == "gcs" else "s3"
        return cls(cfg.storage.kind, bucket, role, endpoint=cfg.storage.endpoint,
                   project=cfg.gcp.project if cfg.gcp is not None else None,
                   field=f"storage.buckets.{role} ({scheme}://{bucket})")

    def _again(self, call: Callable[..., T], *args: Any) -> T:
        """The call, made again after a pause while it fails transiently (no answer, 429, 5xx), at most
        len(PAUSES) + 1 times. Every call here is safe to repeat: reads, and writes of the same bytes (a create-only
        write that landed unanswered finds itself there on the next attempt and says so)."""
        for pause in PAUSES:
            try:
                return call(*args)
            except self.uploader.StoreError as exc:
                if not exc.transient:
                    raise
            self.sleep(pause)
        return call(*args)

    def _problem(self, exc: Exception, key: str) -> StoreProblem:
        """The uploader's one line naming the bucket; for the operator, its hints turned to this machine (they name
        the devices' credentials)."""
        text = str(exc)
        if not self.operator:
            return StoreProblem(f"{self.url}/{key}: {text}")
        if self.kind == "s3" and "no credentials" in text:
            text = (f"{text.split(': no credentials')[0]}: no credentials on this machine: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY or an AWS profile (boto3's default chain); the devices' "
                    "storage.credentialsFile is never used from this machine")
        elif self.kind == "gcs" and "no usable credentials" in text:
            text = (f"{text.split(': give the host')[0].split(': check the key')[0]}: run "
                    "`gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS) on this machine")
        elif isinstance(exc, self.uploader.Unreadable):
            text = (f"{text}: grant this machine's identity read access to {self.bucket} (GCS roles/storage.objectViewer; "
                    "S3 s3:ListBucket and s3:GetObject)")
        elif text.endswith(")") and " unreachable (" in text:
            text = f"{text}: check storage.endpoint in the stack and this machine's network"
        return StoreProblem(f"{self.field or self.url}: {text}")

    def stat(self, key: str) -> tuple[int, bytes | None] | None:
        """(size, MD5 or None) of the object, None when there is none."""
        try:
            remote = self._again(self.store.stat, self.bucket, key)
        except (self.uploader.StoreError, self.uploader.Unreadable) as exc:
            raise self._problem(exc, key) from None
        return None if remote is None else (remote.size, remote.md5)

    def create(self, key: str, body: bytes, conditional: bool) -> bool:
        """Write the object (create-only when `conditional`); False when a create-only write found one there."""
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        try:
            return bool(self._again(self.store.create, self.bucket, key, body, md5, conditional))
        except self.uploader.Unsupported:
            return bool(self._again(self.store.create, self.bucket, key, body, md5, False))  # the caller's look-up before it stands
        except self.uploader.StoreError as exc:
            raise self._problem(exc, key) from None

    def read(self, key: str) -> bytes | None:
        """The object's bytes, None when there is none."""
        try:
            body: bytes | None = self._again(self.store.read, self.bucket, key)
            return body
        except (self.uploader.StoreError, self.uploader.Unreadable) as exc:
            raise self._problem(exc, key) from None

    def newest(self, prefix: str) -> tuple[str, bytes] | None:
        """The last object under `prefix` in name order (name, bytes), None when there is none."""
        try:
            found: tuple[str, bytes] | None = self._again(self.store.newest, self.bucket, prefix)
            return found
        except (self.uploader.StoreError, self.uploader.Unreadable) as exc:
            raise self._problem(exc, prefix) from None
