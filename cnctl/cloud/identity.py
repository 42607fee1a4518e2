"""Who the VMs and the edge devices act as, and exactly what each may touch.

Neither holds any BigQuery right: hosts only add files to the results (and images) bucket, and the
BigQuery Data Transfer Service loads them into the detections tables as its own account
(cnctl/cloud/transfer.py). A device's credentials, which sit on a plant floor, can then add files
and nothing else: not read, overwrite or delete objects, not touch a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import projects, serviceaccount, storage

from cnctl.cloud.base import Component, Naming
from cnctl.cloud.storage import BucketRole


@dataclass(frozen=True)
class Grants:
    """The roles of one service account, each at the narrowest scope that works.

    Storage roles are granted on the bucket itself, never project-wide (one or more roles per
    bucket); only roles that have no narrower scope (writing logs and metrics) are granted on the
    project. No basic roles (owner/editor/viewer), ever.
    """

    buckets: Mapping[BucketRole, tuple[str, ...]] = field(default_factory=dict)
    project: tuple[str, ...] = ()
    # Reads the stack's pull-mode bundles: objectViewer on the models bucket under an IAM condition that
    # admits only objects below bundles/<environment>/ (not the model archives beside them).
    bundles: bool = False


# objectCreator creates objects and nothing else: it cannot read, list, overwrite or delete them. The
# uploader writes each object once under a name that is unique per batch (with if_generation_match=0,
# so a retry of an object already there is "already present", not an overwrite): it needs no more.
CREATE_ONLY = "roles/storage.objectCreator"
READ_ONLY = "roles/storage.objectViewer"

# The inference VM uploads its results (and frames) through the same uploader as any host, reads the
# frames edge devices upload and the model archives (publishing a model is an operator's act), and
# writes its logs and metrics. Frames leave the images bucket by its lifecycle rule, not by the VM.
INFERENCE_VM = Grants(
    buckets={
        "images": (CREATE_ONLY, READ_ONLY),
        "results": (CREATE_ONLY,),
        "models": (READ_ONLY,),
    },
    project=("roles/logging.logWriter", "roles/monitoring.metricWriter"),
)

# A worker of the autoscaled group (compute.mode group) reads the frames the queue names and adds results; it
# does not add frames: each new object in the images bucket becomes work for the group, so a worker that
# uploaded frames would feed itself. Its queue grant (subscriber) is on the subscription (cnctl/cloud/queue.py).
GROUP_WORKER = Grants(
    buckets={
        "images": (READ_ONLY,),
        "results": (CREATE_ONLY,),
        "models": (READ_ONLY,),
    },
    project=INFERENCE_VM.project,
)

# An edge device (or on-site server) only adds: new frames and results.
EDGE_UPLOADER = Grants(buckets={"images": (CREATE_ONLY,), "results": (CREATE_ONLY,)})
# ...and, when the stack has pull-mode hosts, reads its bundles (their agents download them with these
# credentials; their reports are results). Never writes them: operators publish with their own identity.
EDGE_PULLER = Grants(buckets=EDGE_UPLOADER.buckets, bundles=True)


class Identity(Component):
    """Ensures two dedicated service accounts and their grants; creates no keys.

    - `inference`: attached to the GPU VMs or the group's workers (never the default compute account,
      which holds project-wide Editor in most projects); `vm_grants` says what it may touch.
    - `uploader`: what edge devices and servers upload as. How a device obtains credentials for it
      (Workload Identity Federation, or a key an operator creates) is the operator's choice: docs/cloud.md.
    """

    def __init__(
        self,
        names: Naming,
        project: str,
        buckets: Mapping[BucketRole, storage.Bucket],
        vm_grants: Grants = INFERENCE_VM,
        edge_grants: Grants = EDGE_UPLOADER,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("Identity", names("identity"), opts, requires)
        self._project = project
        self._buckets = buckets
        env = self._env = names.environment
        self.inference = self._account(
            names("vm"), f"CircularNet inference VM ({env})", "Attached to the GPU inference VMs.", vm_grants
        )
        self.uploader = self._account(
            names("edge"),
            f"CircularNet edge uploader ({env})",
            "Edge devices and on-site servers upload frames and results (create only)"
            + ("; pull-mode hosts read their bundles." if edge_grants.bundles else "."),
            edge_grants,
        )
        self.register_outputs({"inference": self.inference.email, "uploader": self.uploader.email})

    def _account(self, account_id: str, display_name: str, description: str, grants: Grants) -> serviceaccount.Account:
        account = serviceaccount.Account(
            account_id,
            serviceaccount.AccountArgs(account_id=account_id, display_name=display_name, description=description),
            opts=self.child(),
        )
        member = pulumi.Output.concat("serviceAccount:", account.email)
        for role_of, roles in grants.buckets.items():
            for role in roles:
                storage.BucketIAMMember(
                    grant_name(account_id, role, role_of),
                    storage.BucketIAMMemberArgs(bucket=self._buckets[role_of].name, role=role, member=member),
                    opts=self.child(),
                )
        if grants.bundles:
            bucket = self._buckets["models"].name
            storage.BucketIAMMember(
                grant_name(account_id, READ_ONLY, "bundles"),
                storage.BucketIAMMemberArgs(
                    bucket=bucket, role=READ_ONLY, member=member,
                    condition=storage.BucketIAMMemberConditionArgs(
                        title="bundles only",
                        description="pull-mode hosts read their stack's signed bundles, not the model archives",
                        expression=pulumi.Output.concat(
                            'resource.name.startsWith("projects/_/buckets/', bucket,
                            f'/objects/bundles/{self._env}/")'),
                    ),
                ),
                opts=self.child(),
            )
        for role in grants.project:
            projects.IAMMember(
                grant_name(account_id, role, "project"),
                projects.IAMMemberArgs(project=self._project, role=role, member=member),
                opts=self.child(),
            )
        return account


def grant_name(account_id: str, role: str, scope: str) -> str:
    """`cn-dev-vm-storage.objectCreator-images`: who, what, where; unique per grant."""
    return f"{account_id}-{role.removeprefix('roles/')}-{scope}"
