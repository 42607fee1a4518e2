"""The BigQuery dataset and the detections tables the CircularNet client appends to."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pulumi
from pulumi_gcp import bigquery

from cnctl.catalog import BigQueryField
from cnctl.cloud.base import Component, Naming
from cnctl.config.schema import Analytics as AnalyticsConfig


def table_schema(fields: Sequence[BigQueryField]) -> str:
    """The BigQuery JSON schema of a client generation, every column NULLABLE.

    Upstream makes every column REQUIRED. BigQuery can add a NULLABLE column to a table in place,
    but a REQUIRED one only to a new table: with REQUIRED columns, the next catalog revision that adds
    a field would make the provider replace the table and drop its rows.
    """
    return json.dumps([{"name": f.name, "type": f.type, "mode": "NULLABLE"} for f in fields])


class Analytics(Component):
    """Ensures the dataset (in the stack's region, not BigQuery's US default) and one table per generation.

    Each client generation of the catalog (`tf`, `detr`) has its own table with that generation's
    columns, and every one is kept: switching a stack from the TF to the DETR model starts writing
    to `<table>_detr` and leaves `<table>_tf` and its rows alone (a rename in place would replace the
    table). `table` is the table of the deployed model's generation. Rows are partitioned by ingestion
    day, which keeps dashboard queries and their cost bounded to the days they read.
    With deletion protection (on in prod) the tables carry BigQuery's `deletion_protection` and, like
    the dataset, Pulumi's `protect`; the dataset's tables are encrypted with `analytics.kmsKeyName`
    when the stack names one.
    """

    def __init__(
        self,
        names: Naming,
        config: AnalyticsConfig,
        location: str,
        generations: Mapping[str, Sequence[BigQueryField]],
        active: str,
        deletion_protection: bool,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("Analytics", names("analytics"), opts, requires)
        protect = pulumi.ResourceOptions(protect=deletion_protection)
        self.dataset = bigquery.Dataset(
            names("dataset"),
            bigquery.DatasetArgs(
                dataset_id=config.dataset,
                location=location,
                description=f"CircularNet {names.environment}: detections per physical object",
                delete_contents_on_destroy=not deletion_protection,
                default_encryption_configuration=(
                    bigquery.DatasetDefaultEncryptionConfigurationArgs(kms_key_name=config.kms_key_name)
                    if config.kms_key_name
                    else None
                ),
                labels=dict(names.labels),
            ),
            opts=pulumi.ResourceOptions.merge(self.child(), protect),
        )
        self.tables = {
            generation: bigquery.Table(
                names("table", config.table_of(generation)),
                bigquery.TableArgs(
                    dataset_id=self.dataset.dataset_id,
                    table_id=config.table_of(generation),
                    schema=table_schema(fields),
                    # No `field`: partitioned by ingestion time.
                    time_partitioning=bigquery.TableTimePartitioningArgs(type="DAY"),
                    deletion_protection=deletion_protection,
                    labels=dict(names.labels),
                ),
                opts=pulumi.ResourceOptions.merge(self.child(), protect),
            )
            for generation, fields in generations.items()
        }
        self.table = self.tables[active]
        self.register_outputs({"dataset": self.dataset.dataset_id, "table": self.table.table_id})
