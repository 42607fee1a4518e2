"""The sink registry is complete and current (issue 20, items 3-4): every template and every command builder of the
product is a sink of tests/unit/sinks.py, every sink is rendered by the suite's stacks, every string field has a
value in them, docs/sinks.md is what tools/sink_map.py writes today, and the parsers see what the issue found.

What counts as a command builder (checked mechanically, over cnctl/, deploy/, deploy.py, hosts/ and the roles'
filter plugins; cnctl/sandbox is left out: it is test infrastructure that runs the local stack on the
developer's or CI's machine, DESIGN.md "Layers point one way"):

- a function that calls `shlex.quote` or `shlex.join` (it splices text into a shell command);
- a function named `*_command`, `*_script` or `*_argv`, and the `command` method of a class (pyinfra facts: the
  shell text a fact runs on a host);
- a pyinfra `@operation` (its generator yields the shell commands a host runs).

A new one fails `test_every_command_builder_is_a_registered_sink` until tests/unit/sinks.py lists it in the
`builders` of a sink that renders it (HOST_COMMANDS for the layers' operations and facts).
"""

from __future__ import annotations

import ast
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnctl.ansible_yaml import Unsafe
from cnctl.errors import UsageProblem
from cnctl.inventory import InventoryHost, Ssh
from cnctl.paths import REPO_ROOT, TEMPLATES_DIR
from cnctl.rollout import health_command
from tests.unit import shell_shape, sink_recorder, sink_shapes, sinks
from tests.unit.render_parity import refused_by_ansible
from tools import sink_map

SCANNED = ("cnctl", "cnhost", "deploy", "hosts", "deploy.py", "collection")
LEFT_OUT = ("cnctl/sandbox/",)
NAMED = ("_command", "_script", "_argv")


# --- which code builds commands --------------------------------------------------------------------------------


def _python_files() -> Iterator[Path]:
    for top in SCANNED:
        path = REPO_ROOT / top
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in files:
            relative = str(file.relative_to(REPO_ROOT))
            if not relative.startswith(LEFT_OUT):
                yield file


def _calls_shlex(node: ast.AST) -> bool:
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            func = call.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "shlex" \
                    and func.attr in ("quote", "join"):
                return True
    return False


def _is_operation(node: ast.FunctionDef) -> bool:
    return any((isinstance(d, ast.Call) and getattr(d.func, "id", None) == "operation") or getattr(d, "id", None) == "operation"
               for d in node.decorator_list)


def command_builders() -> set[str]:
    """`path:qualname` of every function the rule in the module doc names."""
    found: set[str] = set()

    def visit(node: ast.AST, path: str, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, path, f"{prefix}{child.name}.", True)
            elif isinstance(child, ast.FunctionDef):
                name = f"{prefix}{child.name}"
                if (_calls_shlex(child) or child.name.endswith(NAMED) or (in_class and child.name == "command")
                        or _is_operation(child)):
                    found.add(f"{path}:{name}")
                visit(child, path, f"{name}.<locals>.", False)

    for file in _python_files():
        visit(ast.parse(file.read_text()), str(file.relative_to(REPO_ROOT)), "", False)
    return found


def registered() -> set[str]:
    return {b for s in sinks.SINKS for b in s.builders}


def test_every_command_builder_is_a_registered_sink() -> None:
    missing = sorted(command_builders() - registered())
    assert not missing, ("command builders no sink of tests/unit/sinks.py lists (add each to the `builders` of the "
                         f"sink that renders it, HOST_COMMANDS for a layer's operation or fact): {missing}")


def test_every_template_is_a_registered_sink() -> None:
    templates = {f"templates/{p.relative_to(TEMPLATES_DIR)}" for p in TEMPLATES_DIR.rglob("*.j2")}
    templates |= {str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("roles/*/templates/**/*") if p.is_file()}
    assert templates - registered() == set(), "templates no sink renders: list them in tests/unit/sinks.py"


