"""Loading detections into BigQuery: a BigQuery Data Transfer from the results bucket, per client generation.

Hosts never write to BigQuery. Each pipeline batch becomes one newline-delimited JSON object in the
results bucket, `detections/<generation>/<host>/<YYYYMMDD>/<batch id>.ndjson`, whose lines carry exactly
the generation's columns (docs/cloud.md, "The data path"). A Cloud Storage transfer of the BigQuery Data
Transfer Service appends those objects to the generation's table on a schedule. In APPEND mode it loads
each object once: a run takes the objects created or changed since the last run, and the uploader
writes every object exactly once (if_generation_match=0), so a row is never loaded twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
from pulumi_gcp import bigquery, projects, serviceaccount, storage

from cnctl.cloud.base import Component, Naming
from cnctl.cloud.identity import READ_ONLY, grant_name

# The Data Transfer Service's source id for Cloud Storage.
CLOUD_STORAGE_SOURCE = "google_cloud_storage"
TRANSFER_API = "bigquerydatatransfer.googleapis.com"
# The roles the transfer's account holds, and where: read the results bucket (storage.objects.get and, for
# the wildcard, storage.objects.list: https://cloud.google.com/bigquery/docs/cloud-storage-transfer),
# append to the detections tables, run the load jobs that do it. On the dataset, `WRITER` is dataEditor
# as a dataset access entry names it: the API returns a predefined role that has a basic counterpart as
# the basic one, so any other spelling is a diff on every refresh (pulumi-gcp's DatasetAccess docs).
LOAD_ROLES = {
    "results": READ_ONLY,
    "dataset": "WRITER",
    "project": "roles/bigquery.jobUser",
}
# What Google's doc for a transfer run as a service account lists for that account on the target
# dataset (https://cloud.google.com/bigquery/docs/use-service-accounts), beyond what a load needs:
# bigquery.datasets.update is in no role narrower than dataOwner, which could also delete the dataset.
TRANSFER_DATASET_PERMISSIONS = ("bigquery.datasets.get", "bigquery.datasets.update")
# What the Data Transfer Service's own agent needs on the account a transfer runs as: mint its tokens.
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


def results_prefix(generation: str) -> str:
    """`detections/tf/`: where the hosts put a generation's results (the design's object names)."""
    return f"detections/{generation}/"


def data_path(bucket: str, generation: str) -> str:
    """The transfer's source: every `.ndjson` object under the generation's prefix, at any depth.

    One wildcard, as BigQuery allows in a Cloud Storage URI; BigQuery's wildcard is not bounded by `/`,
    so it spans the `<host>/<YYYYMMDD>/` levels below the prefix.
    """
    return f"gs://{bucket}/{results_prefix(generation)}*.ndjson"


def transfer_params(bucket: str, generation: str, table: str) -> dict[str, str]:
    """The Cloud Storage transfer's params (every value a string, as the API takes them).

    - JSON: newline-delimited, one detection per line with exactly the table's columns.
    - APPEND: never truncates; only objects new since the last run are loaded.
    - No bad records, no unknown fields: a line that does not fit the table fails the run, which the
      transfer's run history shows, instead of silently loading a part of a batch.
    - Source objects stay: they are the record of what the hosts sent (the account cannot delete them).
    """
    return {
        "data_path_template": data_path(bucket, generation),
        "destination_table_name_template": table,
        "file_format": "JSON",
        "write_disposition": "APPEND",
        "max_bad_records": "0",
        "ignore_unknown_values": "false",
        "delete_source_files": "false",
    }


def dataset_role_id(names: Naming) -> str:
    """`cn_dev_load_dataset`: the project custom role of TRANSFER_DATASET_PERMISSIONS (a role id has no `-`)."""
    return names("load", "dataset").replace("-", "_")


def schedule(minutes: int) -> str:
    """`every 15 minutes`: the transfer's schedule (Cloud Storage transfers run at most every 15 minutes)."""
    return f"every {minutes} minutes"


