r"""Values written into systemd units as data, never as structure: the one copy both engines use.

templates/systemd/*.j2 pass every interpolation through one of two Jinja filters, registered under the same
names in both engines, prefixed with the collection's FQCN (pyinfra: deploy/steps.py `UnitFilters`; Ansible: the
collection's plugins/filter/units.py, which carries this module as plugins/module_utils/unitescape.py):

- `cnctl_exec_arg` (`exec_arg`): a value inside a word of an Exec*= command line (systemd.service(5) "Command
  lines", systemd.syntax(7) "Quoting"). The value may be a whole word or part of one (`--http-address=<value>`),
  and the opening quote of systemd's quoting may only start a word, so nothing is quoted: every character that
  means something is written as a C escape, which systemd reads anywhere in a word. A backslash, a quote and
  the space become `\\`, `\"`, `\'` and `\s`; `;` becomes `\x3b` (a lone `;` word separates two
  commands); `%` becomes `%%` (specifiers) and `$` becomes `$$` (variables). The command itself (the first
  word, `cnctl_exec_arg(command=true)`) must be an absolute path: systemd reads the prefixes `@ - : + ! |`
  (argv[0] first, ignore failure, no variable expansion, full privileges) after unescaping and unquoting the
  word, so no escape keeps a leading one data; a value that does not start with `/` is refused there.
- `cnctl_unit_value` (`unit_value`): a value of any other setting (Description=, After=, User=, paths,
  Environment=NAME=<value>, addresses, time spans). Their parsers differ (Description= and paths are taken
  whole, ReadWritePaths= and DeviceAllow= unquote, After= and IPAddressAllow= split at blanks without
  unquoting, Environment= unquotes and unescapes), so a value is written only when it reads back as itself,
  as exactly one item, in each of them: `%` becomes `%%`; blanks, quotes and backslashes are refused, and so
  is a leading `- + ! | ~` (prefixes of paths and conditions: ignore a missing path, negate a condition).

Both refuse what no unit line can hold: an empty value (an empty User= means root, an empty argument shifts
the argv), and any character that is not printable (newline, CR, NUL, ESC, tab, line separators: a unit is read
line by line, and systemd refuses control characters in command lines). Integers are written as they are.
Standard library only: the Ansible roles import this without pyinfra.
"""

from __future__ import annotations

from collections.abc import Callable

EXEC_ESCAPES = {"\\": "\\\\", '"': '\\"', "'": "\\'", " ": "\\s", ";": "\\x3b", "%": "%%", "$": "$$"}
VALUE_REFUSED = " \"'\\"
VALUE_PREFIXES = "-+!|~"


class UnitValueError(ValueError):
    """A value that cannot be written into a unit as data: the message shows it escaped and says why."""


def _text(value: object, sink: str) -> str:
    """`value` as the text a unit would hold; refused when a unit line cannot hold it."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UnitValueError(f"{sink}: {value!r} is a {type(value).__name__}; a unit setting takes text or an integer")
    text = str(value)
    if not text:
        raise UnitValueError(f"{sink}: an empty value; systemd reads an empty setting or argument as absent")
    bad = next((ch for ch in text if not (ch.isprintable() or ch == " ")), None)
    if bad is not None:
        raise UnitValueError(f"{sink}: {text!r} holds {bad!r}; a unit is read line by line and takes printable "
                             "characters only: remove it from the value")
    return text


def exec_arg(value: object, command: bool = False) -> str:
    """`value` written into an Exec*= command line so that systemd passes it on as exactly that text; `command`:
    the value starts the command line (the executable), and must be an absolute path."""
    text = _text(value, "systemd command line")
    if command and not text.startswith("/"):
        raise UnitValueError(f"systemd command line: {text!r} is not an absolute path; the command of a unit's command "
                             "line must be one (systemd reads a leading @ - : + ! | as a prefix, even escaped)")
    return "".join(EXEC_ESCAPES.get(ch, ch) for ch in text)


def unit_value(value: object) -> str:
    """`value` written as (part of) one item of a unit setting other than a command line."""
    text = _text(value, "systemd unit setting")
    bad = next((ch for ch in text if ch in VALUE_REFUSED), None)
    if bad is not None:
        raise UnitValueError(f"systemd unit setting: {text!r} holds {bad!r}, which some settings read as a separator, "
                             "a quote or an escape; use a value without blanks, quotes or backslashes")
    if text[0] in VALUE_PREFIXES:
        raise UnitValueError(f"systemd unit setting: {text!r} starts with {text[0]!r}, which paths and conditions "
                             "read as a prefix; use a value that does not start with one of " + VALUE_PREFIXES)
    return text.replace("%", "%%")


FILTERS = {"cnctl_exec_arg": exec_arg, "cnctl_unit_value": unit_value}


def filters(error: type[Exception]) -> dict[str, Callable[..., str]]:
    """FILTERS as an engine registers them: a refusal raised as the engine's own `error` (Jinja's
    TemplateRuntimeError for pyinfra, AnsibleFilterError for Ansible), its message the value shown escaped and the
    rule, never a traceback."""

    def refusing(escape: Callable[..., str]) -> Callable[..., str]:
        def escaped(value: object, **options: bool) -> str:
            try:
                return escape(value, **options)
            except UnitValueError as exc:
                raise error(str(exc)) from None

        return escaped

    return {name: refusing(escape) for name, escape in FILTERS.items()}
