"""Hostile stack values against every sink (issue 20, item 3): nothing a stack says changes the structure of a file,
command, inventory or script that cnctl renders from it.

For every string field of the schema that reaches a sink (tests/unit/sinks.py `traces`, docs/sinks.md), hypothesis
mutates the field's value in a stack that reaches those sinks: it injects what a sink reads as structure (newline,
CR, NUL, ESC, quotes, `$(`, backticks, `;`, `&&`, `%`, `$`, `\\`, `{{ }}`, `{% %}`, the startup script's heredoc
terminators, unicode line separators, spaces, globs). Two ways in:

- through the schema: of a few mutations, the first that `cnctl` accepts as a stack (schema and checks) is used;
  when the schema refuses them all, the example counts as refused (that is the goal, not a failure);
- past the schema (`model_copy`): defence in depth, the sink must hold even when a looser schema lets it through.

Each output the field reaches is parsed (tests/unit/sink_shapes.py: units, bash, JSON, YAML, apt sources, argv)
and compared with the same output of the unchanged stack; every shell output also goes through `bash -n`.
The slow sinks (the inventories, the extra vars) and Ansible itself are attacked with every field hostile at once:
`ansible-inventory --list` must show each value literally, Ansible must not evaluate any value of the inventory
or of the extra vars ansible-runner passes, and Ansible's template module must render every template to pyinfra's
bytes. A host whose layer refuses the value, or a stack the code path stops (a catalog lookup), counts as refused.

Counts: a summary line at the end of the module's run, and `tools/sink_map.py --examples` for every field and
sink (from pytest's cache). Examples per test: CNCTL_HOSTILE_EXAMPLES (default 6) and
CNCTL_HOSTILE_ANSIBLE_EXAMPLES (default 2); derandomized under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cnctl.ansible_yaml import Unsafe
from cnctl.config import StackConfig, StackConfigError
from cnctl.paths import TEMPLATES_DIR
from tests.unit import sinks
from tests.unit.render_parity import by_ansible
from tests.unit.shell_shape import syntax_errors
from tests.unit.sink_shapes import load_yaml

CI = os.environ.get("CI") == "true"
BIN = Path(sys.executable).parent
settings.register_profile(
    "cnctl-hostile", deadline=None, derandomize=CI, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
)
PER_FIELD = settings(settings.get_profile("cnctl-hostile"), max_examples=int(os.environ.get("CNCTL_HOSTILE_EXAMPLES", "6")))
# No shrinking every field at once: each run takes seconds of Ansible, and the failure names the sink and the values.
AT_ONCE = settings(settings.get_profile("cnctl-hostile"), phases=(Phase.explicit, Phase.reuse, Phase.generate),
                   max_examples=int(os.environ.get("CNCTL_HOSTILE_ANSIBLE_EXAMPLES", "2")))
# Ansible's template module runs a module per file (half a second of CPU each): one rendering per template.
TEMPLATES_AT_ONCE = settings(AT_ONCE, max_examples=int(os.environ.get("CNCTL_HOSTILE_TEMPLATE_EXAMPLES", "1")))
CANDIDATES = 6  # mutations tried per example through the schema: the first it accepts is the attack
COMPOSITE_BASES = ("cloud", "cloud-group", "site")

# --- what is injected ------------------------------------------------------------------------------------------

TERMINATORS = sorted(set(re.findall(r"<<-?'?(\w+)'?", (TEMPLATES_DIR / sinks.STARTUP_TEMPLATE).read_text())))
PAYLOADS = [
    "\n", "\r", "\r\n", "\x00", "\x1b[31m", "'", '"', "$(touch /tmp/cnctl-hostile)", "`id`", ";id", "&&id", "|id",
    "%n", "%%", "$HOME", "${HOME}", "$$", "\\", "\\\n", "{{ 7*7 }}", "{% if true %}x{% endif %}", "{#", " ", "\t",
    "#", "*", "?", "[a]", "~", "{a,b}", "<", ">", "&", "(", ")", "\u2028", "\u2029", "\u0085", "\u00a0", " -o x",
    "\nExecStartPre=+/bin/sh -c id\n", "=", ":", "@", ",", "/..", "]", "[",
    # no whitespace: what a URL, a name or an address may still hold (an IPv6 zone id holds anything but % and /)
    "$(id)", "${IFS}id", "{{7*7}}", "%$(id)", "%`id`", "%{{7*7}}", "%;id", "%'", '%"', "%\n", "%\\", "%%n",
    *(f"\n{t}\nid\n" for t in TERMINATORS),
]
HOSTILE_CHARS = "\n\r\x00\x1b'\"`$;&|<>(){}[]*?~#%\\ \t\u2028\u2029\u0085=:@,"

fragments = st.lists(st.one_of(st.sampled_from(PAYLOADS), st.text(alphabet=HOSTILE_CHARS, min_size=1, max_size=3)),
                     min_size=1, max_size=3).map("".join)


@st.composite
def mutated(draw: st.DrawFn, value: str, tail: bool = False) -> str:
    """`value` with hostile fragments inserted, in place of a character, or appended (`tail`: in its second half,
    where a URL's scheme or a path's root stays as it was)."""
    fragment = draw(fragments)
    low = len(value) // 2 if tail else 0
    at = draw(st.integers(low, len(value)))
    how = draw(st.sampled_from(("insert", "replace", "append")))
    if how == "append" or at == len(value):
        return value + fragment
    return value[:at] + fragment + value[at + (how == "replace"):]


# --- counts ----------------------------------------------------------------------------------------------------

PAIRS: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)  # (field, sink) -> checked / refused / at once
FIELDS: dict[str, Counter[str]] = defaultdict(Counter)  # field -> accepted / rejected / bypassed / refused


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """At the end: one line of counts on the terminal; every field and sink into pytest's cache
    (`tools/sink_map.py --examples` prints it)."""
    yield
    reached = [t for t in sinks.traces() if t.sinks]
    examples = sum(c["accepted"] + c["rejected"] + c["bypassed"] for c in FIELDS.values())
    line = (f"hostile values: {len(reached)} fields x {len({s for t in reached for s in t.sinks})} sinks "
            f"(of {len(sinks.string_fields())} string fields, {len(sinks.SINKS)} sinks registered) "
            f"({sum(len(t.sinks) for t in reached)} field-sink pairs); {examples} examples "
            f"({sum(c['accepted'] for c in FIELDS.values())} accepted by the schema, "
            f"{sum(c['rejected'] for c in FIELDS.values())} refused by it, "
            f"{sum(c['bypassed'] for c in FIELDS.values())} past it, {sum(c['refused'] for c in FIELDS.values())} "
            f"stopped by the code path); {sum(c['at once'] for c in FIELDS.values())} field values in "
            f"{AT_ONCE_RUNS['examples']} every-field-at-once examples through Ansible")
    pairs = [{"field": f, "sink": s, "checked": c["checked"], "refused": c["refused"], "at once": c["at once"]}
             for (f, s), c in sorted(PAIRS.items())]
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        cache.set("cnctl/hostile-values", {"summary": line, "pairs": pairs,
                                           "fields": {f: dict(c) for f, c in sorted(FIELDS.items())}})
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")  # a teardown's output is captured
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(line)


AT_ONCE_RUNS: Counter[str] = Counter()

# --- one field at a time -----------------------------------------------------------------------------------------

REACHED = {t.field.path: t for t in sinks.traces()
           if any(s for r in t.reach.values() for s in r if not sinks.BY_NAME[s].slow)}


def _where(t: sinks.Trace, name: str) -> tuple[sinks.Loc, str]:
    loc = t.places[name]
    return loc, str(sinks.value_at(sinks.raw_sections(name)[1], loc))


def _first_difference(got: Any, want: Any, where: str = "") -> str:
    """Where two shapes first differ (the innermost element), in words."""
    if isinstance(got, tuple) and isinstance(want, tuple):
        for i, (a, b) in enumerate(zip(got, want, strict=False)):
            if a != b:
                return _first_difference(a, b, f"{where}[{i}]")
        if len(got) != len(want):
            extra = got[len(want):] if len(got) > len(want) else want[len(got):]
            return f"at {where or 'top'}: {len(got)} elements where the unchanged stack has {len(want)} ({extra[:3]!r})"
    return f"at {where or 'top'}: {got!r} where the unchanged stack has {want!r}"


def _excerpt(output: sinks.Output, value: str) -> str:
    text = "\n".join(output) if isinstance(output, list) else output
    probe = value[:12]
    at = text.find(probe) if probe else -1
    return repr(text[max(0, at - 80): at + len(value) + 80] if at >= 0 else text[:240])


def attack(t: sinks.Trace, name: str, cfg: StackConfig, value: str, how: str) -> None:
    """Render the sinks field `t` reaches in base `name` from `cfg` (holding `value`); each output it reaches
    must have the unchanged stack's shape, each shell output must pass `bash -n`."""
    reach = {s: labels for s, labels in t.reach[name].items() if not sinks.BY_NAME[s].slow}
    hosts = {h for labels in reach.values() for label in labels if (h := sinks.host_of(label))}
    try:
        sc = sinks.scene(cfg, only=hosts)
        refused = sc.refused
    except sinks.NotRendered:
        FIELDS[t.field.path]["refused"] += 1
        return
    if refused:
        FIELDS[t.field.path]["refused"] += 1
    want = sinks.benign(name)
    scripts = []
    for sink_name, labels in sorted(reach.items()):
        sink = sinks.BY_NAME[sink_name]
        outputs = sink.render(sc)
        for label in sorted(labels):
            if sinks.host_of(label) in refused:
                PAIRS[(t.field.path, sink_name)]["refused"] += 1
                continue
            context = f"{t.field.path} = {value!r} ({how}, stack {name}): {sink_name}, output {label}"
            assert label in outputs, f"{context}: the output is gone"
            if isinstance(outputs[label], sinks.Refusal):  # the host program refuses the value, naming it
                PAIRS[(t.field.path, sink_name)]["refused"] += 1
                continue
            got = sinks.shape(sink, outputs[label])
            assert got == want[sink_name][label], (f"{context}: the structure changed: "
                                                   f"{_first_difference(got, want[sink_name][label])}; "
                                                   f"around the value: {_excerpt(outputs[label], value)}")
            if sink.kind == "shell":
                scripts.append((context, str(outputs[label])))
        PAIRS[(t.field.path, sink_name)]["checked"] += 1
    errors = syntax_errors([text for _, text in scripts])
    assert not errors, f"{t.field.path} = {value!r} ({how}, stack {name}): bash -n: {errors[:3]}"


