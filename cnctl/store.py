"""One of the stack's buckets as the operator's machine reads and writes it (`cnctl bundle`, `cnctl status`).

    store = Store(cfg, "models")          # or "results": the bucket storage.buckets.<role> names
    store.read("bundles/dev/channels/canary.json"), store.newest("pull-reports/dev/belt-3-orin/")

The client is the uploader's (cnhost/uploader.py: google-cloud-storage, boto3; create-only writes, its errors in
one line), with **this machine's own identity**: Application Default Credentials for GCS (anonymous for an
emulator at storage.endpoint), boto3's default chain for S3. The devices' upload credentials
(storage.credentialsFile) are never used here: devices must not be able to write bundles, and the operator's
reads must not depend on a device's key. Every store error becomes a UsageProblem naming the bucket
(`storage.buckets.<role> (<url>)`) and the fix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from cnctl.config import StackConfig
from cnctl.errors import UsageProblem
from cnhost import uploader

Role = Literal["models", "results"]


class Store:
    """The bucket `storage.buckets.<role>` of the stack, through the uploader's store client."""

    def __init__(self, cfg: StackConfig, role: Role = "models") -> None:
        self.uploader = uploader
        self.kind = cfg.storage.kind
        self.role: Role = role
        self.bucket: str = getattr(cfg.storage.buckets, role)
        scheme = "gs" if self.kind == "gcs" else "s3"
        self.url = f"{scheme}://{self.bucket}"
        self.field = f"storage.buckets.{role} ({self.url})"
        settings = uploader.Settings(
            host="cnctl", queue=Path("/nonexistent"), state=Path("/nonexistent"), kind=self.kind,
            endpoint=cfg.storage.endpoint, project=cfg.gcp.project if cfg.gcp is not None else None,
            buckets={role: self.bucket}, credentials=None, budget_bytes=1, retry_min=1, retry_max=1, poll=1)
        try:
            self.store: Any = uploader.make_store(settings, None)
        except ImportError as exc:
            raise UsageProblem(f"storage.kind {self.kind} needs {exc.name} on this machine (uv sync)") from None

    def _problem(self, exc: Exception) -> UsageProblem:
        """The uploader's one line, its hints turned to this machine (they name the devices' credentials)."""
        text = str(exc)
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
        return UsageProblem(f"{self.field}: {text}")

    def stat(self, key: str) -> tuple[int, bytes | None] | None:
        """(size, MD5 or None) of the object, None when there is none."""
        try:
            remote = self.store.stat(self.bucket, key)
        except (self.uploader.StoreError, self.uploader.Unreadable) as exc:
            raise self._problem(exc) from None
        return None if remote is None else (remote.size, remote.md5)

    def create(self, key: str, body: bytes, conditional: bool) -> bool:
        """Write the object (create-only when `conditional`); False when a create-only write found one there."""
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        try:
            return bool(self.store.create(self.bucket, key, body, md5, conditional))
        except self.uploader.Unsupported:
            return bool(self.store.create(self.bucket, key, body, md5, False))  # the caller's look-up before it stands
        except self.uploader.StoreError as exc:
            raise self._problem(exc) from None

    def read(self, key: str) -> bytes | None:
        """The object's bytes, None when there is none."""
        try:
            body: bytes | None = self.store.read(self.bucket, key)
            return body
        except (self.uploader.StoreError, self.uploader.Unreadable) as exc:
            raise self._problem(exc) from None

    def newest(self, prefix: str) -> tuple[str, bytes] | None:
        """The last object under `prefix` in name order (name, bytes), None when there is none."""
        try:
            found: tuple[str, bytes] | None = self.store.newest(self.bucket, prefix)
            return found
        except (self.uploader.StoreError, self.uploader.Unreadable) as exc:
            raise self._problem(exc) from None
