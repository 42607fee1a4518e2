"""The structure of what a sink renders, with the data left out: two renderings that differ only in a value have
equal shapes. A value that changes a shape became code (a new line, word, key, command or expansion).

Each parser reads its format the way the consumer on the host does, as far as structure goes:

- `unit`: systemd.syntax(7): lines end at LF, CR, CRLF or NUL; a trailing backslash continues a line; `[Section]`,
  `Key=value`; Exec* values split into words by systemd's quoting, every word's `%` specifiers and `$VAR`s kept;
- `shell`: a bash lexer (words, operators, here-documents, comments) keeping of each word only what the shell
  expands in it (command substitutions, parameters, arithmetic, globs, tildes, braces); quoting is data;
- `json`, `yaml`, `python`: the parsed value with every leaf replaced by its type;
- `apt-source`: apt's one-line format; `lines`: each line as shlex splits it.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

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
    return _merged(kinds)


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


# --- bash ------------------------------------------------------------------------------------------------

_OPERATORS = ("<<<", ";;&", "&&", "||", ";;", ";&", "|&", "<&", ">&", ">>", "<>", ">|", "<(", ">(",
              ";", "&", "|", "(", ")", "<", ">")
_RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "for", "while", "until", "in",
             "function", "select", "{", "}", "!", "[[", "]]", "time"}
_META = " \t\n;&|()<>"


def _merged(kinds: Iterable[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for kind in kinds:
        if kind == "lit" and out and out[-1] == "lit":
            continue
        out.append(kind)
    return tuple(out)


class _Bash:
    """A bash lexer good enough for structure: see the module doc. `stop_at_paren`: lex the inside of `$( )`."""

    def __init__(self, text: str, pos: int = 0) -> None:
        self.s, self.i = text, pos
        self.heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, quoted, strip tabs)

    def tokens(self, stop_at_paren: bool = False) -> list[Any]:
        out: list[Any] = []
        depth = 0
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in " \t":
                self.i += 1
            elif ch == "\\" and self.s[self.i + 1 : self.i + 2] == "\n":
                self.i += 2
            elif ch == "\n":
                self.i += 1
                out.append(("op", "\n"))
                out += self._bodies()
            elif ch == "#":
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end < 0 else end
            elif stop_at_paren and ch == ")" and depth == 0:
                self.i += 1
                return out
            elif self.s.startswith(("<<-", "<<"), self.i) and not self.s.startswith("<<<", self.i):
                strip = self.s.startswith("<<-", self.i)
                self.i += 3 if strip else 2
                while self.i < len(self.s) and self.s[self.i] in " \t":
                    self.i += 1
                start = self.i
                self._word_segments()
                raw = self.s[start:self.i]
                quoted = any(q in raw for q in "'\"\\")
                self.heredocs.append((re.sub(r"['\"\\]", "", raw), quoted, strip))
                out.append(("heredoc-op", "<<-" if strip else "<<", quoted))
            elif (op := next((o for o in _OPERATORS if self.s.startswith(o, self.i)), None)) is not None:
                if op in ("<(", ">("):
                    out.append(("word", (("procsub", tuple(self._sub())),)))
                    continue
                self.i += len(op)
                depth += op == "("
                depth -= op == ")"
                out.append(("op", op))
            else:
                start = self.i
                segments = self._word_segments()
                word = self.s[start:self.i]
                out.append(("reserved", word) if word in _RESERVED else ("word", segments))
        if stop_at_paren:
            out.append(("unterminated", "$("))
        return out

    def _sub(self) -> list[Any]:
        """The tokens of `$(...)`, `<(...)` from after its opening parenthesis to its closing one."""
        self.i += 2
        inner = _Bash(self.s, self.i)
        found = inner.tokens(stop_at_paren=True)
        self.i = inner.i
        return found

    def _bodies(self) -> list[Any]:
        """The here-documents started on the line that just ended: each body up to its delimiter line."""
        out: list[Any] = []
        for delimiter, quoted, strip in self.heredocs:
            lines: list[str] = []
            while True:
                if self.i >= len(self.s):
                    out.append(("heredoc-unterminated", delimiter))
                    break
                end = self.s.find("\n", self.i)
                end = len(self.s) if end < 0 else end
                line = self.s[self.i:end]
                self.i = end + 1
                if (line.lstrip("\t") if strip else line) == delimiter:
                    out.append(("heredoc", quoted, () if quoted else _expansions("\n".join(lines))))
                    break
                lines.append(line)
        self.heredocs = []
        return out

    def _word_segments(self) -> tuple[Any, ...]:
        kinds: list[Any] = []
        braces: list[str] = []
        first = True
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in _META:
                break
            if ch == "\\":
                self.i += 2
                kinds.append("lit")
            elif ch == "'":
                end = self.s.find("'", self.i + 1)
                self.i = len(self.s) if end < 0 else end + 1
                kinds.append("lit" if end >= 0 else "unterminated-quote")
            elif ch == "$" and self.s[self.i + 1 : self.i + 2] == "'":
                self.i += 2
                while self.i < len(self.s) and self.s[self.i] != "'":
                    self.i += 2 if self.s[self.i] == "\\" else 1
                self.i += 1
                kinds.append("lit")
            elif ch == '"':
                kinds += self._double_quoted()
            elif ch in "$`":
                kinds.append(self._expansion())
            elif ch in "*?[":
                kinds.append("glob")
                self.i += 1
            elif ch == "~" and first:
                kinds.append("tilde")
                self.i += 1
            elif ch in "{,}":
                braces.append(ch)
                kinds.append("lit")
                self.i += 1
            else:
                kinds.append("lit")
                self.i += 1
            first = False
        if "{" in braces and "}" in braces and "," in braces[braces.index("{"):]:
            kinds.append("brace")
        return _merged(kinds)

    def _double_quoted(self) -> list[Any]:
        self.i += 1
        kinds: list[Any] = []
        while self.i < len(self.s) and self.s[self.i] != '"':
            ch = self.s[self.i]
            if ch == "\\":
                self.i += 2
                kinds.append("lit")
            elif ch in "$`":
                kinds.append(self._expansion())
            else:
                self.i += 1
                kinds.append("lit")
        if self.i >= len(self.s):
            kinds.append("unterminated-quote")
        self.i += 1
        return kinds

    def _expansion(self) -> Any:
        """At `$` or a backtick: what the shell expands there ("lit" for a lone `$`)."""
        s, i = self.s, self.i
        if s[i] == "`":
            end = i + 1
            while end < len(s) and s[end] != "`":
                end += 2 if s[end] == "\\" else 1
            self.i = end + 1
            return ("cmdsub", tuple(_Bash(s[i + 1:end]).tokens()))
        if s.startswith("$((", i):
            depth, j = 0, i + 1
            while j < len(s):
                depth += s[j] == "("
                depth -= s[j] == ")"
                j += 1
                if depth == 0:
                    break
            self.i = j
            return "arith"
        if s.startswith("$(", i):
            return ("cmdsub", tuple(self._sub()))
        if s.startswith("${", i):
            depth, j = 0, i + 1
            while j < len(s):
                if s[j] == "\\":
                    j += 2
                    continue
                depth += s[j] == "{"
                depth -= s[j] == "}"
                j += 1
                if depth == 0:
                    break
            self.i = j
            return "param"
        match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])", s[i:])
        if match:
            self.i = i + match.end()
            return "param"
        self.i = i + 1
        return "lit"


def _expansions(body: str) -> tuple[Any, ...]:
    """What the shell expands in an unquoted here-document's body (it expands $ and backticks only)."""
    lexer = _Bash(body)
    kinds: list[Any] = []
    while lexer.i < len(body):
        if body[lexer.i] == "\\":
            lexer.i += 2
            kinds.append("lit")
        elif body[lexer.i] in "$`":
            kinds.append(lexer._expansion())
        else:
            kinds.append("\n" if body[lexer.i] == "\n" else "lit")
            lexer.i += 1
    return _merged(kinds)