@pytest.mark.parametrize("path", REACHED)
@PER_FIELD
@given(data=st.data())
def test_a_hostile_value_the_stack_accepts_changes_no_structure(path: str, data: st.DataObject) -> None:
    t = REACHED[path]
    name = data.draw(st.sampled_from(sorted(n for n in t.reach if n in t.places)), label="stack")
    loc, value = _where(t, name)
    for candidate in data.draw(st.lists(mutated(value), min_size=CANDIDATES, max_size=CANDIDATES), label="values"):
        try:
            t.field.adapter.validate_python(candidate)
            cfg = sinks.with_field(name, loc, candidate)
        except (ValueError, StackConfigError):
            continue
        FIELDS[t.field.path]["accepted"] += 1
        attack(t, name, cfg, candidate, "accepted by the schema")
        return
    FIELDS[t.field.path]["rejected"] += 1


@pytest.mark.parametrize("path", REACHED)
@PER_FIELD
@given(data=st.data())
def test_a_hostile_value_past_the_schema_changes_no_structure(path: str, data: st.DataObject) -> None:
    t = REACHED[path]
    name = data.draw(st.sampled_from(sorted(n for n in t.reach if n in t.places)), label="stack")
    loc, value = _where(t, name)
    hostile = data.draw(st.one_of(mutated(value, tail=True), mutated(value)), label="value")
    FIELDS[t.field.path]["bypassed"] += 1
    attack(t, name, sinks.bypassing(sinks.base(name), loc, hostile), hostile, "past the schema")


