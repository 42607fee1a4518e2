"""Reading back the YAML cnctl writes for Ansible (cnctl.ansible_yaml): `!unsafe` strings come back as Unsafe, so
a test sees which values Ansible will take literally."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from cnctl.ansible_yaml import UNSAFE_TAG, Unsafe


class _Loader(yaml.CSafeLoader):
    pass


def _construct_unsafe(loader: yaml.CSafeLoader, node: yaml.Node) -> Unsafe:
    assert isinstance(node, yaml.ScalarNode), node  # cnctl tags strings only
    return Unsafe(loader.construct_scalar(node))


_Loader.add_constructor(UNSAFE_TAG, _construct_unsafe)


def unsafe_load(text: str) -> Any:
    """The YAML `text` with every `!unsafe` string an Unsafe (plain strings stay str)."""
    return yaml.load(text, Loader=_Loader)


def string_values(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, string) of every string value in `value` (not mapping keys)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from string_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from string_values(item, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def plain_strings(text: str) -> list[str]:
    """The paths of the string values of the YAML `text` that Ansible would template: not tagged `!unsafe`, and not
    a string that reads like a number, boolean, null or date (those are quoted plain: Ansible 2.19 would read
    `!unsafe '540'` as 540)."""
    return plain_paths(unsafe_load(text))


def plain_paths(value: Any) -> list[str]:
    """`plain_strings` of a document `unsafe_load` read."""
    resolver = yaml.resolver.Resolver()
    return [path for path, item in string_values(value)
            if not isinstance(item, Unsafe) and resolver.resolve(yaml.ScalarNode, item, (True, False)) == STR]


STR = "tag:yaml.org,2002:str"
