"""`cnctl validate`: the user's first check of a stack file, through the installed console script."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cnctl.cli.main import app
from cnctl.config import StackConfigError
from cnctl.config.values import control_character
from cnctl.paths import REPO_ROOT, STACKS_DIR

CNCTL = shutil.which("cnctl") or str(REPO_ROOT / ".venv/bin/cnctl")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CNCTL, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_example_stacks_validate(stack: str) -> None:
    result = run("validate", "--stack", stack)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok stack {stack}:")


def test_bad_stack_exits_2_with_one_unwrapped_line_per_problem(tmp_path: Path) -> None:
    text = (STACKS_DIR / "Pulumi.dev.yaml").read_text()
    text = text.replace("project: my-circularnet-dev", "project: My_Proj").replace("framePrefix:", "framePrefx:")
    bad = tmp_path / "Pulumi.dev.yaml"
    bad.write_text(text)
    before = bad.read_bytes()
    result = run("validate", "--stack", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {bad}: 2 problems"
    assert lines[1] == "  - gcp.project: 'My_Proj' is not a valid GCP project id (6-30 of a-z 0-9 -)"
    assert lines[2].startswith("  - fleets.edge[0].camera.framePrefx: is not a known key (a typo?); known keys here: ")
    assert "framePrefix" in lines[2].split("known keys here: ", 1)[1].split(", ")
    assert bad.read_bytes() == before


# --- a hostile value through every surface that reads a stack ---------------------------------------------------

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
Change = Callable[[dict[str, Any]], None]
# (id, how the dev stack is changed, the field path the one line names, the value as that line shows it)
HOSTILE: list[tuple[str, Change, str, str]] = [
    ("shell-in-a-zone-id", lambda c: c["circularnet:inference"].update(bindAddress="::1%$(touch /tmp/cnctl-pwned)"),
     "inference.bindAddress", "'::1%$(touch /tmp/cnctl-pwned)'"),
    ("terminal-escape", lambda c: c["circularnet:fleets"]["edge"][0].update(site="plant\x1b]0;pwned\x07\x1b[2J"),
     "fleets.edge[0].site", r"'plant\x1b]0;pwned\x07\x1b[2J'"),
    ("jinja-in-a-zone-id", lambda c: c["circularnet:fleets"]["edge"][0].update(address="fe80::1%{{lookup('pipe','id')}}"),
     "fleets.edge[0].address", "\"fe80::1%{{lookup('pipe','id')}}\""),
    ("heredoc-in-a-key-comment", lambda c: c.update({"circularnet:bundle": {"signers": [
        {"identity": "release@plant", "publicKey": f"{ED25519} ok\nCNCTL_ALLOWED_SIGNERS\nreboot"}]}}),
     "bundle.signers[0].publicKey", r"ok\nCNCTL_ALLOWED_SIGNERS\nreboot'"),
]
SURFACES: dict[str, list[str]] = {
    "validate": ["validate"],
    "plan": ["plan"],
    "inventory": ["inventory", "--output", "inventory.py"],
    "deploy": ["deploy"],
    "model rollout": ["model", "rollout"],
    "bundle publish": ["bundle", "publish"],
    "pulumi up": [],  # the Pulumi program (__main__.py) as the language host runs it
}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"a bad stack started something: {args[:2]!r}")


def _surface(surface: str, path: Path, config: dict[str, Any]) -> tuple[int, str]:
    """(exit code, what the user reads) of one surface given the stack at `path`."""
    if surface == "pulumi up":
        from pulumi import RunError

        from cnctl.plan.engine import run_program

        with pytest.raises(StackConfigError) as caught:
            run_program(config, stack="dev")
        # A RunError: the language host prints its message alone (no traceback); pulumi then exits non-zero.
        assert isinstance(caught.value, RunError)
        return 2, f"error: {caught.value}"
    result = CliRunner().invoke(app, [*SURFACES[surface], "--stack", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    return result.exit_code, result.stderr


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("change", "path", "shown"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_value_is_one_escaped_line_and_exit_2_everywhere(
    surface: str, change: Change, path: str, shown: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate, plan, inventory, deploy, model rollout, bundle publish and the Pulumi program: exit 2, one line
    naming the field with the value escaped and the rule, no traceback; nothing written, started or reached."""
    document = yaml.safe_load((STACKS_DIR / "Pulumi.dev.yaml").read_text())
    change(document["config"])
    stack = tmp_path / "Pulumi.dev.yaml"
    stack.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))
    monkeypatch.setattr(subprocess, "Popen", _refuse)
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    before = _tree(tmp_path)
    code, stderr = _surface(surface, stack, document["config"])
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert control_character(stderr.replace("\n", "")) is None  # no raw escape, bell or bidi control reaches a terminal
    lines = stderr.splitlines()
    assert lines[0].startswith("error: ") and lines[0].endswith(": 1 problem"), lines
    assert len(lines) == 2 and lines[1].startswith(f"  - {path}: ") and shown in lines[1], lines
    assert "; " in lines[1].split(shown, 1)[1]  # the rule, then the fix
    assert _tree(tmp_path) == before