# --- the issue's four paths, as it found them --------------------------------------------------------------------

KEY = sinks.CLOUD["bundle"]["signers"][0]["publicKey"]
ISSUE_PATHS = [  # (field, stack, value): each must be refused by the schema, or reach its sinks as data
    ("inference.bindAddress", "site", "fd00:50::7%$(id)"),  # the rollout's health command (a zone id: no / in it)
    ("inference.bindAddress", "site", "fd00:50::7%\nExecStartPre=+sh -c id"),  # the Triton unit
    ("fleets.servers[].address", "site", "fd00:60::10%{{ 7*7 }}"),  # the Ansible controller
    ("fleets.edge[].camera.url", "cloud", "rtsp://10.50.1.40:554/{{ 7*7 }}"),
    ("bundle.signers[].publicKey", "cloud-group", f"{KEY}\nCNCTL_ALLOWED_SIGNERS\ntouch /tmp/cnctl-hostile"),  # boot
]


@pytest.mark.parametrize(("path", "name", "value"), ISSUE_PATHS, ids=[f"{p}={v!r}" for p, _, v in ISSUE_PATHS])
def test_the_issues_values_are_refused_or_stay_data(path: str, name: str, value: str) -> None:
    t = sinks.traces()[[f.path for f in sinks.string_fields()].index(path)]
    try:
        cfg = sinks.with_field(name, t.places[name], value)
    except StackConfigError:
        return  # the schema refuses it: the path is closed where it starts
    attack(t, name, cfg, value, "accepted by the schema")
    if sinks.ANSIBLE_INVENTORY in t.reach[name]:
        inventory = sinks.BY_NAME[sinks.ANSIBLE_INVENTORY].render(sinks.scene(cfg))
        _inventory_literally(name, next(iter(inventory.values()), None), {path: value})


