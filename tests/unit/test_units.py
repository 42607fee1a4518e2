"""Stack values in systemd units stay data (cnctl/unitescape.py): the two escapes as data tables, every template's
interpolations through them, the same filters in both engines, and hostile values read back by systemd's own
parser with the unit's keys and command lines unchanged. The Triton container's `docker run` as systemd runs it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateRuntimeError

from cnctl import unitescape
from cnctl.paths import TEMPLATES_DIR
from deploy.rules import FILTER_PREFIX
from deploy.steps import UnitFilters
from tests.unit import (
    test_engines,
    test_monitoring_layer,
    test_monitoring_site,
    test_pipeline_layer,
    test_pull_layer,
    test_verify_layer,
)
from tests.unit.collection_tree import collections_path
from tests.unit.render_parity import by_ansible, render
from tests.unit.systemd_units import command_lines, load, settings

UNIT_TEMPLATES = sorted(p.relative_to(TEMPLATES_DIR).as_posix() for p in (TEMPLATES_DIR / "systemd").glob("*.j2"))
# Every rendering of a unit the layers' tests give, with the values real hosts give.
UNIT_RENDERINGS = [(src, variables) for module in (test_engines, test_pipeline_layer, test_verify_layer, test_pull_layer,
                                                      test_monitoring_layer, test_monitoring_site)
                   for src, variables in module.RENDERINGS if src.startswith("systemd/")]

# (value, what cnctl_exec_arg writes): systemd.service(5) "Command lines", systemd.syntax(7) "Quoting"
EXEC_GOOD = [
    ("/usr/bin/docker", "/usr/bin/docker"),
    ("127.0.0.1", "127.0.0.1"),
    ("::1", "::1"),
    ("nvcr.io/nvidia/tritonserver:24.03-py3", "nvcr.io/nvidia/tritonserver:24.03-py3"),
    (8000, "8000"),
    ("/opt/my models", "/opt/my\\smodels"),
    ("a;b", "a\\x3bb"),
    (";", "\\x3b"),
    ("%h", "%%h"),
    ("$HOME ${PATH} $$", "$$HOME\\s$${PATH}\\s$$$$"),
    ("back\\slash", "back\\\\slash"),
    ("trailing\\", "trailing\\\\"),
    ("\"double\" 'single'", "\\\"double\\\"\\s\\'single\\'"),
    ("+/bin/sh", "+/bin/sh"),  # a prefix only in the command's place, where only absolute paths are written
    ("--privileged", "--privileged"),  # one argument all the same
    ("modèle", "modèle"),
]
# (value, what cnctl_unit_value writes): any other setting
VALUE_GOOD = [
    ("/var/lib/circularnet", "/var/lib/circularnet"),
    ("circularnet-triton.service", "circularnet-triton.service"),
    ("10.20.0.5", "10.20.0.5"),
    ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
    ("5min", "5min"),
    (300, "300"),
    ("%n", "%%n"),
    ("a;b$c", "a;b$c"),
    ("char-nvidia*", "char-nvidia*"),
]
CONTROL = ["a\nExecStartPre=+/bin/sh", "a\rb", "a\x00b", "a\tb", "a\x1b[31mb", "a\x7fb", "a\x85b", "a\u2028b", "a\u2029b"]
NOT_TEXT = [None, True, 1.5, ["a"], {"a": 1}, b"bytes"]
VALUE_BAD = ["", *CONTROL, *NOT_TEXT, "a b", " a", "a ", "a\"b", "a'b", "a\\b", "a\\", "-/opt/x", "+/opt/x", "!/opt/x",
             "|/opt/x", "~/x"]
EXEC_BAD = ["", *CONTROL, *NOT_TEXT]


@pytest.mark.parametrize(("value", "written"), EXEC_GOOD)
def test_exec_arg_escapes_what_a_command_line_reads_as_syntax(value: Any, written: str) -> None:
    assert unitescape.exec_arg(value) == written


@pytest.mark.parametrize(("value", "written"), [("/usr/bin/docker", "/usr/bin/docker"), ("/opt/a b$", "/opt/a\\sb$$")])
def test_a_command_is_an_absolute_path_escaped_as_any_argument(value: str, written: str) -> None:
    assert unitescape.exec_arg(value, command=True) == written


@pytest.mark.parametrize("value", ["docker", "+/bin/sh", "-/bin/false", "@/bin/sh", ":/bin/sh", "!/bin/sh", "|/bin/sh",
                                   "\\x2b/bin/sh", "./run", "", "/a\nb"])
def test_a_command_that_is_not_an_absolute_path_is_refused(value: str) -> None:
    with pytest.raises(unitescape.UnitValueError, match="systemd command line"):
        unitescape.exec_arg(value, command=True)


@pytest.mark.parametrize(("value", "written"), VALUE_GOOD)
def test_unit_value_writes_one_item_with_its_specifiers_escaped(value: Any, written: str) -> None:
    assert unitescape.unit_value(value) == written


@pytest.mark.parametrize("escape", [unitescape.exec_arg, unitescape.unit_value])
@pytest.mark.parametrize("value", EXEC_BAD)
def test_both_refuse_what_no_unit_line_holds_showing_it_escaped(escape: Any, value: Any) -> None:
    with pytest.raises(unitescape.UnitValueError) as refused:
        escape(value)
    message = str(refused.value)
    assert message.isprintable() and "systemd" in message
    if isinstance(value, str) and value:
        assert repr(value) in message


@pytest.mark.parametrize("value", VALUE_BAD)
def test_unit_value_refuses_what_some_setting_would_split_unquote_or_read_as_a_prefix(value: Any) -> None:
    with pytest.raises(unitescape.UnitValueError, match="systemd unit setting"):
        unitescape.unit_value(value)


# --- every interpolation of every unit template goes through one of them ------------------------------------------

# Lines of code, never values: deploy/pipeline.py HARDENING (constants), joined as lines.
CODE_LINES: set[tuple[str, ...] | None] = {("unit", "hardening")}


def _name(node: nodes.Node | None) -> tuple[str, ...] | None:
    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        parent = _name(node.node)
        return (*parent, node.attr) if parent else None
    return None


# The unit filters by the names templates/ call them: the collection's FQCN (deploy/rules FILTER_PREFIX).
UNIT_FILTERS = {FILTER_PREFIX + name for name in unitescape.FILTERS}


def _escaped(node: nodes.Node, safe_names: set[str]) -> bool:
    """Whether `node` writes only escaped values and constants."""
    if isinstance(node, nodes.Filter) and node.name in UNIT_FILTERS:
        return True
    if isinstance(node, nodes.Filter) and node.name == "join" and isinstance(node.node, nodes.Filter):
        inner = node.node
        if inner.name == "map" and inner.args and isinstance(inner.args[0], nodes.Const):
            return inner.args[0].value in UNIT_FILTERS
        return False
    if isinstance(node, nodes.Filter) and node.name == "join" and _name(node.node) in CODE_LINES:
        return True
    if isinstance(node, nodes.Const | nodes.TemplateData):
        return True
    if isinstance(node, nodes.Name):
        return node.name in safe_names
    if isinstance(node, nodes.Concat):
        return all(_escaped(part, safe_names) for part in node.nodes)
    return False


def _unescaped(src: str) -> list[str]:
    """The interpolations of templates/<src> that write something not escaped (as Jinja source)."""
    env = Environment(extensions=[UnitFilters])
    tree = env.parse((TEMPLATES_DIR / src).read_text())
    safe_names = {a.target.name for a in tree.find_all(nodes.Assign)
                  if isinstance(a.target, nodes.Name) and _escaped(a.node, set())}
    return [repr(node) for output in tree.find_all(nodes.Output) for node in output.nodes
            if not _escaped(node, safe_names)]


@pytest.mark.parametrize("src", UNIT_TEMPLATES)
def test_every_interpolation_of_a_unit_template_is_escaped(src: str) -> None:
    assert _unescaped(src) == []


def _first_output(source: str) -> nodes.Node:
    output = Environment().parse(source).find(nodes.Output)
    assert output is not None
    return output.nodes[0]


def test_the_check_above_finds_an_unescaped_value() -> None:
    assert _escaped(_first_output("{{ unit.user }}"), set()) is False
    assert _escaped(_first_output("{{ x | join(' ') }}"), set()) is False
    assert _escaped(_first_output("{{ x | map('upper') | join(' ') }}"), set()) is False


def test_every_unit_template_has_a_realistic_rendering() -> None:
    assert {src for src, _ in UNIT_RENDERINGS} == set(UNIT_TEMPLATES)


# --- one filter plugin, the collection's ------------------------------------------------------------------------


def test_the_collections_filter_plugin_gives_the_modules_filters_without_importing_pyinfra_or_cnctl() -> None:
    """collection/plugins/filter/units.py from the assembled collection alone (no repository on sys.path): the
    escaping comes from its module_utils copy of cnctl/unitescape.py."""
    code = ("import sys; sys.path[:] = [p for p in sys.path if 'site-packages' in p or 'lib/python' in p]; "
            f"sys.path.insert(0, {str(collections_path())!r}); "
            "from ansible_collections.circularnet.fleet.plugins.filter import units; "
            "filters = units.FilterModule().filters(); "
            "print(sorted(filters), filters['cnctl_exec_arg']('a b'), 'pyinfra' in sys.modules, 'cnctl' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                            cwd="/")
    assert result.stdout.split() == ["['cnctl_exec_arg',", "'cnctl_unit_value']", "a\\sb", "False", "False"]


def test_both_engines_refuse_a_value_no_unit_can_hold(tmp_path: Path) -> None:
    variables = {"jetson_clocks": "/usr/bin/jetson_clocks\nExecStartPre=+/bin/sh"}
    with pytest.raises(TemplateRuntimeError, match="printable characters only"):
        render("systemd/jetson-clocks.service.j2", **variables)
    with pytest.raises(AssertionError, match="printable characters only"):
        by_ansible([("systemd/jetson-clocks.service.j2", variables)], tmp_path)


# --- hostile values, read back by systemd -------------------------------------------------------------------------

# Values the schema may refuse, and a unit must still hold as data (or refuse to be written).
HOSTILE = [
    "x\nExecStartPre=+/bin/sh -c id",
    "/opt/x y --privileged",
    "+/bin/sh",
    ";",
    "a ; /bin/sh",
    "$HOME${PATH}%n%%$$",
    "trailing\\",
    "quo\"te's",
    "-",
    "/x;$X${Y}%h",  # fine for every setting, hostile for a command line
]
MARK = "cnctlmark"  # appended to a value: the same kind of value, found again in what systemd read


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(path, value) of the string values in a rendering's variables."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))


def _replaced(value: Any, path: tuple[Any, ...], new: str) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    return [_replaced(item, rest, new) if i == head else item for i, item in enumerate(value)]


def _attacks() -> Iterator[tuple[str, str, str, dict[str, Any], dict[str, Any], str]]:
    """(name, src, marked value, variables with it, variables with a hostile value, the hostile value) for each
    string value of each service's first rendering, and each hostile value."""
    seen: set[str] = set()
    for src, variables in UNIT_RENDERINGS:
        if src in seen or not src.endswith(".service.j2"):
            continue
        seen.add(src)
        for path, original in _leaves(variables):
            if path[-1] in ("runtime", "source") or "hardening" in path:  # a branch's choice; code (CODE_LINES)
                continue
            marked = original + MARK
            for value in HOSTILE:
                yield (f"{src}:{'.'.join(map(str, path))}", src, marked, _replaced(variables, path, marked),
                       _replaced(variables, path, value), value)


