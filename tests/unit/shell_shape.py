"""A shell command's structure as bash reads it: what no value spliced into it may change.

    shape(script)     the tokens of `script` without the text of the words: commands, operators, reserved words,
                      redirections, here-documents (their delimiters, whether quoted, the body's expansions), and
                      inside each word only what the shell expands there (command substitutions, parameters,
                      arithmetic, globs, tildes, braces); quoting is data. Equal for benign and hostile values when
                      every value went in quoted. Reads every script cnctl writes, the GCE startup script's quoted
                      here-documents, `[[ ]]`, arrays and arithmetic too.
    shlex_words(line) how many words shlex splits a command line into (the argv shape a reader of it sees)
    commands(script)  each simple command's words after quote removal, in order (bash's grammar, bashlex): a value
                      must be one of them, whole
    words(script)     every word of `script` (commands, `for` lists, ...) after quote removal, in order
    syntax_errors(scripts)  what `bash -n` says of them

bashlex reads a quote that starts inside a word (`--config='$(id)'`) as if it were not there, and cannot parse
here-documents, `[[` or arrays: `shape` is this module's own lexer for that reason; `commands` and `words` need
bashlex's grammar only to cut words, and builders quote the whole word (`'--config=$(id)'`).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

import bashlex
from bashlex import ast

_OPERATORS = ("<<<", ";;&", "&&", "||", ";;", ";&", "|&", "<&", ">&", ">>", "<>", ">|", "<(", ">(",
              ";", "&", "|", "(", ")", "<", ">")
_RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "for", "while", "until", "in",
             "function", "select", "{", "}", "!", "[[", "]]", "time"}
_META = " \t\n;&|()<>"


def merged(kinds: Iterable[Any]) -> tuple[Any, ...]:
    """The kinds of a word's segments with runs of literal text as one `lit` (how a word is cut is data)."""
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
        return merged(kinds)

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
    return merged(kinds)


def shape(script: str) -> Any:
    """The structure of `script` as bash reads it, without its words' text (see the module doc)."""
    return tuple(_Bash(script).tokens())


def shlex_words(line: str) -> Any:
    """shlex's view of a command line (the argv shape `shlex.split` gives): how many words."""
    try:
        return len(shlex.split(line))
    except ValueError:
        return "unbalanced quote"


def syntax_errors(scripts: Sequence[str]) -> list[str]:
    """`bash -n` over every script at once (each as a function body): the errors bash reports, [] when none."""
    if not scripts:
        return []
    body = "".join(f"__cnctl_script_{i}() {{\n{text}\n}}\n" for i, text in enumerate(scripts))
    done = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True, timeout=60, check=False)
    return [line for line in done.stderr.splitlines() if line.strip()] if done.returncode else []


def _unquoted(text: str) -> str:
    """One word's source text with its quotes removed, as a POSIX shell does (bashlex leaves some in place)."""
    found = shlex.split(text)
    assert len(found) == 1, text
    return found[0]


def commands(script: str) -> list[list[str]]:
    """The words of each simple command of `script` (quotes removed), depth first, in order."""
    found: list[list[str]] = []

    class Visitor(ast.nodevisitor):
        def visitcommand(self, node: ast.node, parts: list[ast.node]) -> None:
            found.append([_unquoted(script[part.pos[0]:part.pos[1]]) for part in parts if part.kind == "word"])

    for tree in bashlex.parse(script):
        Visitor().visit(tree)
    return found


def words(script: str) -> list[str]:
    """Every word of `script`, wherever it stands (quotes removed), in order."""
    found: list[str] = []

    class Visitor(ast.nodevisitor):
        def visitword(self, node: ast.node, word: str) -> None:
            found.append(_unquoted(script[node.pos[0]:node.pos[1]]))

    for tree in bashlex.parse(script):
        Visitor().visit(tree)
    return found
