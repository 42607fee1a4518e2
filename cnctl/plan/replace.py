"""Which planned changes make the Google provider replace a resource, from the catalog's data.

The offline plan records each resource's inputs, not the provider's diff, so replacements are read
off a table kept as data (`replacements` in cnctl/catalog/gcp.yaml: the inputs the provider's schema
marks ForceNew, per type token). Comparing a base plan with a head plan then says which resources
would be replaced, and which of those hold data (VMs and their disks, buckets, datasets, tables).

GOOD / BAD, in prod:

| change                                  | verdict                                            |
|-----------------------------------------|----------------------------------------------------|
| metadata, labels, machine type          | update in place                                    |
| zone, image family, disk type, Spot     | replacement of a stateful resource: flagged        |
| boot disk grown / shrunk (`grow_only`)  | update in place / replacement: flagged             |
| table gains a NULLABLE column           | update in place                                    |
| table column renamed or retyped         | replacement of a stateful resource: flagged        |
| a Cloud Storage transfer's data path or | replacement with side effects: flagged, with the   |
| destination table                       | safe procedure (catalog `on_replace`)              |
| a dataset's labels or description       | update in place, with the safe procedure (catalog  |
|                                         | `on_update`: the update rewrites its access list)  |

The same table says which list inputs the provider keeps as sets (`sets`): a group's zones or a
template's tags in another order are the same set, so `as_compared` puts them in one order before
anything is compared.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from cnctl.catalog import Replacement, catalog

Inputs = Mapping[str, Any]


def replacement_reasons(type_: str, before: Inputs, after: Inputs) -> list[str]:
    """The input paths whose change replaces this resource (empty: an update in place, or no change)."""
    rule = catalog().gcp.replacements.get(type_)
    if rule is None:
        return []
    reasons = [path for path in rule.paths if _at(before, path) != _at(after, path)]
    reasons += [path for path in rule.grow_only if _shrinks(_at(before, path), _at(after, path))]
    reasons += [
        path
        for condition in rule.when
        if _at(after, condition.input) == [condition.equals]
        for path in condition.paths
        if _both_set_and_different(_at(before, path), _at(after, path))
    ]
    if rule.schema_input is not None and not schema_change_is_additive(
        before.get(rule.schema_input), after.get(rule.schema_input)
    ):
        reasons.append(rule.schema_input)
    return reasons


def as_compared(type_: str, inputs: Inputs) -> Inputs:
    """The inputs as the provider compares them: each list it keeps as a set (catalog `sets`) in one order.

    The provider hashes a TypeSet's elements, so a reorder is no diff at all: neither an update nor,
    for a ForceNew set such as a regional group's zones, a replacement.
    """
    rule = catalog().gcp.replacements.get(type_)
    if rule is None or not rule.sets:
        return inputs
    compared = copy.deepcopy(dict(inputs))
    for path in rule.sets:
        _sort_at(compared, path.split("."))
    return compared


def replacement_procedure(type_: str) -> str | None:
    """What replacing a resource of this type does beyond it, and the safe way (catalog `on_replace`), or None."""
    rule = catalog().gcp.replacements.get(type_)
    return rule.on_replace if rule is not None else None


def update_procedure(type_: str) -> str | None:
    """What updating a resource of this type in place does beyond it, and the safe way (catalog `on_update`)."""
    rule = catalog().gcp.replacements.get(type_)
    return rule.on_update if rule is not None else None


def is_stateful(type_: str) -> bool:
    """Whether replacing or deleting a resource of this type loses data (catalog `stateful`)."""
    rule: Replacement | None = catalog().gcp.replacements.get(type_)
    return rule is not None and rule.stateful


def schema_change_is_additive(before: str | None, after: str | None) -> bool:
    """BigQuery updates a table's schema in place only by adding NULLABLE columns or relaxing REQUIRED.

    A column removed, renamed (= removed + added), retyped, or made REQUIRED, or a new REQUIRED
    column, makes the provider replace the table, and the rows go with it.
    """
    old = {f["name"]: f for f in _fields(before)}
    new = {f["name"]: f for f in _fields(after)}
    for name, field in old.items():
        kept = new.get(name)
        if kept is None or kept.get("type") != field.get("type"):
            return False
        if _mode(kept) == "REQUIRED" and _mode(field) != "REQUIRED":
            return False
    return all(_mode(field) != "REQUIRED" for name, field in new.items() if name not in old)


def _fields(schema: str | None) -> list[dict[str, Any]]:
    return list(json.loads(schema)) if schema else []


def _mode(field: Mapping[str, Any]) -> str:
    return str(field.get("mode") or "NULLABLE")


def _shrinks(before: list[Any], after: list[Any]) -> bool:
    """A grow-only number replaces its resource only when it is set before and after, and smaller after."""
    try:
        return None not in before + after and any(float(b) > float(a) for b, a in zip(before, after, strict=True))
    except (TypeError, ValueError):
        return before != after  # not numbers: any change, as a ForceNew path


def _both_set_and_different(before: list[Any], after: list[Any]) -> bool:
    """A conditional path forces a replacement only when it is set before and after, to another value."""
    return None not in before + after and before != after


def _at(inputs: Any, path: str) -> Any:
    """The value at a dotted path; `*` maps over a list (`networkInterfaces.*.nicType`)."""
    return list(_walk(inputs, path.split(".")))


def _walk(value: Any, parts: list[str]) -> Iterator[Any]:
    if not parts:
        yield value
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        for item in value if isinstance(value, list) else []:
            yield from _walk(item, rest)
    elif isinstance(value, Mapping):
        yield from _walk(value.get(head), rest)
    else:
        yield None


def _sort_at(value: Any, parts: list[str]) -> None:
    """Sort, in place, the list at a dotted path (`*` maps over a list), by each element's JSON."""
    head, rest = parts[0], parts[1:]
    if head == "*":
        for item in value if isinstance(value, list) else []:
            _sort_at(item, rest)
    elif isinstance(value, dict) and head in value:
        if rest:
            _sort_at(value[head], rest)
        elif isinstance(value[head], list):
            value[head] = sorted(value[head], key=lambda item: json.dumps(item, sort_keys=True))
