"""The Google APIs the cloud layer needs, enabled in the stack's project."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
from pulumi_gcp import projects

from cnctl.cloud.base import Component, Naming


class Services(Component):
    """Ensures each API in catalog/gcp.yaml `services` is enabled.

    Destroying the stack leaves the APIs on (`disable_on_destroy=False`): other workloads in the
    project may use them, and disabling an API deletes that API's resources project-wide.
    """

    def __init__(
        self,
        names: Naming,
        project: str,
        apis: Sequence[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("Services", names("services"), opts)
        self.apis = [
            projects.Service(
                names("api", api.split(".", 1)[0]),
                projects.ServiceArgs(project=project, service=api, disable_on_destroy=False),
                opts=self.child(),
            )
            for api in apis
        ]
        self.register_outputs({"apis": [api.service for api in self.apis]})
