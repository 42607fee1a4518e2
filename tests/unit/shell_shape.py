"""A shell command's structure as bash parses it (bashlex): what no value spliced into it may change.

    shape(script)     the parse tree without the text of the words: commands, operators, redirections, and inside
                      each word only its expansions ($x, $(...)); equal for benign and hostile values when every
                      value went in quoted
    commands(script)  each simple command's words after quote removal, in order: a value must be one of them,
                      whole
    words(script)     every word of `script` (commands, `for` lists, ...) after quote removal, in order

bashlex reads a quote that starts inside a word (`--config='$(id)'`) as if it were not there; builders quote the
whole word (`'--config=$(id)'`), which bash reads the same way.
"""

from __future__ import annotations

import shlex
from typing import Any

import bashlex  # type: ignore[import-untyped]
from bashlex import ast

_TEXT = {"word": ("word",), "heredoc": ("value",)}  # attributes that are a word's text, not structure


def _children(value: Any) -> list[Any]:
    if isinstance(value, ast.node):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, ast.node)]
    return []


def _shape(node: ast.node) -> tuple[Any, ...]:
    skipped = {"pos", "kind", *_TEXT.get(node.kind, ())}
    items: list[Any] = [node.kind]
    for key, value in sorted(vars(node).items()):
        if key in skipped:
            continue
        nested = _children(value)
        items.append((key, [_shape(child) for child in nested] if nested or isinstance(value, list) else value))
    return tuple(items)


def shape(script: str) -> list[tuple[Any, ...]]:
    """The structure of `script` as bash parses it, without its words' text (see the module doc)."""
    return [_shape(node) for node in bashlex.parse(script)]


def _unquoted(text: str) -> str:
    """One word's source text with its quotes removed, as a POSIX shell does (bashlex leaves some in place)."""
    words = shlex.split(text)
    assert len(words) == 1, text
    return words[0]


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
