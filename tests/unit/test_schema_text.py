"""No string of the stack schema holds a control character: every field, walked from StackConfig.

The rule is written once (schema.Section); this walks every string the schema can hold (fields of every
nested model, list items, mapping keys and values) and proves each refuses C0 controls, DEL, C1 controls,
the Unicode line and paragraph separators and the bidi controls, at the exact path a user would edit,
with the value shown escaped. A field of a kind the walk does not know fails the walk: extend it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from cnctl.config import StackConfigError, parse
from cnctl.config.schema import StackConfig
from cnctl.config.values import control_character

# A sample of each class: C0 (newline, CR, tab, NUL, ESC), DEL, C1 (NEL, CSI), U+2028/U+2029, bidi controls
# (RLO, LRI, RLM, ALM), a zero-width format character (the BOM).
FORBIDDEN = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202e", "\u2066",
             "\u200f", "\u061c", "\ufeff"]

Path = tuple[str | int, ...]
KEY = "key"  # the mapping key the walk writes where a mapping's value is tested


def _is_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    return typing.get_origin(annotation) is Literal and all(isinstance(arg, str) for arg in typing.get_args(annotation))


def string_slots(annotation: Any, path: Path) -> Iterator[tuple[Path, str]]:
    """(path, "value" | "key") for every string a value of `annotation` holds at `path`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_text(annotation):
        yield path, "value"
    elif origin is typing.Annotated:
        yield from string_slots(args[0], path)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from string_slots(arg, path)
    elif origin is list:
        yield from string_slots(args[0], (*path, 0))
    elif origin is dict:
        if not _is_text(args[0]):
            raise TypeError(f"{'.'.join(map(str, path))}: mapping keys of {args[0]} are not walked; extend the walk")
        yield path, "key"
        yield from string_slots(args[1], (*path, KEY))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            yield from string_slots(field.annotation, (*path, field.alias or name))
    elif annotation not in (int, float, bool, type(None)):
        raise TypeError(f"{'.'.join(map(str, path))}: {annotation} is a kind the walk does not know; extend it")


SLOTS = sorted(set(string_slots(StackConfig, ())), key=str)


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _raw(path: Path, kind: str, text: str) -> tuple[dict[str, Any], str]:
    """A raw stack holding `text` at `path` (as the value, or as a mapping key there), and its environment."""
    value: Any = {text: "x"} if kind == "key" else text
    for part in reversed(path[1:]):
        value = [value] if isinstance(part, int) else {part: value}
    if path[0] == "environment":
        return {}, value
    return {str(path[0]): value}, "dev"


def test_the_walk_reaches_every_section_and_kind() -> None:
    paths = {_dotted(path) for path, _ in SLOTS}
    assert len(SLOTS) >= 80, len(SLOTS)
    sections = {str(path[0]) for path, _ in SLOTS}
    assert sections == {field.alias or name for name, field in StackConfig.model_fields.items()}
    for expected in ("inference.bindAddress", "fleets.edge[0].camera.url", "bundle.signers[0].publicKey",
                     "gcp.zones[0]", "inference.images.key", "storage.location", "environment"):
        assert expected in paths, expected
    assert ("gcp.labels", "key") in {(_dotted(p), k) for p, k in SLOTS}


@pytest.mark.parametrize(("path", "kind"), SLOTS, ids=[f"{_dotted(p)}:{k}" for p, k in SLOTS])
def test_every_string_refuses_control_characters(path: Path, kind: str) -> None:
    where = _dotted(path)
    for char in FORBIDDEN:
        text = f"ok{char}x"
        raw, environment = _raw(path, kind, text)
        with pytest.raises(StackConfigError) as caught:
            parse(raw, environment=environment, source="Pulumi.dev.yaml")
        expected = f"{where}.{text}" if kind == "key" else where
        found = [p for p in caught.value.problems if p.path == expected and "control character" in p.message]
        assert found, (repr(char), [str(p) for p in caught.value.problems])
        line = str(found[0])
        assert control_character(line) is None and "\n" not in line, line  # shown escaped, one line
        assert repr(text)[1:-1] in line


def test_the_rule_runs_before_each_fields_own() -> None:
    """Whatever the field's type would say, the message names the control character first."""
    with pytest.raises(StackConfigError) as caught:
        parse({"inference": {"bindAddress": "::1%\n$(reboot)"}}, environment="dev", source="x")
    [problem] = [p for p in caught.value.problems if p.path == "inference.bindAddress"]
    assert str(problem) == ("inference.bindAddress: '::1%\\n$(reboot)' holds the control character U+000A (newline); "
                            "no stack value holds line breaks, tabs, escapes or bidi controls: remove it")
