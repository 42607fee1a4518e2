"""Who the VMs and the edge devices act as, and exactly what each may touch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi_gcp import bigquery, projects, serviceaccount, storage

from cnctl.cloud.base import Component, Naming
from cnctl.cloud.storage import BucketRole


@dataclass(frozen=True)
class Grants:
    """The roles of one service account, each at the narrowest scope that works.

    Storage and dataset roles are granted on the bucket or dataset itself, never project-wide;
    only roles that have no narrower scope (running BigQuery jobs, writing logs and metrics) are
    granted on the project. No basic roles (owner/editor/viewer), ever.
    """

    buckets: Mapping[BucketRole, str] = field(default_factory=dict)
    dataset: str | None = None
    project: tuple[str, ...] = ()
    # the custom insert-only role (INSERT_ONLY) on the deployed generation's detections table
    table_insert: bool = False


# The inference VM reads (and clears) frames, writes results, only reads model archives (publishing a
# model is an operator's act, not the VM's), appends detections.
INFERENCE_VM = Grants(
    buckets={
        "images": "roles/storage.objectAdmin",
        "results": "roles/storage.objectAdmin",
        "models": "roles/storage.objectViewer",
    },
    dataset="roles/bigquery.dataEditor",
    project=("roles/bigquery.jobUser", "roles/logging.logWriter", "roles/monitoring.metricWriter"),
)

# An edge device only adds: new frames and results (objectCreator cannot read, overwrite or delete),
# and detection rows through the streaming API, on one table. No dataset role (dataEditor could delete
# tables and rewrite rows) and no bigquery.jobUser: without jobs.create it cannot run DML
# (DELETE/UPDATE/MERGE), load or copy jobs that would truncate, even with updateData on the table.
EDGE_UPLOADER = Grants(
    buckets={"images": "roles/storage.objectCreator", "results": "roles/storage.objectCreator"},
    table_insert=True,
)

# The custom role behind `table_insert`: streaming inserts (tabledata.insertAll) need exactly these two.
INSERT_ONLY_PERMISSIONS = ("bigquery.tables.get", "bigquery.tables.updateData")


class Identity(Component):
    """Ensures two dedicated service accounts and their grants; creates no keys.

    - `inference`: attached to the GPU VMs (never the default compute account, which holds
      project-wide Editor in most projects).
    - `uploader`: what edge devices upload as. How a device obtains credentials for it (Workload
      Identity Federation, or a key an operator creates) is the operator's choice: docs/cloud.md.
    """

    def __init__(
        self,
        names: Naming,
        project: str,
        buckets: Mapping[BucketRole, storage.Bucket],
        dataset: bigquery.Dataset,
        table: bigquery.Table,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("Identity", names("identity"), opts, requires)
        self._project = project
        self._buckets = buckets
        self._dataset = dataset
        self._table = table
        env = names.environment
        # Role ids allow letters, digits, _ and . only: `cn_dev_detectionsInserter`.
        self.insert_only = projects.IAMCustomRole(
            names("role", "inserter"),
            projects.IAMCustomRoleArgs(
                project=project,
                role_id=f"cn_{env.replace('-', '_')}_detectionsInserter",
                title=f"CircularNet detections inserter ({env})",
                description="Append rows to a detections table; cannot read, change or delete rows or tables.",
                permissions=list(INSERT_ONLY_PERMISSIONS),
            ),
            opts=self.child(),
        )
        self.inference = self._account(
            names("vm"), f"CircularNet inference VM ({env})", "Attached to the GPU inference VMs.", INFERENCE_VM
        )
        self.uploader = self._account(
            names("edge"),
            f"CircularNet edge uploader ({env})",
            "Edge devices upload frames, results and rows.",
            EDGE_UPLOADER,
        )
        self.register_outputs({"inference": self.inference.email, "uploader": self.uploader.email})

    def _account(self, account_id: str, display_name: str, description: str, grants: Grants) -> serviceaccount.Account:
        account = serviceaccount.Account(
            account_id,
            serviceaccount.AccountArgs(account_id=account_id, display_name=display_name, description=description),
            opts=self.child(),
        )
        member = pulumi.Output.concat("serviceAccount:", account.email)
        for role_of, role in grants.buckets.items():
            storage.BucketIAMMember(
                _grant_name(account_id, role, role_of),
                storage.BucketIAMMemberArgs(bucket=self._buckets[role_of].name, role=role, member=member),
                opts=self.child(),
            )
        if grants.dataset is not None:
            bigquery.DatasetIamMember(
                _grant_name(account_id, grants.dataset, "dataset"),
                bigquery.DatasetIamMemberArgs(dataset_id=self._dataset.dataset_id, role=grants.dataset, member=member),
                opts=self.child(),
            )
        if grants.table_insert:
            bigquery.IamMember(
                _grant_name(account_id, "detectionsInserter", "table"),
                bigquery.IamMemberArgs(
                    project=self._project,
                    dataset_id=self._table.dataset_id,
                    table_id=self._table.table_id,
                    # The role's full name, built from its id (an input, so known before it exists).
                    role=self.insert_only.role_id.apply(lambda rid: f"projects/{self._project}/roles/{rid}"),
                    member=member,
                ),
                opts=self.child(),
            )
        for role in grants.project:
            projects.IAMMember(
                _grant_name(account_id, role, "project"),
                projects.IAMMemberArgs(project=self._project, role=role, member=member),
                opts=self.child(),
            )
        return account


def _grant_name(account_id: str, role: str, scope: str) -> str:
    """`cn-dev-vm-storage.objectAdmin-images`: who, what, where; unique per grant."""
    return f"{account_id}-{role.removeprefix('roles/')}-{scope}"