def _defined() -> set[str]:
    """`path:qualname` of every function and method of the scanned files, and every template."""
    out = {f"templates/{p.relative_to(TEMPLATES_DIR)}" for p in TEMPLATES_DIR.rglob("*.j2")}

    def visit(node: ast.AST, path: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                out.add(f"{path}:{prefix}{child.name}")
                visit(child, path, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef):
                out.add(f"{path}:{prefix}{child.name}")
                visit(child, path, f"{prefix}{child.name}.<locals>.")

    for file in _python_files():
        visit(ast.parse(file.read_text()), str(file.relative_to(REPO_ROOT)), "")
    return out


def test_every_registered_builder_exists() -> None:
    assert registered() - _defined() == set(), "tests/unit/sinks.py names builders the code no longer has"


# --- the suite's stacks reach every sink, with every field set ----------------------------------------------------


def _refusing_stack() -> Any:
    """A base whose model has no sha256: the model layer refuses every host (deploy/steps.py `refused`)."""
    fld = next(f for f in sinks.string_fields() if f.path == "model.sha256")
    loc = sinks.place("site", fld)
    assert loc is not None
    return sinks.bypassing(sinks.base("site"), loc, None)


def _rendered(profile: set[tuple[str, str]] | None = None) -> dict[str, int]:
    """sink -> outputs over every base and the refusing stack (the slow sinks over the bases only);
    with `profile`, the (file, qualname) of every function called while the fast sinks render."""
    counts = dict.fromkeys(sinks.BY_NAME, 0)
    fast = [s for s in sinks.SINKS if not s.slow]

    def called(frame: Any, event: str, _arg: Any) -> None:
        if event == "call" and profile is not None:
            profile.add((frame.f_code.co_filename, frame.f_code.co_qualname))

    for cfg in [*(sinks.base(n) for n in sinks.BASES), _refusing_stack()]:
        sc = sinks.scene(cfg)
        sys.setprofile(called)
        try:
            rendered = sinks.render_all(sc, fast)
        finally:
            sys.setprofile(None)
        for name, outputs in rendered.items():
            counts[name] += len(outputs)
    for name in sinks.BASES:
        for sink, outputs in sinks.render_all(sinks.scene(sinks.base(name)), [s for s in sinks.SINKS if s.slow]).items():
            counts[sink] += len(outputs)
    return counts


def test_every_sink_is_rendered_and_every_registered_builder_runs() -> None:
    profile: set[tuple[str, str]] = set()
    counts = _rendered(profile)
    assert [name for name, n in counts.items() if not n] == [], "sinks no stack of sinks.BASES renders"
    ran = {f"{Path(file).resolve().relative_to(REPO_ROOT)}:{qualname}" for file, qualname in profile
           if Path(file).resolve().is_relative_to(REPO_ROOT)}
    fast = {b for s in sinks.SINKS if not s.slow for b in s.builders if not b.startswith("templates/")}
    slow_only = {b for s in sinks.SINKS if s.slow for b in s.builders} - fast  # called by name in sinks.py
    idle = {b for b in fast - slow_only if b not in ran and not any(r.startswith(f"{b}.") for r in ran)}  # a class: its methods
    assert idle == set(), "registered builders the sinks never run: their sink renders other code"


def test_every_string_field_has_a_value_in_a_base() -> None:
    unset = [f.path for f in sinks.string_fields() if all(sinks.place(n, f) is None for n in sinks.BASES)]
    assert unset == [], f"give these fields a value in a stack of tests/unit/sinks.py BASES: {unset}"


@pytest.mark.parametrize("name", sinks.BASES)
def test_each_base_renders_every_host_without_a_refusal(name: str) -> None:
    sc = sinks.scene(sinks.base(name))
    assert sc.hosts and sc.refused == {}


def test_the_recorder_applies_the_layers_deploy_py_applies() -> None:
    from deploy import LAYERS

    assert sink_recorder.LAYERS == tuple(LAYERS)


def test_docs_sinks_md_is_current() -> None:
    text = sink_map.render(sinks.traces())
    assert sink_map.DOC.read_text() == text, "docs/sinks.md is stale: run .venv/bin/python tools/sink_map.py"


def test_the_map_names_the_fields_of_the_issue() -> None:
    reach = {t.field.path: t.sinks for t in sinks.traces()}
    assert "rollout health command (cnctl model rollout/rollback)" in reach["inference.bindAddress"]
    assert "templates/systemd/circularnet-triton.service.j2" in reach["inference.bindAddress"]
    assert sinks.ANSIBLE_INVENTORY in reach["fleets.edge[].address"]
    assert sinks.ANSIBLE_INVENTORY in reach["fleets.edge[].camera.url"]
    assert "GCE startup script of the worker group (pull bootstrap)" in reach["bundle.signers[].publicKey"]


# --- the parsers see a changed structure, and only that ------------------------------------------------------------


# The rollout's health command as the issue found it: the address spliced in unquoted (cnctl/rollout.py now
# passes it as one shlex-quoted word, and refuses a zone id that is no interface name).
SPLICED = "sudo -n python3 /usr/local/lib/circularnet/model_serve.py status --url http://[{}]:8000 --name circularnet"


def test_the_shell_parser_sees_a_command_substitution_that_shlex_does_not() -> None:
    """The issue's first path: a zone id holding `$(...)`, unquoted in the rollout's health command."""
    hostile, benign = SPLICED.format("::1%$(id)"), SPLICED.format("::1%abcd")
    assert shell_shape.shlex_words(hostile) == shell_shape.shlex_words(benign)
    assert shell_shape.shape(hostile) != shell_shape.shape(benign)


def test_the_health_command_refuses_the_issues_zone_id() -> None:
    host = InventoryHost("a", "edge", Ssh("10.0.0.1", "u"), {"cn_inference_bind_address": "::1%$(id)"})
    with pytest.raises(UsageProblem, match="zone id"):
        health_command(host)


@pytest.mark.parametrize("value", ["a b", "a;b", "$(x)", "`x`", "a'b", 'a"b', "*", "{a,b}", "~x", "a\nb", "$HOME"])
def test_quoted_data_keeps_the_shell_structure_and_unquoted_data_does_not(value: str) -> None:
    line = "echo {} done"
    assert shell_shape.shape(line.format(shlex.quote(value))) == shell_shape.shape(line.format("plain"))
    assert shell_shape.shape(line.format(value)) != shell_shape.shape(line.format("plain"))


def test_a_heredoc_terminator_in_the_data_ends_the_heredoc() -> None:
    """The issue's fourth path: a signer's key comment closing `<<'CNCTL_ALLOWED_SIGNERS'`."""
    script = "cat >f <<'CNCTL_ALLOWED_SIGNERS'\n{}\nCNCTL_ALLOWED_SIGNERS\necho done\n"
    benign = shell_shape.shape(script.format("release@plant ssh-ed25519 AAAA comment"))
    assert shell_shape.shape(script.format("x $(id) `id` 'q'")) == benign  # a quoted heredoc is data
    assert shell_shape.shape(script.format("x\nCNCTL_ALLOWED_SIGNERS\nid")) != benign


UNIT = "[Service]\nExecStart=/usr/bin/tritonserver --http-address={}\nDescription=Triton {}\n"


@pytest.mark.parametrize("value", ["127.0.0.1\nExecStartPre=+/bin/sh -c id", "a b", "%n", "$HOME", "${HOME}",
                                   "x\rExecStartPre=+id", "x\x00ExecStartPre=+id", "x\\\nExecStartPre=+id", '"'])
def test_the_unit_parser_sees_a_new_line_word_specifier_or_variable(value: str) -> None:
    """The issue's second path: a bind address with a newline renders extra ExecStartPre= lines."""
    assert sink_shapes.unit_shape(UNIT.format(value, "x")) != sink_shapes.unit_shape(UNIT.format("127.0.0.1", "x"))


def test_the_unit_parser_reads_escaped_values_as_data() -> None:
    assert sink_shapes.unit_shape(UNIT.format('"a b"', "100%% $$HOME")) == \
        sink_shapes.unit_shape(UNIT.format("127.0.0.1", "x"))


@pytest.mark.parametrize("uri", ["https://m/a b", "https://m/a\nb", "https://m/a#b", "https://m/a\u2028b"])
def test_an_apt_source_field_that_is_not_one_word_is_refused_by_pyinfras_rendering(uri: str) -> None:
    refused = sinks.rendered_or_refused("apt/source.list.j2", {"description": "d", "sources": [
        {"uri": uri, "suite": "/", "signed_by": "/k.asc"}]})
    assert isinstance(refused, sinks.Refusal) and repr(uri)[1:-1] in refused  # shown escaped


def test_ansible_refuses_the_apt_source_field_pyinfra_refuses(tmp_path: Path) -> None:
    """One template, two engines: Ansible's template module stops on the same value (no file is written)."""
    output = refused_by_ansible([("apt/source.list.j2", {"description": "d", "sources": [
        {"uri": Unsafe("https://m/a#b"), "suite": "/", "signed_by": "/k.asc"}]})], tmp_path)
    assert "apt source field refused" in output and "https://m/a#b" in output
    assert not (tmp_path / "0.out").exists()


@pytest.mark.parametrize("uri", ["https://m/a b", "https://m/a#b", "https://m/a\nb"])
def test_the_apt_parser_sees_a_url_split_in_two_or_cut_by_a_comment(uri: str) -> None:
    line = "deb [signed-by=/k.asc] {} r36.4 main\n"
    assert sink_shapes.apt_source_shape(line.format(uri)) != sink_shapes.apt_source_shape(line.format("https://m/ab"))