def _written(value: str) -> str:
    """How a value that reached a setting other than a command line is written there."""
    return unitescape.unit_value(value)


def _rendered(src: str, variables: dict[str, Any]) -> str | None:
    try:
        return render(src, **variables)
    except TemplateRuntimeError:
        return None


def test_hostile_values_change_no_key_no_argv_and_no_other_setting_as_systemd_reads_the_unit(tmp_path: Path) -> None:
    """Every string value of every service, one at a time, replaced by each hostile value: the unit is refused
    (by the escapes, or by systemd), or systemd reads the same keys, each command line as the same argv with the
    value in place, and ignores no setting but the value's own."""
    cases, refused = [], 0
    for i, (name, src, marked, placed, hostile, value) in enumerate(_attacks()):
        text = _rendered(src, hostile)
        if text is None:
            refused += 1
            continue
        unit_name = Path(src).name.removesuffix(".j2")
        expected, got = tmp_path / f"e{i}-{unit_name}", tmp_path / f"h{i}-{unit_name}"
        expected.write_text(render(src, **placed))
        got.write_text(text)
        cases.append((name, marked, value, expected, got))
    loaded = load(*(unit for *_, expected, got in cases for unit in (expected, got)))
    held = 0
    for name, marked, value, expected, got in cases:
        want, read = loaded[expected.name], loaded[got.name]
        assert want is not None, (name, expected.read_text())
        if read is None:
            refused += 1
            continue
        held += 1
        assert [(s, k) for s, k, _ in settings(got.read_text())] == \
               [(s, k) for s, k, _ in settings(expected.read_text())], (name, value)
        assert read.commands == {key: [[arg.replace(marked, value) for arg in argv] for argv in argvs]
                                 for key, argvs in want.commands.items()}, (name, value)
        lines = got.read_text().split("\n")
        assert all(_written(value) in lines[n - 1] for n in read.ignored - want.ignored), (name, value)
    assert refused > 100 and held > 300, (refused, held)


