"""The BigQuery dataset and the detections table the CircularNet client appends to."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pulumi
from pulumi_gcp import bigquery

from cnctl.catalog import BigQueryField
from cnctl.cloud.base import Component, Naming
from cnctl.config.schema import Analytics as AnalyticsConfig


def table_schema(fields: Sequence[BigQueryField]) -> str:
    """The BigQuery JSON schema of a client generation: every column REQUIRED, as upstream writes it."""
    return json.dumps([{"name": f.name, "type": f.type, "mode": "REQUIRED"} for f in fields])


class Analytics(Component):
    """Ensures the dataset (in the stack's region, not BigQuery's US default) and the detections table.

    The table's columns come from the catalog generation of the deployed model, so switching a stack
    from the TF to the DETR model changes the schema in the same plan. Rows are partitioned by
    ingestion day, which keeps dashboard queries and their cost bounded to the days they read.
    `deletion_protection` keeps `pulumi destroy` (or a schema change that would replace the table)
    from dropping detections; it is on in prod.
    """

    def __init__(
        self,
        names: Naming,
        config: AnalyticsConfig,
        location: str,
        schema: Sequence[BigQueryField],
        deletion_protection: bool,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("Analytics", names("analytics"), opts, requires)
        self.dataset = bigquery.Dataset(
            names("dataset"),
            bigquery.DatasetArgs(
                dataset_id=config.dataset,
                location=location,
                description=f"CircularNet {names.environment}: detections per physical object",
                delete_contents_on_destroy=not deletion_protection,
                labels=dict(names.labels),
            ),
            opts=self.child(),
        )
        self.table = bigquery.Table(
            names("table", config.table),
            bigquery.TableArgs(
                dataset_id=self.dataset.dataset_id,
                table_id=config.table,
                schema=table_schema(schema),
                # No `field`: partitioned by ingestion time.
                time_partitioning=bigquery.TableTimePartitioningArgs(type="DAY"),
                deletion_protection=deletion_protection,
                labels=dict(names.labels),
            ),
            opts=self.child(),
        )
        self.register_outputs({"dataset": self.dataset.dataset_id, "table": self.table.table_id})
