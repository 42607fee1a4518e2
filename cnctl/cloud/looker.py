"""A Looker Studio link that opens a dashboard on the detections table (the Linking API)."""

from __future__ import annotations

from urllib.parse import urlencode

LINKING_API = "https://lookerstudio.google.com/reporting/create"

# The report the link copies. Upstream CircularNet publishes a public Looker Studio template
# ("Open the public Looker Studio template", circularnet-docs view-data/configure-dashboard) but
# its docs do not print the report id, so none is pinned here: put the upstream template's id, or
# better your own copy of it, here. Empty, the link still opens a new report bound to the table.
TEMPLATE_REPORT_ID = ""


def looker_studio_url(project: str, dataset: str, table: str, report_id: str = TEMPLATE_REPORT_ID) -> str:
    """The Linking API URL: copy `report_id` (if any) with its data source `ds0` bound to the table."""
    params = {"c.reportId": report_id} if report_id else {}
    params |= {
        "ds.ds0.connector": "bigQuery",
        "ds.ds0.type": "TABLE",
        "ds.ds0.projectId": project,
        "ds.ds0.datasetId": dataset,
        "ds.ds0.tableId": table,
    }
    return f"{LINKING_API}?{urlencode(params)}"