def test_an_unescaped_hostile_value_would_change_the_argv(tmp_path: Path) -> None:
    """The comparison above sees a value that became structure: the same template without the escapes."""
    env = Environment(keep_trailing_newline=True)
    env.filters.update({name: lambda value, **_: str(value) for name in UNIT_FILTERS})
    variables = {**test_engines.TRITON_UNIT, "runtime": "container", "programs": "/x --url http://evil"}
    unit = tmp_path / "circularnet-triton.service"
    unit.write_text(env.from_string((TEMPLATES_DIR / "systemd/circularnet-triton.service.j2").read_text())
                    .render(**variables))
    post = command_lines(unit)["ExecStartPost"][0]
    assert post[1:4] == ["PYTHONPATH=/x", "--url", "http://evil"]


# --- the Triton container, as systemd runs `docker run` ------------------------------------------------------------


def _docker_run(tmp_path: Path) -> tuple[list[str], list[str]]:
    """(docker's options, the container's command) of the container unit's ExecStart, as systemd reads it."""
    unit = tmp_path / "circularnet-triton.service"
    unit.write_text(render("systemd/circularnet-triton.service.j2", **{**test_engines.TRITON_UNIT, "runtime": "container"}))
    argv = command_lines(unit)["ExecStart"][0]
    image = argv.index(str(test_engines.TRITON_UNIT["image"]))
    assert argv[:2] == ["/usr/bin/docker", "run"]
    return argv[2:image], argv[image + 1:]


