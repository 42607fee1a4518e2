"""Read a stack into a `StackConfig`: from the YAML file (pyinfra, Ansible, the CLI) or from
`pulumi.Config` (the Pulumi program). Both paths end in `parse()`, so they cannot drift apart.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cnctl.config.checks import check
from cnctl.config.errors import Problem, StackConfigError
from cnctl.config.schema import SECTIONS, StackConfig
from cnctl.paths import REPO_ROOT

NAMESPACE = "circularnet"
ROOT = REPO_ROOT
STACKS_DIR = ROOT / "stacks"


def stack_path(stack: str, stacks_dir: Path = STACKS_DIR) -> Path:
    """`dev` -> stacks/Pulumi.dev.yaml; a path to a file is taken as it is."""
    candidate = Path(stack)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    return stacks_dir / f"Pulumi.{stack}.yaml"


def environment_of(path: Path) -> str:
    """The environment name is the stack name: Pulumi.<env>.yaml."""
    name = path.name
    if name.startswith("Pulumi.") and name.endswith((".yaml", ".yml")):
        return name[len("Pulumi.") :].rsplit(".", 1)[0]
    return path.stem


def load_stack(stack: str, stacks_dir: Path = STACKS_DIR, *, unpinned_ok: bool = False) -> StackConfig:
    """Load and validate one stack file; raise StackConfigError naming every problem.

    `unpinned_ok` accepts a stack whose model has no sha256 yet: only `cnctl model pin` wants that.
    """
    path = stack_path(stack, stacks_dir)
    source = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if not path.exists():
        known = sorted(environment_of(p) for p in stacks_dir.glob("Pulumi.*.yaml"))
        raise StackConfigError(source, [Problem("stack", stack, f"has no file {source}; known stacks: {', '.join(known)}")])
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise StackConfigError(source, [Problem("(file)", None, f"is not valid YAML: {exc}")]) from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise StackConfigError(source, [Problem("config", None, "the file needs a top-level `config:` mapping")])
    raw: dict[str, Any] = {}
    unknown: list[Problem] = []
    for key, value in config.items():
        namespace, _, section = str(key).partition(":")
        if namespace != NAMESPACE:
            continue  # other namespaces (e.g. pulumi:tags) belong to Pulumi itself
        if section not in SECTIONS:
            unknown.append(Problem(key, None, f"is not a stack section; known: {', '.join(SECTIONS)}"))
        raw[section] = value
    if unknown:
        raise StackConfigError(source, unknown)
    return parse(raw, environment=environment_of(path), source=source, unpinned_ok=unpinned_ok)


def from_pulumi_config() -> StackConfig:
    """The stack the Pulumi engine is running, read through `pulumi.Config` (same schema, same checks)."""
    import pulumi

    config = pulumi.Config(NAMESPACE)
    raw = {section: value for section in SECTIONS if (value := config.get_object(section)) is not None}
    stack = pulumi.get_stack()
    return parse(raw, environment=stack, source=f"stacks/Pulumi.{stack}.yaml")


def parse(raw: dict[str, Any], *, environment: str, source: str, unpinned_ok: bool = False) -> StackConfig:
    """Validate a raw `circularnet:` mapping: syntax through the schema, then the cross-field rules."""
    try:
        cfg = StackConfig.model_validate({**raw, "environment": environment})
    except ValidationError as exc:
        raise StackConfigError(source, [_problem(err) for err in exc.errors()]) from None
    problems = [p for p in check(cfg) if not (unpinned_ok and p.path == "model.sha256")]
    if problems:
        raise StackConfigError(source, problems)
    return cfg


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(err: Any) -> Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = f"; known keys here: {', '.join(known)}" if known else ""
        return Problem(_path(loc), None, f"is not a known key (a typo?){hint}")
    if kind == "missing":
        return Problem(_path(loc), None, "is required")
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, str) and message.startswith(repr(value)):
        message = message[len(repr(value)) :].lstrip()
    if isinstance(value, (dict, list)):
        value = None
    return Problem(_path(loc), value, message)


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys a user may write at `loc`, walking the schema by alias."""
    model: type[BaseModel] | None = StackConfig
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return []
        model = _model_of(field.annotation)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items() if name != "environment"]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
