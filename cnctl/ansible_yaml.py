"""YAML for Ansible in which every string is data: each one tagged `!unsafe`, so Jinja never evaluates it.

    text = unsafe_dump({"all": {"hosts": {"h1": {"cn_camera_url": "{{ lookup('pipe', 'id') }}"}}}})
    # cn_camera_url: !unsafe '{{ lookup(''pipe'', ''id'') }}'

Ansible templates every string it reads from an inventory or an extra-vars file; a stack value holding `{{ }}`
or `{% %}` would run on the controller (a `pipe` lookup is a shell). Tagged `!unsafe`, a string is used as it
is, wherever a role puts it (a template, a module argument, a connection setting). Mapping keys stay plain (host,
group and variable names are names, never templated); numbers, booleans and None keep their type, and so does a
string that reads like one (`'540'`, `'yes'`: quoted as plain YAML, since Ansible would read `!unsafe '540'` as
540); such a string holds no template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

UNSAFE_TAG = "!unsafe"


class Unsafe(str):
    """A string Ansible must take literally (dumped with the `!unsafe` tag)."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # every value written out where it is used: no anchors for a reader to follow


STR_TAG = "tag:yaml.org,2002:str"


def reads_as_text(dumper: yaml.resolver.BaseResolver, value: str) -> bool:
    """Would `value`, written plain, read back as a string? Ansible (2.19) resolves an `!unsafe` scalar as if it
    were plain, quotes or not: `!unsafe '540'` reads as the number 540, `!unsafe 'yes'` as True."""
    return dumper.resolve(yaml.ScalarNode, value, (True, False)) == STR_TAG


def _represent_unsafe(dumper: yaml.SafeDumper, value: Unsafe) -> yaml.ScalarNode:
    if not reads_as_text(dumper, value):  # a number, boolean, null or date as text: quoted, and no template in it
        return dumper.represent_str(str(value))
    return dumper.represent_scalar(UNSAFE_TAG, str(value))


_Dumper.add_representer(Unsafe, _represent_unsafe)


def mark_unsafe(value: Any) -> Any:
    """`value` with every string in it (not mapping keys) an Unsafe; tuples become lists, as YAML has only lists."""
    if isinstance(value, str):
        return Unsafe(value)
    if isinstance(value, Mapping):
        return {key: mark_unsafe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mark_unsafe(item) for item in value]
    return value


def dump(data: Any) -> str:
    """`data` as block-style YAML, in its own key order, its Unsafe strings tagged `!unsafe` (other strings plain)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def unsafe_dump(data: Mapping[str, Any]) -> str:
    """`data` as block-style YAML, in its own key order, every string tagged `!unsafe`."""
    return dump(mark_unsafe(data))


def comment_line(text: str) -> str:
    """`text` as one `# ` comment line (of YAML, Python or shell): control characters (a newline would end the
    comment), backslashes and anything outside ASCII escaped as Python writes them."""
    return "# " + text.encode("unicode_escape").decode("ascii") + "\n"