def _options(options: list[str]) -> list[tuple[str, str | None]]:
    """docker run's options as (flag, value) pairs (flags without a value: --rm, --read-only)."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(options):
        flag = options[i]
        if flag in ("--rm", "--read-only"):
            pairs.append((flag, None))
            i += 1
        else:
            pairs.append((flag, options[i + 1]))
            i += 2
    return pairs


def test_the_triton_container_runs_confined(tmp_path: Path) -> None:
    options, command = _docker_run(tmp_path)
    pairs = _options(options)
    assert sorted(pairs, key=str) == sorted([
        ("--rm", None), ("--name", "circularnet-triton"), ("--network", "host"), ("--runtime", "nvidia"),
        ("--env", "NVIDIA_VISIBLE_DEVICES=all"), ("--user", "1000:1000"), ("--cap-drop", "ALL"),
        ("--security-opt", "no-new-privileges"), ("--read-only", None), ("--tmpfs", "/tmp:rw,nosuid,nodev,noexec"),
        ("--shm-size", "256m"), ("--volume", "/opt/circularnet/models:/models:ro")], key=str)
    assert command[0] == "tritonserver" and "--model-repository=/models" in command


def test_the_container_user_is_the_roles_and_never_root() -> None:
    from deploy.steps import role_data

    user = role_data("inference")["inference_container_user"]
    uid, _, gid = user.partition(":")
    assert int(uid) > 0 and int(gid) > 0
