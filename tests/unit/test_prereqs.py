"""The machine's prerequisites: one list, complete, and a missing piece explained in one message with the fix."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from cnctl.sandbox import prereqs
from cnctl.sandbox.errors import SandboxProblem

REPO = Path(__file__).resolve().parents[2]
SANDBOX = REPO / "cnctl" / "sandbox"
# Names that hold a command line where the sandbox builds one before running it.
COMMAND_NAMES = {"cmd", "argv", "full", "first", "config", "command", "steps"}
RUNNERS = {"run", "Popen", "check_output", "check_call", "_run", "_stream", "spawn", "in_netns"}


def _tool_of(node: ast.AST) -> str | None:
    """The program of a command-line literal (`["ip", "netns", ...]` -> "ip"), or None if it is not one."""
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value[:1].isalpha():
            return first.value
    return None


def executables_run_by(root: Path) -> dict[str, str]:
    """tool -> where: every program the code under `root` runs through a command-line literal."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if "standin_files" in path.parts or "standin_model" in path.parts:
            continue  # these run on the hosts, not on the machine
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            candidates: list[ast.expr] = []
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in RUNNERS and node.args:
                    candidates.append(node.args[0])
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") in COMMAND_NAMES for t in node.targets):
                candidates.append(node.value)
            elif isinstance(node, ast.FunctionDef) and ("argv" in node.name or "command" in node.name):
                candidates += [n.value for n in ast.walk(node) if isinstance(n, ast.Return) and n.value]
            for candidate in candidates:
                tool = _tool_of(candidate)
                if tool:
                    found.setdefault(tool, f"{path.relative_to(REPO)}:{candidate.lineno}")
    return found


def test_every_executable_the_sandbox_runs_is_in_the_one_list() -> None:
    run = executables_run_by(SANDBOX)
    assert {"systemd-nspawn", "ip", "mmdebstrap", "docker-registry", "umoci", "skopeo"} <= set(run), run
    unlisted = {tool: where for tool, where in run.items() if tool not in prereqs.TOOLS}
    assert not unlisted, f"add these to cnctl/sandbox/prereqs.py TOOLS (with their Debian package): {unlisted}"


def test_the_one_list_names_no_tool_the_sandbox_does_not_run() -> None:
    run = executables_run_by(SANDBOX)
    # qemu-aarch64-static is what binfmt runs for arm64 binaries, never called by name
    stale = set(prereqs.TOOLS) - set(run) - {"qemu-aarch64-static"}
    assert not stale, f"listed but never run (remove them from TOOLS): {sorted(stale)}"


def test_ci_and_make_install_from_the_one_list() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    make = (REPO / "Makefile").read_text()
    assert "cnctl/sandbox/prereqs.py ensure" in ci
    assert "cnctl/sandbox/prereqs.py ensure" in make
    assert "apt-get install" not in ci  # no second list


def test_a_fresh_machine_bootstraps_the_locked_uv(tmp_path: Path) -> None:
    """`make venv` on a machine without the venv pins uv from pyproject.toml's dev group: an empty pin
    (`uv==`) fails on every fresh machine and CI, never here where the venv already exists."""
    venv = tmp_path / "venv"
    plan = subprocess.run(["make", "-n", f"VENV={venv}", f"{venv}/bin/cnctl"], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=60)
    assert plan.returncode == 0, plan.stderr
    lock = (REPO / "uv.lock").read_text()
    pinned = [(line.split("uv==", 1)[1].split(";")[0].split() or [""])[0] for line in plan.stdout.splitlines()
              if "uv==" in line]
    assert pinned and pinned[0][:1].isdigit(), plan.stdout
    assert f'name = "uv"\nversion = "{pinned[0]}"' in lock  # the version the lock holds


def test_a_missing_tool_is_one_message_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(prereqs.TOOLS, "no-such-tool", "no-such-package")
    found = prereqs.problems()
    assert any("missing no-such-tool" in p and "apt-get install -y no-such-package" in p for p in found), found


def test_the_check_exits_2_with_one_message_and_no_traceback() -> None:
    """Run as `make setup` runs it (system python, no venv imports), with a tool that cannot be found."""
    code = ("import runpy, sys; sys.argv = ['prereqs.py', 'check']; g = runpy.run_path('cnctl/sandbox/prereqs.py', "
            "run_name='cnctl_prereqs'); g['TOOLS']['no-such-tool'] = 'no-such-package'; sys.exit(g['main'](['check']))")
    result = subprocess.run([sys.executable, "-I", "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: this machine is not ready for the sandbox:")
    assert "apt-get install -y no-such-package" in result.stderr


def test_require_names_every_missing_piece_and_the_setup_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prereqs, "problems", lambda: ["missing umoci: install with `apt-get install -y umoci`"])
    monkeypatch.setattr(prereqs.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxProblem) as caught:
        prereqs.require("start the sandbox")
    message = str(caught.value)
    assert "must run as root" in message and "apt-get install -y umoci" in message and "make setup" in message


def test_the_package_list_is_sorted_and_unique() -> None:
    assert prereqs.packages() == sorted(set(prereqs.packages()))
    assert "docker-registry" in prereqs.packages() and "qemu-user-static" in prereqs.packages()