# --- every field at once: the slow sinks, and Ansible ------------------------------------------------------------


def _at_once(data: st.DataObject) -> tuple[str, StackConfig, dict[str, str]]:
    """A base with a hostile value (past the schema, in the second half of each value) in every field it sets that
    reaches a sink; a value that stops the code path for the whole stack (an inventory check of the stack outputs,
    a catalog lookup, a layer's builder) is left out and counted as refused. (base, the stack, field -> value)."""
    name = data.draw(st.sampled_from(COMPOSITE_BASES), label="stack")
    rnd = data.draw(st.randoms(), label="mutations")  # every example a random one (hypothesis starts simplest)
    cfg, values = sinks.base(name), {}
    for t in sinks.traces():
        if name not in t.reach or name in t.refused:
            continue
        sections = cfg.model_dump(by_alias=True, exclude_none=True)
        current = sinks.locate(sections, t.field.parts)
        if current is None:
            continue
        value = str(sinks.value_at(sections, current))
        at = rnd.randint(len(value) // 2, len(value))
        fragment = "".join(rnd.choice([*PAYLOADS, *HOSTILE_CHARS]) for _ in range(rnd.randint(1, 3)))
        hostile = value[:at] + fragment + value[at:]
        changed = sinks.bypassing(cfg, current, hostile)
        try:
            stopped = bool(sinks.scene(changed).refused)  # a layer's builder stops on it: no host renders anything
        except sinks.NotRendered:
            stopped = True
        if stopped:
            FIELDS[t.field.path]["refused"] += 1
            continue
        cfg = changed
        values[t.field.path] = hostile
    AT_ONCE_RUNS["examples"] += 1
    for path in values:
        FIELDS[path]["at once"] += 1
    return name, cfg, values


def _as_data(value: Any, values: dict[str, str]) -> Any:
    """`value` with every string that holds a hostile value marked `!unsafe`: a stack value reaches the roles as data
    (the inventory and extra vars must carry it so; a filter's result is never a template). Only those: Ansible's
    tojson writes an unsafe "6.0" as the number 6.0 (ansible-core 2.19), which a catalog string must not become."""
    if isinstance(value, str):
        return Unsafe(value) if any(v in value for v in values.values()) else value
    if isinstance(value, dict):
        return {k: _as_data(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_data(v, values) for v in value]
    return value


def _diff(mine: bytes, theirs: bytes, names: tuple[str, str] = ("pyinfra", "Ansible")) -> str:
    at = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), min(len(mine), len(theirs)))
    return f"{names[0]} {mine[max(0, at - 60): at + 60]!r}, {names[1]} {theirs[max(0, at - 60): at + 60]!r}"


