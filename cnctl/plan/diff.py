"""What a change does to a stack's cloud layer: the difference of two offline plans (`cnctl plan --json`).

CI plans the base and the head of a pull request and posts this as one comment per stack. The comment
carries a marker (`<!-- cnctl-plan:<stack> -->`) so a bot updates its own comment instead of adding a
new one per push, and it is trimmed below GitHub's 65,536-character comment limit with a pointer to the
full plans (pulumi/actions #482: an oversized comment fails the whole job).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cnctl.plan.replace import as_compared, is_stateful, replacement_procedure, replacement_reasons, update_procedure

COMMENT_LIMIT = 60_000  # characters; GitHub refuses comments over 65,536
VALUE_WIDTH = 80


@dataclass(frozen=True)
class Change:
    """One input of one resource that differs: its dotted path, the value before and after."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class PlanDiff:
    stack: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[Change]] = field(default_factory=dict)
    violations: list[Mapping[str, str]] = field(default_factory=list)
    unchanged: int = 0
    # changed resources the provider replaces, with the inputs that force it (cnctl/plan/replace.py)
    replaced: dict[str, list[str]] = field(default_factory=dict)
    # stateful resources (VMs, buckets, datasets, tables) replaced or deleted: their data goes
    destructive: list[str] = field(default_factory=list)
    # replaced resources whose replacement harms beyond themselves (a transfer loads every object again)
    dangerous: list[str] = field(default_factory=list)
    # the safe way to make each dangerous change (catalog `on_replace`), and each update in place that
    # does more than it says (catalog `on_update`: a dataset rewrites its access list)
    procedures: dict[str, str] = field(default_factory=dict)
    production: bool = False

    def refused(self, allowed: Collection[str] = ()) -> list[str]:
        """In production, the destructive and dangerous changes not explicitly allowed (by name, or `all`)."""
        if not self.production or "all" in allowed:
            return []
        return [key for key in sorted({*self.destructive, *self.dangerous}) if key.split(" ", 1)[1] not in allowed]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _by_key(plan: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Inputs per `<type> <name>`, as the provider compares them (sets in one order); resource options
    (protect, ...) under `resourceOptions`, so a change that lifts a resource's protection shows in the
    diff like any input."""
    return {
        f"{r['type']} {r['name']}": {
            **as_compared(r["type"], r.get("inputs", {})),
            **({"resourceOptions": r["options"]} if "options" in r else {}),
        }
        for r in plan.get("resources", [])
    }


def diff_plans(base: Mapping[str, Any] | None, head: Mapping[str, Any]) -> PlanDiff:
    """Compare two plans resource by resource (by type and name). A missing base means all is new."""
    before = _by_key(base or {})
    after = _by_key(head)
    changed = {key: list(_changes(before[key], after[key])) for key in sorted(before.keys() & after.keys())}
    replaced = {key: reasons for key in changed if (reasons := replacement_reasons(_type(key), before[key], after[key]))}
    removed = sorted(before.keys() - after.keys())
    dangerous = {key: text for key in sorted(replaced) if (text := replacement_procedure(_type(key)))}
    updated = {
        key: text
        for key, changes in sorted(changed.items())
        if key not in replaced and _changes_inputs(changes) and (text := update_procedure(_type(key)))
    }
    return PlanDiff(
        stack=str(head.get("stack", "?")),
        added=sorted(after.keys() - before.keys()),
        removed=removed,
        changed={key: changes for key, changes in changed.items() if changes},
        violations=list(head.get("violations", [])),
        unchanged=sum(1 for changes in changed.values() if not changes),
        replaced=replaced,
        destructive=sorted(key for key in (*replaced, *removed) if is_stateful(_type(key))),
        dangerous=list(dangerous),
        procedures={**dangerous, **updated},
        production=bool(head.get("production", False)),
    )


def _changes_inputs(changes: list[Change]) -> bool:
    """Whether the provider is called: an input changes, not only a resource option (protect)."""
    return any(not c.path.startswith("resourceOptions") for c in changes)


def _type(key: str) -> str:
    """The type token of a `<type> <name>` resource key."""
    return key.split(" ", 1)[0]


def _changes(before: Any, after: Any, path: str = "") -> Iterator[Change]:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in sorted(before.keys() | after.keys()):
            yield from _changes(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
    elif before != after:
        yield Change(path or "(value)", before, after)


def _short(value: Any) -> str:
    text = "—" if value is None else json.dumps(value, sort_keys=True)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def render_markdown(diff: PlanDiff, *, limit: int = COMMENT_LIMIT, full_plan_url: str | None = None) -> str:
    """The pull-request comment for one stack, never longer than `limit` characters."""
    head = [f"<!-- cnctl-plan:{diff.stack} -->", f"### cnctl plan · stack `{diff.stack}`", ""]
    if diff.violations:
        head.append(f"**{len(diff.violations)} guardrail failure(s)** — this change cannot be applied:")
        head += [f"- `{v['rule']}` on `{v['resource']}`: {v['message']}" for v in diff.violations]
    else:
        head.append("Guardrails: all pass.")
    head.append("")
    if diff.empty:
        head.append(f"No change to the cloud layer ({diff.unchanged} resources).")
        return "\n".join(head) + "\n"
    head.append(
        f"**{len(diff.added)} to add, {len(diff.changed)} to change, {len(diff.removed)} to delete**"
        f" ({diff.unchanged} unchanged)."
    )
    if diff.replaced:
        head.append(f"**{len(diff.replaced)} to replace** (a new resource takes the place of the old; what it held stays behind).")
    if diff.destructive:
        verdict = "refused in production without `--allow-replace <name>`" if diff.production else "data goes with them"
        head.append(f"**⚠ {len(diff.destructive)} stateful resource(s) replaced or deleted** ({verdict}):")
        head += [f"- `{key}`" for key in diff.destructive]
    if diff.dangerous:
        verdict = "refused in production without `--allow-replace <name>`" if diff.production else "the safe way"
        head.append(f"**⚠ {len(diff.dangerous)} replacement(s) with side effects** ({verdict}):")
        head += [f"- `{key}`: {diff.procedures[key]}" for key in diff.dangerous]
    updates = [key for key in diff.procedures if key not in diff.dangerous]
    if updates:
        head.append(f"**⚠ {len(updates)} update(s) in place with side effects** (the safe way):")
        head += [f"- `{key}`: {diff.procedures[key]}" for key in updates]
    head.append("")
    body: list[str] = []
    body += [f"- ➕ `{key}`" for key in diff.added]
    body += [f"- ➖ `{key}`" for key in diff.removed]
    for key, changes in diff.changed.items():
        forced = diff.replaced.get(key)
        body.append(f"- 🔁 `{key}` (replaced: {', '.join(forced)})" if forced else f"- ✏️ `{key}`")
        body += [f"  - `{c.path}`: `{_short(c.before)}` → `{_short(c.after)}`" for c in changes]
    pointer = "full plans: " + (full_plan_url or "the `cnctl-plan-*` artifacts of this run")
    text = "\n".join(head + body) + "\n"
    if len(text) <= limit:
        return text + f"\n<sub>{pointer}</sub>\n"
    note = f"\n… trimmed to stay under GitHub's comment limit; {pointer}\n"
    kept: list[str] = []
    size = len("\n".join(head)) + len(note) + 1
    for line in body:
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(head + kept) + "\n" + note
