"""The structure of what a sink renders, with the data left out: two renderings that differ only in a value have
equal shapes. A value that changes a shape became code (a new line, word, key, command or expansion).

Each parser reads its format the way the consumer on the host does, as far as structure goes:

- `unit`: systemd.syntax(7): lines end at LF, CR, CRLF or NUL; a trailing backslash continues a line; `[Section]`,
  `Key=value`; Exec* values split into words by systemd's quoting, every word's `%` specifiers and `$VAR`s kept;
- `shell`: tests/unit/shell_shape.py `shape` (words, operators, here-documents, comments, and of each word only what
  the shell expands in it); quoting is data;
- `json`, `yaml`, `python`: the parsed value with every leaf replaced by its type;
- `apt-source`: apt's one-line format; `lines`: each line as shlex splits it.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

import yaml

from cnctl.ansible_yaml import Unsafe
from tests.unit.shell_shape import commands, merged, shlex_words
from tests.unit.shell_shape import shape as shell_shape
from tests.unit.unsafe_yaml import plain_paths, unsafe_load

Shape = Any

# --- systemd units ---------------------------------------------------------------------------------------

_EXEC_KEY = re.compile(r"^Exec[A-Za-z]*$")
_UNIT_EOL = re.compile(r"\r\n|\r|\n|\x00")


def unit_lines(text: str) -> list[str]:
    """The logical lines of a unit file: continuation lines joined (systemd replaces `\\<EOL>` by a space),
    comment lines inside a continuation dropped."""
    out: list[str] = []
    pending: str | None = None
    for raw in _UNIT_EOL.split(text):
        line = raw.strip()
        if pending is not None and line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = (pending or "") + line[:-1] + " "
            continue
        out.append((pending or "") + line)
        pending = None
    if pending is not None:
        out.append(pending)
    return out


def _unit_segments(word: str, exec_line: bool) -> tuple[str, ...]:
    """What systemd expands in one word: `%x` specifiers (not `%%`) and, on Exec lines, `$VAR`/`${VAR}`."""
    kinds: list[str] = []
    i = 0
    while i < len(word):
        ch = word[i]
        if ch == "%" and word[i + 1 : i + 2] == "%":
            kinds.append("lit")
            i += 2
        elif ch == "%":
            kinds.append("specifier")
            i += 2
        elif exec_line and ch == "$" and word[i + 1 : i + 2] == "$":
            kinds.append("lit")
            i += 2
        elif exec_line and ch == "$" and re.match(r"\{?[A-Za-z_]", word[i + 1 :]):
            kinds.append("variable")
            match = re.match(r"\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*", word[i + 1 :])
            i += 1 + (match.end() if match else 1)
        else:
            kinds.append("lit")
            i += 1
    return merged(kinds)


def _unit_words(value: str) -> list[str] | None:
    """An Exec value split as systemd splits it (quotes and C escapes); None for an unbalanced quote."""
    try:
        lexer = shlex.shlex(value, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        lexer.commenters = ""
        return list(lexer)
    except ValueError:
        return None


def _words_shape(value: str, exec_line: bool) -> Any:
    words = _unit_words(value)
    return "unbalanced quote" if words is None else tuple(_unit_segments(w, exec_line) for w in words)


def unit_shape(text: str) -> Shape:
    shape: list[Any] = []
    section = ""
    for line in unit_lines(text):
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line
            shape.append(("section", section))
            continue
        key, sep, value = line.partition("=")
        if not sep:
            shape.append(("invalid line", section))
            continue
        key, value = key.strip(), value.strip()
        exec_line = bool(_EXEC_KEY.match(key))
        if exec_line:
            prefix = re.match(r"^[-@:+!|]*", value).group()  # type: ignore[union-attr]
            shape.append((section, key, prefix, _words_shape(value[len(prefix):], True)))
        elif key == "Environment":
            shape.append((section, key, _words_shape(value, False)))
        else:
            shape.append((section, key, _unit_segments(value, False)))
    return tuple(shape)


def command_lengths(text: str) -> Shape:
    """bash's grammar's view of a command line (tests/unit/shell_shape.py `commands`, bashlex): how many words each
    simple command has; None where bashlex cannot read it."""
    try:
        return tuple(len(words) for words in commands(text))
    except Exception:  # noqa: BLE001  (bashlex raises its own errors, and others, on what it lacks)
        return None


# --- data formats ------------------------------------------------------------------------------------------


def value_shape(value: Any) -> Shape:
    """A parsed document with its leaves replaced by their types (mapping keys kept: they are the structure)."""
    if isinstance(value, dict):
        return ("map", tuple(sorted((str(k), value_shape(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("list", tuple(value_shape(v) for v in value))
    return "str" if isinstance(value, Unsafe) else type(value).__name__


def json_shape(text: str) -> Shape:
    try:
        return value_shape(json.loads(text))
    except ValueError as exc:
        return ("not JSON", str(exc).split(":")[0])


def load_yaml(text: str) -> Any:
    """YAML as Ansible reads an inventory or extra vars: an `!unsafe` string an Unsafe (tests/unit/unsafe_yaml.py)."""
    return unsafe_load(text)


def yaml_shape(text: str) -> Shape:
    """The document's shape (an `!unsafe` string or a plain one that reads as a number is one `str`), and the
    strings Ansible would template: none may appear."""
    try:
        document = load_yaml(text)
    except yaml.YAMLError as exc:
        return ("not YAML", type(exc).__name__)
    return value_shape(document), tuple(plain_paths(document))


def python_shape(text: str) -> Shape:
    """A generated Python module of literals: each assignment's target and its value's shape."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return ("not Python", exc.msg)
    shape: list[Any] = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            try:
                shape.append((ast.unparse(node.targets[0]), value_shape(ast.literal_eval(node.value))))
            except ValueError:
                shape.append((ast.unparse(node.targets[0]), "not a literal"))
        else:
            shape.append(type(node).__name__)
    return tuple(shape)


def lines_shape(text: str) -> Shape:
    """Each non-comment line as shlex splits it: how many fields (or an unbalanced quote)."""
    return tuple(shlex_words(line) for line in re.split(r"\r\n|\r|\n", text) if line.strip() and not line.startswith("#"))


def apt_source_shape(text: str) -> Shape:
    """apt's one-line sources: type, option names, and how many fields follow (URI, suite, components). apt ends a
    line at `#` (apt-pkg/sourcelist.cc strips comments anywhere in the line)."""
    shape: list[Any] = []
    for line in re.split(r"\r\n|\r|\n", text):
        line = line.split("#", 1)[0]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        kind, _, rest = line.strip().partition(" ")
        options: tuple[str, ...] = ()
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            options = tuple(part.split("=", 1)[0] for part in inside.split())
        shape.append((kind, options, len(rest.split())))
    return tuple(shape)


def argv_shape(argv: Sequence[str]) -> Shape:
    """A command line run without a shell: only its length is structure (every element is one argument)."""
    return len(argv)


SHAPES = {"unit": unit_shape, "shell": shell_shape, "json": json_shape, "yaml": yaml_shape, "python": python_shape,
          "lines": lines_shape, "apt-source": apt_source_shape}
