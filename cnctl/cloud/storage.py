"""The Cloud Storage buckets: input images, results, model archives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pulumi
from pulumi_gcp import storage

from cnctl.cloud.base import Component, Naming
from cnctl.config.schema import Storage as StorageConfig

BucketRole = Literal["images", "results", "models"]
BUCKET_ROLES: tuple[BucketRole, ...] = ("images", "results", "models")


class Storage(Component):
    """Ensures the three buckets exist, private and labelled, in the stack's storage location.

    - Private by construction: uniform bucket-level access (no object ACLs) and public access
      prevention "enforced" (pulumi-gcp's default is "inherited", which lets an org policy gap or a
      stray `allUsers` grant publish frames from a plant floor).
    - Images expire after `storage.imageRetentionDays`: they are the bulk of the bytes and the
      detections already live in BigQuery.
    - Model archives are versioned, so a mirrored archive that is overwritten stays recoverable.
    - In the stack's region unless `storage.location` says otherwise (a location change replaces a
      bucket, so it is chosen once).
    - `force_destroy` only outside prod: `pulumi destroy` of a dev stack may empty its buckets, a
      prod bucket with objects must be emptied on purpose; there they also carry Pulumi's `protect`.
    - Each carries a `contents` label (images, results, models), so a guardrail that reads only the
      plan knows which bucket hosts install from.
    - CMEK when the stack names a key. The Cloud Storage service agent needs
      roles/cloudkms.cryptoKeyEncrypterDecrypter on that key first (docs/cloud.md): the key is
      owned outside this stack, so this stack does not grant on it.
    """

    def __init__(
        self,
        names: Naming,
        config: StorageConfig,
        location: str,
        protect_data: bool,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("Storage", names("storage"), opts, requires)
        self.buckets: dict[BucketRole, storage.Bucket] = {
            role: self._bucket(names, role, config, location, protect_data) for role in BUCKET_ROLES
        }
        self.register_outputs({role: bucket.name for role, bucket in self.buckets.items()})

    def _bucket(
        self, names: Naming, role: BucketRole, config: StorageConfig, location: str, protect_data: bool
    ) -> storage.Bucket:
        lifecycle = None
        if role == "images":
            lifecycle = [
                storage.BucketLifecycleRuleArgs(
                    action=storage.BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=storage.BucketLifecycleRuleConditionArgs(age=config.image_retention_days),
                )
            ]
        return storage.Bucket(
            names(role),
            storage.BucketArgs(
                name=getattr(config.buckets, role),
                location=location,
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                versioning=storage.BucketVersioningArgs(enabled=True) if role == "models" else None,
                lifecycle_rules=lifecycle,
                force_destroy=not protect_data,
                encryption=(
                    storage.BucketEncryptionArgs(default_kms_key_name=config.kms_key_name)
                    if config.kms_key_name
                    else None
                ),
                # What the bucket holds: the guardrails keep `models` (what hosts install, and the pull-mode
                # bundles) unwritable by any device or worker identity (artifacts-not-writable-by-hosts).
                labels={**names.labels, "contents": role},
            ),
            opts=pulumi.ResourceOptions.merge(self.child(), pulumi.ResourceOptions(protect=protect_data)),
        )
