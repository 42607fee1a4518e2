"""Read a stack into a `StackConfig`: from the YAML file (pyinfra, Ansible, the CLI) or from
`pulumi.Config` (the Pulumi program). Both paths end in `parse()`, so they cannot drift apart.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cnctl.catalog import Catalog
from cnctl.config.checks import check, placeholders
from cnctl.config.errors import Problem, StackConfigError
from cnctl.config.schema import CONTROL_CHARACTER, SECTIONS, StackConfig
from cnctl.paths import REPO_ROOT, STACKS_DIR_ENV, stacks_dirs

NAMESPACE = "circularnet"
ROOT = REPO_ROOT
# What a Pulumi stack file may hold beside `config` (secrets provider, ESC environments).
FILE_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")
MAX_BYTES = 1 << 20
MAX_DEPTH = 32


def stack_path(stack: str, stacks_dir: Path | None = None) -> Path:
    """`dev` -> the first `Pulumi.dev.yaml` of `stacks_dir` or else of cnctl.paths.stacks_dirs (the first place
    looked when there is none); a path (anything with a / or a .yaml suffix) is taken as it is."""
    candidate = Path(stack)
    if is_path(stack):
        return candidate
    places = candidates(stack, stacks_dir)
    return next((path for path in places if path.is_file()), places[0])


def is_path(stack: str) -> bool:
    """A stack given as a file path rather than a name."""
    return Path(stack).suffix in (".yaml", ".yml") or "/" in stack


def candidates(stack: str, stacks_dir: Path | None = None) -> list[Path]:
    """Every file the stack name `stack` may be, in the order they are looked at."""
    return [place / f"Pulumi.{stack}.yaml" for place in ((stacks_dir,) if stacks_dir else stacks_dirs())]


def missing_stack(stack: str, stacks_dir: Path | None = None) -> Problem:
    """The problem of a stack that is no file: where it was looked for, what is there, how to name one."""
    if is_path(stack):
        return Problem("stack", stack, "has no such file; give the path of a Pulumi.<env>.yaml")
    places = candidates(stack, stacks_dir)
    known = sorted({environ for path in places for environ in map(environment_of, path.parent.glob("Pulumi.*.yaml"))})
    return Problem("stack", stack, f"has no file Pulumi.{stack}.yaml in {', '.join(str(p.parent) for p in places)}; "
                   f"known stacks there: {', '.join(known) or 'none'}; run where your stacks are, set "
                   f"{STACKS_DIR_ENV}=<dir>, or give --stack PATH")


def environment_of(path: Path) -> str:
    """The environment name is the stack name: Pulumi.<env>.yaml."""
    name = path.name
    if name.startswith("Pulumi.") and name.endswith((".yaml", ".yml")):
        return name[len("Pulumi.") :].rsplit(".", 1)[0]
    return path.stem


def load_stack(
    stack: str,
    stacks_dir: Path | None = None,
    *,
    unpinned_ok: bool = False,
    refuse_placeholders: bool = False,
    cat: Catalog | None = None,
) -> StackConfig:
    """Load and validate one stack file; raise StackConfigError naming every problem.

    `unpinned_ok` accepts a stack whose model has no sha256 yet: only `cnctl model pin` wants that.
    `refuse_placeholders` also refuses an example's placeholders (`cnctl.config.checks.placeholders`): what
    creates something from the stack wants that, what only shows it (the offline plan) does not.
    `cat`: the catalog to check against (another revision's); default this one.
    """
    path = stack_path(stack, stacks_dir)
    source = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if not path.exists():
        raise StackConfigError(source, [missing_stack(stack, stacks_dir)])
    document = read_document(path, source)
    raw = sections_of(document, source)
    return parse(raw, environment=environment_of(path), source=source, unpinned_ok=unpinned_ok,
                 refuse_placeholders=refuse_placeholders, cat=cat)


def read_document(path: Path, source: str) -> dict[str, Any]:
    """The stack file as a mapping, or StackConfigError with one line saying why it cannot be one.

    Refuses what a plain `yaml.safe_load` would accept silently or crash on: bytes that are not
    UTF-8, a directory, a key written twice (YAML keeps the last one), aliases, deep nesting.
    """
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise _file_problem(source, "is a directory, not a stack file; give the path of Pulumi.<env>.yaml") from None
    except OSError as exc:
        raise _file_problem(source, f"cannot be read ({exc.strerror or exc}); check the path and its permissions") from None
    if len(data) > MAX_BYTES:
        raise _file_problem(source, f"is {len(data)} bytes; a stack file is a few kilobytes (limit {MAX_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _file_problem(source, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8") from None
    try:
        document = yaml.load(text, Loader=_StackYamlLoader) or {}  # a SafeLoader subclass: no arbitrary objects
    except _Refused as exc:
        raise _file_problem(source, str(exc)) from None
    except RecursionError:
        raise _file_problem(source, f"is nested too deeply; a stack is at most {MAX_DEPTH} levels deep") from None
    except yaml.YAMLError as exc:
        raise _file_problem(source, f"is not valid YAML: {_one_line(exc)}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise StackConfigError(source, [Problem("config", None, "the file needs a top-level `config:` mapping")])
    unknown = sorted(str(key) for key in document if key not in FILE_KEYS)
    if unknown:
        raise StackConfigError(
            source, [Problem(key, None, f"is not a stack file key; known: {', '.join(FILE_KEYS)}") for key in unknown]
        )
    return document


def sections_of(document: dict[str, Any], source: str) -> dict[str, Any]:
    """The `circularnet:` sections of a stack file, keyed by section name; a section that would be
    dropped (misspelt namespace or section, no namespace, left empty) is an error, never skipped."""
    raw: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in document["config"].items():
        problem = _section_problem(str(key), value)
        if problem is not None:
            problems.append(problem)
        elif str(key).startswith(f"{NAMESPACE}:"):
            raw[str(key).partition(":")[2]] = value
    if problems:
        raise StackConfigError(source, problems)
    return raw


def _section_problem(key: str, value: Any) -> Problem | None:
    """Why one `config:` key would not reach the stack as written, or None if it does (or is Pulumi's)."""
    namespace, colon, section = key.partition(":")
    if not colon:
        return Problem(key, None, f"has no namespace (Pulumi reads it as <project>:{key}); write {NAMESPACE}:{key}")
    if namespace != NAMESPACE:
        if namespace.lower() == NAMESPACE or difflib.get_close_matches(namespace.lower(), [NAMESPACE], cutoff=0.8):
            return Problem(key, None, f"is not in the `{NAMESPACE}` namespace (a typo?); write {NAMESPACE}:{section}")
        return None  # other namespaces (e.g. pulumi:tags) belong to Pulumi itself
    if section not in SECTIONS:
        close = difflib.get_close_matches(section, SECTIONS, n=1)
        hint = f"did you mean {NAMESPACE}:{close[0]}? " if close else ""
        return Problem(key, None, f"is not a stack section; {hint}known: {', '.join(SECTIONS)}")
    if value is None:
        return Problem(section, None, "is empty, so it would be ignored; fill it in or remove the key")
    return None


def _file_problem(source: str, message: str) -> StackConfigError:
    return StackConfigError(source, [Problem("(file)", None, message)])


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and on which line, without the multi-line snippet."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        context = f" ({exc.context})" if exc.context else ""
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"
    return " ".join(str(exc).split())


class _Refused(Exception):
    """YAML that parses but must not be used as a stack (the message names the line)."""


class _StackYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, aliases and nesting deeper than MAX_DEPTH.

    A duplicate key is the worst of these: YAML keeps the last value, so a stack with two
    `circularnet:compute` blocks plans with the one the author may not have meant.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _Refused(f"line {mark.line + 1}: uses a YAML alias; write the value out (stack files take no anchors)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"line {mark.line + 1}: is nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first_line.get(key)
            except TypeError:
                raise _Refused(f"line {key_node.start_mark.line + 1}: a key must be a plain value") from None
            if earlier is not None:
                raise _Refused(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is written twice (first on line {earlier});"
                    " YAML would keep only the last, so remove one"
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)



def from_pulumi_config() -> StackConfig:
    """The stack the Pulumi engine is running, read through `pulumi.Config` (same schema, same checks).

    A bad stack raises a StackConfigError that is also a `pulumi.RunError`: the language host prints a RunError's
    message alone, so `pulumi up` reports the problems one per line, escaped, like cnctl does, with no traceback
    and before any resource is declared. `pulumi up` also refuses an example's placeholders; a preview (the
    offline plan's mock engine too) shows the stack as written.
    """
    import pulumi

    config = pulumi.Config(NAMESPACE)
    raw = {section: value for section in SECTIONS if (value := config.get_object(section)) is not None}
    stack = pulumi.get_stack()
    creates = not pulumi.runtime.is_dry_run()  # `pulumi up`; a preview is a dry run
    try:
        return parse(raw, environment=stack, source=f"stacks/Pulumi.{stack}.yaml", refuse_placeholders=creates)
    except StackConfigError as exc:
        raise _program_error_type()(exc.source, exc.problems) from None


@functools.cache
def _program_error_type() -> type[StackConfigError]:
    """StackConfigError as the Pulumi program raises it (built on first use: importing pulumi takes a second)."""
    import pulumi

    return type("StackConfigRunError", (StackConfigError, pulumi.RunError), {"__module__": __name__})


def parse(
    raw: dict[str, Any],
    *,
    environment: str,
    source: str,
    unpinned_ok: bool = False,
    refuse_placeholders: bool = False,
    cat: Catalog | None = None,
) -> StackConfig:
    """Validate a raw `circularnet:` mapping: syntax through the schema, then the cross-field rules (and the
    placeholder rules with `refuse_placeholders`, reported with the others)."""
    try:
        cfg = StackConfig.model_validate({**raw, "environment": environment})
    except ValidationError as exc:
        raise StackConfigError(source, [_problem(err) for err in exc.errors()]) from None
    problems = [p for p in check(cfg, cat) if not (unpinned_ok and p.path == "model.sha256")]
    if refuse_placeholders:
        problems += placeholders(cfg, cat)
    if problems:
        raise StackConfigError(source, problems)
    return cfg


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(err: Any) -> Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = f"; known keys here: {', '.join(known)}" if known else ""
        return Problem(_path(loc), None, f"is not a known key (a typo?){hint}")
    if kind == "missing":
        return Problem(_path(loc), None, "is required")
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if kind == CONTROL_CHARACTER:  # the string that holds it, at its own path below the field (item, key)
        return Problem(_path(loc + tuple(err["ctx"]["at"])), err["ctx"]["text"], message)
    if kind == "string_type" and isinstance(value, (int, float, bool, datetime.date)):
        # YAML reads `jetpack: 6.2` as a number (and `6.10` as 6.1, `no` as false): only quotes keep the text.
        example = f': "{value}"' if type(value) in (int, float) else " as the text you meant"
        return Problem(_path(loc), value, f"is a {type(value).__name__} in YAML, not text; quote it{example}")
    if isinstance(value, str) and message.startswith(repr(value)):
        message = message[len(repr(value)) :].lstrip()
    if isinstance(value, (dict, list)):
        value = None
    return Problem(_path(loc), value, message)


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys a user may write at `loc`, walking the schema by alias."""
    model: type[BaseModel] | None = StackConfig
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return []
        model = _model_of(field.annotation)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items() if name != "environment"]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
