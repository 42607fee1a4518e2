"""What every cloud component shares: deterministic names and labels, and parented child options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from cnctl.config.schema import StackConfig

# The type-token package of our own components: `cnctl:cloud:<Kind>`.
COMPONENT_PACKAGE = "cnctl:cloud"


@dataclass(frozen=True)
class Naming:
    """Names and labels of one environment.

    Every resource this layer creates is named `cn-<env>-<what>` (the logical Pulumi name and the
    cloud name are the same string), so a plan is reproducible and an operator can tell at a glance
    which environment owns a resource. Bucket names and BigQuery ids are global or user-facing and
    come from the stack file as written.
    """

    environment: str
    labels: Mapping[str, str]

    @classmethod
    def of(cls, cfg: StackConfig) -> Naming:
        """The stack's own labels, plus the two every resource carries (they win over the stack's)."""
        stack_labels = cfg.gcp.labels if cfg.gcp is not None else {}
        return cls(cfg.environment, {**stack_labels, "environment": cfg.environment, "managed-by": "cnctl"})

    def __call__(self, *parts: str) -> str:
        return "-".join(("cn", self.environment, *parts))


class Component(pulumi.ComponentResource):
    """A cnctl cloud component: one concern, its resources parented to it.

    `requires` are resources every child must wait for (the enabled APIs): a child of a component
    does not inherit the component's `depends_on`, so the component hands it to each child itself.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        opts: pulumi.ResourceOptions | None = None,
        requires: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__(f"{COMPONENT_PACKAGE}:{kind}", name, None, opts)
        self._requires = list(requires)

    def child(self) -> pulumi.ResourceOptions:
        """Options for a child: parented here (so it inherits the explicit provider), after `requires`."""
        return pulumi.ResourceOptions(parent=self, depends_on=list(self._requires))
