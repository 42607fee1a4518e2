"""The offline plan of a stack: the cloud resources it declares, their guardrail verdicts, its outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from cnctl.config import load_stack, stack_path
from cnctl.config.schema import StackConfig
from cnctl.plan.engine import run_program
from cnctl.plan.guardrails import RULES, Rule, Violation, evaluate
from cnctl.plan.mocks import Registration


@dataclass(frozen=True)
class Plan:
    stack: str
    resources: tuple[Registration, ...]
    outputs: Mapping[str, Any]
    violations: tuple[Violation, ...]
    # per (type token, name): protect / deleteBeforeReplace as the program set them (engine.RECORDED_OPTIONS)
    options: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    production: bool = False  # replacements and deletions of stateful resources need an explicit override
    # A stack without a `gcp` section: why it has no cloud resource and where its data goes instead
    without_cloud: str | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def verdicts(self) -> list[tuple[Rule, list[Violation]]]:
        """Each guardrail with the violations it found (empty: pass)."""
        return [(rule, [v for v in self.violations if v.rule == rule.id]) for rule in RULES]

    def to_json(self) -> dict[str, Any]:
        """The machine-readable plan: what `cnctl plan --json` prints and CI diffs."""
        return {
            "stack": self.stack,
            "production": self.production,
            "resources": [self._resource_json(r) for r in self.resources],
            "violations": [{"rule": v.rule, "resource": v.resource, "message": v.message} for v in self.violations],
            "outputs": _plain(self.outputs),
        }

    def _resource_json(self, r: Registration) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": r.type, "name": r.name, "inputs": _plain(r.inputs)}
        if (r.type, r.name) in self.options:
            entry["options"] = dict(self.options[(r.type, r.name)])
        return entry

    def render_json(self) -> str:
        """`to_json` as stable text: sorted keys, so two plans diff line by line."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


def plan_stack(stack: str) -> Plan:
    """Plan a stack (a name under stacks/ or a path to a stack file) without credentials.

    The stack is validated first (a bad stack raises StackConfigError naming the file and fields),
    then the real Pulumi program runs on the mock engine with the file's config.
    """
    cfg = load_stack(stack)
    document = yaml.safe_load(stack_path(stack).read_text(encoding="utf-8"))
    run = run_program(document["config"], stack=cfg.environment)
    return Plan(
        cfg.environment,
        run.registrations,
        run.outputs,
        tuple(evaluate(run.registrations)),
        options=run.options,
        production=cfg.is_prod,
        without_cloud=None if cfg.gcp is not None else without_cloud(cfg),
    )


def without_cloud(cfg: StackConfig) -> str:
    """What a stack without a `gcp` section does instead of a cloud layer, in one sentence."""
    storage = cfg.storage
    if storage.endpoint is not None:
        where = f"its data stays on site ({storage.kind} store at {storage.endpoint})"
    else:
        service = "Google Cloud Storage" if storage.kind == "gcs" else "Amazon S3"
        where = f"its hosts upload to {service} buckets another stack owns ({storage.buckets.results})"
    return f"no cloud resources: stack {cfg.environment} has no `gcp` section, so `pulumi up` creates nothing; {where}"


def _plain(value: Any) -> Any:
    """JSON-ready: the engine's numbers are doubles; write whole ones as integers (14, not 14.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