class DetectionsTransfer(Component):
    """Ensures one Cloud Storage transfer per client generation into its table, and the account it runs as.

    - One transfer per generation that has a table (cnctl/cloud/analytics.py keeps every one): a
      generation switch is rolled out host by host, and results of the old generation keep arriving
      from hosts not yet switched (and from queues that were offline); a transfer that finds no new
      object loads nothing and costs nothing.
    - Its own account, `cn-<env>-load`, and only what a transfer needs: objectViewer on the results
      bucket alone; on the dataset, dataEditor and a project custom role of exactly the dataset
      permissions Google's doc lists for a transfer's account (TRANSFER_DATASET_PERMISSIONS), granted
      on the dataset only; jobUser on the project (load jobs have no narrower scope). It is the one
      account of the stack that can write BigQuery data (guardrail `detections-written-only-by-the-transfer`).
    - Its dataset grants are access entries (DatasetAccess), each adding itself to the dataset's list:
      pulumi-gcp's dataset IAM resources rewrite the list as an IAM policy, which drops every
      authorized view, routine and dataset entry made outside the stack (their docs' note).
    - The transfer runs as that account, never as whoever ran `pulumi up` (a transfer without a service
      account runs with its creator's own credentials). The Data Transfer Service's agent
      (service-<project number>@gcp-sa-bigquerydatatransfer.iam.gserviceaccount.com) gets token creator
      on that one account, not on the project.
    - In the dataset's location (a transfer must be where its destination dataset is); every
      `minutes` minutes.
    """

    def __init__(
        self,
        names: Naming,
        project: str,
        location: str,
        results: storage.Bucket,
        dataset: bigquery.Dataset,
        tables: Mapping[str, bigquery.Table],
        minutes: int,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("Transfer", names("transfer"), opts, requires)
        account_id = names("load")
        self.account = serviceaccount.Account(
            account_id,
            serviceaccount.AccountArgs(
                account_id=account_id,
                display_name=f"CircularNet detections loader ({names.environment})",
                description="Runs the BigQuery Data Transfer that loads the results bucket into the detections tables.",
            ),
            opts=self.child(),
        )
        member = pulumi.Output.concat("serviceAccount:", self.account.email)
        # The Data Transfer Service's agent, made to exist now (it otherwise appears with the first transfer).
        self.agent = projects.ServiceIdentity(
            names("agent", "bigquerydatatransfer"),
            projects.ServiceIdentityArgs(project=project, service=TRANSFER_API),
            opts=self.child(),
        )
        self.dataset_role = projects.IAMCustomRole(
            names("load", "dataset"),
            projects.IAMCustomRoleArgs(
                project=project,
                role_id=dataset_role_id(names),
                title=f"CircularNet transfer: update its dataset ({names.environment})",
                description="What a BigQuery Data Transfer's account needs on its target dataset "
                "(cloud.google.com/bigquery/docs/use-service-accounts); granted on the dataset only.",
                permissions=list(TRANSFER_DATASET_PERMISSIONS),
            ),
            opts=self.child(),
        )
        grants: list[pulumi.Resource] = [
            storage.BucketIAMMember(
                grant_name(account_id, LOAD_ROLES["results"], "results"),
                storage.BucketIAMMemberArgs(bucket=results.name, role=LOAD_ROLES["results"], member=member),
                opts=self.child(),
            ),
            self._dataset_access(grant_name(account_id, LOAD_ROLES["dataset"], "dataset"), dataset, LOAD_ROLES["dataset"]),
            self._dataset_access(
                grant_name(account_id, dataset_role_id(names), "dataset"), dataset, self.dataset_role.name
            ),
            projects.IAMMember(
                grant_name(account_id, LOAD_ROLES["project"], "project"),
                projects.IAMMemberArgs(project=project, role=LOAD_ROLES["project"], member=member),
                opts=self.child(),
            ),
            serviceaccount.IAMMember(
                grant_name(account_id, TOKEN_CREATOR, "agent"),
                serviceaccount.IAMMemberArgs(
                    service_account_id=self.account.name, role=TOKEN_CREATOR, member=self.agent.member
                ),
                opts=self.child(),
            ),
        ]
        # Created once its account may act and its table exists (a transfer cannot create its table).
        after = pulumi.ResourceOptions(depends_on=[*grants, *tables.values()])
        self.configs = {
            generation: bigquery.DataTransferConfig(
                names("load", generation),
                bigquery.DataTransferConfigArgs(
                    project=project,
                    location=location,
                    display_name=names("load", generation),
                    data_source_id=CLOUD_STORAGE_SOURCE,
                    destination_dataset_id=dataset.dataset_id,
                    schedule=schedule(minutes),
                    params=_params(results, generation, table),
                    service_account_name=self.account.email,
                ),
                opts=pulumi.ResourceOptions.merge(self.child(), after),
            )
            for generation, table in tables.items()
        }
        self.register_outputs(
            {"account": self.account.email, "transfers": {g: c.display_name for g, c in self.configs.items()}}
        )

    def _dataset_access(self, name: str, dataset: bigquery.Dataset, role: pulumi.Input[str]) -> bigquery.DatasetAccess:
        """One entry of the dataset's access list for the transfer's account (`userByEmail`: a service account too)."""
        return bigquery.DatasetAccess(
            name,
            bigquery.DatasetAccessInitArgs(dataset_id=dataset.dataset_id, role=role, user_by_email=self.account.email),
            opts=self.child(),
        )


def _params(results: storage.Bucket, generation: str, table: bigquery.Table) -> pulumi.Output[dict[str, str]]:
    """`transfer_params` from the bucket's and the table's names, once they are known."""
    return pulumi.Output.all(results.name, table.table_id).apply(lambda ids: transfer_params(ids[0], generation, ids[1]))