def _shown(values: dict[str, str]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return text if len(text) < 600 else text[:600] + " ..."


def _count_at_once(name: str, values: dict[str, str], sink_names: list[str]) -> None:
    for t in sinks.traces():
        if t.field.path in values:
            for sink_name in sink_names:
                if sink_name in t.reach.get(name, {}):
                    PAIRS[(t.field.path, sink_name)]["at once"] += 1


def _run(argv: list[str], workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_HOME": str(workdir / "home"),
               "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0",
               **env}
    return subprocess.run(argv, cwd=workdir, env=environ, capture_output=True, text=True, timeout=300, check=False)


def _unwrapped(value: Any) -> Any:
    """A value as Ansible's JSON shows it, with its `{"__ansible_unsafe": ...}` marks taken off."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unwrapped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrapped(v) for v in value]
    return value


MISSING = "__cnctl_undefined"


def _evaluated(workdir: Path, pattern: str, names: list[str], args: list[str]) -> dict[str, list[Any]]:
    """What Ansible makes of the variables `names` on the hosts of `pattern` (a template evaluates every value it
    reads): host -> values (MISSING where a host has none)."""
    (workdir / "names.json").write_text(json.dumps({"__cnctl_names": names}))
    done = _run([str(BIN / "ansible"), pattern, "-c", "local", "-m", "ansible.builtin.debug", "-a",
                 f"msg={{{{ query('ansible.builtin.vars', *__cnctl_names, default='{MISSING}') }}}}",
                 "-e", "@names.json", "--tree", str(workdir / "tree"), *args], workdir)
    results = {}
    for path in sorted((workdir / "tree").glob("*")):
        result = json.loads(path.read_text())
        msg = result.get("msg")
        assert isinstance(msg, list) and not result.get("failed"), (
            f"Ansible evaluated the values of {path.name} as templates and failed: {str(msg)[:300]}")
        results[path.name] = msg
    assert results, f"ansible gave no result: {done.stdout[-1500:]}{done.stderr[-1500:]}"
    return results


def _compare_literally(where: str, expected: dict[str, Any], names: list[str], got: list[Any]) -> None:
    for key, value in zip(names, got, strict=True):
        if key in expected:
            mine, theirs = json.dumps(expected[key], sort_keys=True), json.dumps(value, sort_keys=True)
            assert theirs == mine, (f"{where}: Ansible evaluated {key}: "
                                    f"{_diff(mine.encode(), theirs.encode(), ('cnctl wrote', 'Ansible read'))}")


@AT_ONCE
@given(data=st.data())
def test_every_field_hostile_at_once_changes_no_sink_and_ansible_reads_the_inventory_literally(data: st.DataObject) -> None:
    name, cfg, values = _at_once(data)
    sc = sinks.scene(cfg)
    want = sinks.benign(name, slow=True)
    outputs = sinks.render_all(sc)
    _inventory_literally(name, next(iter(outputs[sinks.ANSIBLE_INVENTORY].values()), None), values)
    scripts = []
    for sink_name, by_label in outputs.items():
        sink = sinks.BY_NAME[sink_name]
        kept = {label for label in want[sink_name] if sinks.host_of(label) not in sc.refused}
        assert kept <= set(by_label), f"stack {name}: {sink_name} lost outputs {kept - set(by_label)}; {_shown(values)}"
        for label in sorted(kept):
            output = by_label[label]
            if isinstance(output, sinks.Refusal):
                continue
            got = sinks.shape(sink, output)
            assert got == want[sink_name][label], (
                f"stack {name}, every field hostile: {sink_name}, output {label}: the structure changed: "
                f"{_first_difference(got, want[sink_name][label])}; values: {_shown(values)}")
            if sink.kind == "shell":
                scripts.append(str(output))
    assert not (errors := syntax_errors(scripts)), f"stack {name}: bash -n: {errors[:3]}; {_shown(values)}"
    _count_at_once(name, values, list(outputs))


def _inventory_literally(name: str, text: sinks.Output | None, values: dict[str, str]) -> None:
    """`ansible-inventory --list` shows every variable of the inventory `text` as cnctl wrote it, and Ansible reading
    each (a template does) gets the same value: nothing in it is evaluated."""
    if text is None:
        return
    written = load_yaml(str(text))["all"]
    expected = {host: {**written.get("vars", {}), **hostvars} for group in written["children"].values()
                for host, hostvars in (group.get("hosts") or {}).items()}
    names = sorted({k for hostvars in expected.values() for k in hostvars})
    with tempfile.TemporaryDirectory(prefix="cnctl-hostile-") as tmp:
        workdir = Path(tmp)
        (workdir / "inventory.yml").write_text(str(text))
        with ThreadPoolExecutor(2) as pool:
            listed = pool.submit(_run, [str(BIN / "ansible-inventory"), "-i", "inventory.yml", "--list"], workdir)
            evaluated = pool.submit(_evaluated, workdir, "all", names, ["-i", "inventory.yml"])
            listing = listed.result()
            assert listing.returncode == 0, listing.stderr[-2000:]
            shown = _unwrapped(json.loads(listing.stdout)["_meta"]["hostvars"])
            for host, hostvars in expected.items():
                for key, value in hostvars.items():
                    assert shown[host].get(key) == value, (
                        f"ansible-inventory --list shows {host}'s {key} as {shown[host].get(key)!r}, not {value!r}")
            for host, got in evaluated.result().items():
                _compare_literally(f"inventory of stack {name}, host {host}", expected[host], names, got)
    _count_at_once(name, values, [sinks.ANSIBLE_INVENTORY])


@AT_ONCE
@given(data=st.data())
def test_every_field_hostile_at_once_ansible_takes_the_extra_vars_literally(data: st.DataObject) -> None:
    name, cfg, values = _at_once(data)
    sc = sinks.scene(cfg)
    command = sinks.extravars_command(sc)
    with tempfile.TemporaryDirectory(prefix="cnctl-hostile-") as tmp:
        workdir = Path(tmp)
        expected: dict[str, Any] = {}
        for extra in sinks.extravars_of(command):
            if extra.startswith("@"):
                expected.update(_unwrapped(load_yaml(Path(extra[1:]).read_text())))
            else:
                expected.update(_unwrapped(json.loads(extra)))
        names = sorted(expected)
        args = [part for extra in sinks.extravars_of(command) for part in ("-e", extra)]
        got = _evaluated(workdir, "localhost", names, ["-i", "localhost,", *args])["localhost"]
        _compare_literally(f"extra vars of stack {name}", expected, names, got)
    _count_at_once(name, values, [sinks.EXTRA_VARS])


@TEMPLATES_AT_ONCE
@given(data=st.data())
def test_every_field_hostile_at_once_ansible_renders_every_template_to_pyinfras_bytes(data: st.DataObject) -> None:
    name, cfg, values = _at_once(data)
    sc = sinks.scene(cfg)
    reached = {s.removeprefix("templates/") for t in sinks.traces() for s in t.reach.get(name, {})}
    by_src: dict[str, tuple[int, dict[str, Any]]] = {}  # per template, the rendering holding the most hostile values
    for rec in sc.recordings.values():
        for r in rec.templates:
            if r.src not in reached:
                continue
            text = json.dumps(r.variables, default=str)
            held = sum(json.dumps(v)[1:-1] in text for v in values.values())
            if held >= by_src.get(r.src, (-1, {}))[0]:
                by_src[r.src] = (held, r.variables)
    # a template that refuses a value (sinks.Refusal) is left to the fixed case that Ansible refuses it too
    renderings = [(src, variables) for src, (_, variables) in sorted(by_src.items())
                  if not isinstance(sinks.rendered_or_refused(src, variables), sinks.Refusal)]
    pyinfra = [sinks.render_template(src, variables).encode() for src, variables in renderings]
    with tempfile.TemporaryDirectory(prefix="cnctl-hostile-") as tmp:
        ansible = by_ansible([(src, _as_data(variables, values)) for src, variables in renderings], Path(tmp))
    for (src, _), mine, theirs in zip(renderings, pyinfra, ansible, strict=True):
        assert theirs == mine, (f"stack {name}: templates/{src}: Ansible renders other bytes than pyinfra: "
                                f"{_diff(mine, theirs)}; values: {_shown(values)}")
    _count_at_once(name, values, sorted({f"templates/{src}" for src, _ in renderings}))