def shell_shape(text: str) -> Shape:
    """The command structure of a bash script or command line, without its data."""
    return tuple(_Bash(text).tokens())


def shell_words(text: str) -> Shape:
    """shlex's view of a command line (the argv shape the brief's `shlex.split` check names): how many words."""
    try:
        return len(shlex.split(text))
    except ValueError:
        return "unbalanced quote"


def bash_syntax_errors(scripts: Sequence[str]) -> list[str]:
    """`bash -n` over every script at once (each as a function body): the errors bash reports, [] when none."""
    if not scripts:
        return []
    body = "".join(f"__cnctl_sink_{i}() {{\n{text}\n}}\n" for i, text in enumerate(scripts))
    done = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True, timeout=60, check=False)
    return [line for line in done.stderr.splitlines() if line.strip()] if done.returncode else []


def bashlex_shape(text: str) -> Shape:
    """bashlex's command structure (the kinds of its nodes in order), or None where bashlex cannot parse the text
    (it lacks `<<'EOF'`, `[[`, arrays and arithmetic, which the startup script has: `shell_shape` covers those)."""
    import bashlex  # type: ignore[import-untyped]

    try:
        parts = bashlex.parse(text)
    except Exception:  # noqa: BLE001  (bashlex raises its own errors, and others, on what it lacks)
        return None
    kinds: list[Any] = []

    class Visitor(bashlex.ast.nodevisitor):
        def visitnode(self, node: Any) -> None:
            kinds.append(node.kind)

    for part in parts:
        Visitor().visit(part)
    return tuple(kinds)


# --- data formats ------------------------------------------------------------------------------------------


def value_shape(value: Any) -> Shape:
    """A parsed document with its leaves replaced by their types (mapping keys kept: they are the structure)."""
    if isinstance(value, dict):
        return ("map", tuple(sorted((str(k), value_shape(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("list", tuple(value_shape(v) for v in value))
    return type(value).__name__


def json_shape(text: str) -> Shape:
    try:
        return value_shape(json.loads(text))
    except ValueError as exc:
        return ("not JSON", str(exc).split(":")[0])


class _UnsafeLoader(yaml.CSafeLoader):
    """YAML as Ansible reads an inventory: `!unsafe` is a string that Jinja never evaluates."""


def _unsafe(loader: yaml.CSafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_UnsafeLoader.add_constructor("!unsafe", _unsafe)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UnsafeLoader)


def yaml_shape(text: str) -> Shape:
    try:
        return value_shape(load_yaml(text))
    except yaml.YAMLError as exc:
        return ("not YAML", type(exc).__name__)


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
    return tuple(shell_words(line) for line in re.split(r"\r\n|\r|\n", text) if line.strip() and not line.startswith("#"))


def apt_source_shape(text: str) -> Shape:
    """apt's one-line sources: type, option names, and how many fields follow (URI, suite, components)."""
    shape: list[Any] = []
    for line in re.split(r"\r\n|\r|\n", text):
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
