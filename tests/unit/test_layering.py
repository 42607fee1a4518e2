"""Layers point one way: production never stands on the sandbox (test infrastructure, a consumer of the product).

Each production entry point runs in a fresh interpreter, as a user starts it, and no `cnctl.sandbox` module may
be loaded afterwards: pyinfra's entry point and the host layers, the inventories of every kind of stack (the
local one too: its fleet comes from the fleet file the sandbox writes, read like any other), the Pulumi program
on the mock engine, the CLI's commands other than `cnctl sandbox`, pull mode's agent, and every production
module at once. Only tests, bench and `cnctl sandbox` (when it runs) load the sandbox.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnctl.paths import REPO_ROOT

OUTPUTS = Path(__file__).parent / "samples" / "dev-outputs.json"
SANDBOX = "cnctl.sandbox"

# Each runs in its own interpreter from the repository root; the harness then prints the sandbox modules loaded.
# A SystemExit is how pyinfra's inventory modules and deploy.py refuse bad input: expected where noted.
ENTRY_POINTS: dict[str, str] = {
    "import deploy": "import deploy",
    # deploy.py's whole import path: CNCTL_LAYERS names no layer, so it stops (exit 2) after its imports
    "deploy.py": "import os, runpy; os.environ['CNCTL_LAYERS'] = 'none'; runpy.run_path('deploy.py')",
    "hosts/edge.py, servers.py, fleet.py (prod)":
        "import os, runpy; os.environ['CNCTL_STACK'] = 'prod'; "
        "[runpy.run_path(f'hosts/{m}.py') for m in ('edge', 'servers', 'fleet')]",
    "hosts/fleet.py (local, from a fleet file)":
        "import runpy; g = runpy.run_path('hosts/fleet.py'); assert [n for n, _ in g['edge']] == ['belt-1-orin'], g",
    "hosts/cloud.py (dev, from recorded outputs)":
        f"import os, runpy; os.environ.update(CNCTL_STACK='dev', CNCTL_OUTPUTS={str(OUTPUTS)!r}, "
        "CNCTL_SSH_USER='deploy'); runpy.run_path('hosts/cloud.py')",
    # without the agent's environment hosts/pull.py refuses (exit 2), after its imports
    "hosts/pull.py": "import runpy; runpy.run_path('hosts/pull.py')",
    "the Pulumi program on the mock engine (dev-group)":
        "from cnctl.plan.offline import plan_stack; plan_stack('dev-group')",
    "cnctl's commands other than sandbox":
        "from typer.testing import CliRunner; from cnctl.cli.main import app; r = CliRunner(); "
        "assert r.invoke(app, ['--help']).exit_code == 0; "
        "assert r.invoke(app, ['sandbox', '--help']).exit_code == 0; "
        "assert r.invoke(app, ['validate', '--stack', 'prod']).exit_code == 0; "
        "assert r.invoke(app, ['inventory', '--stack', 'local']).exit_code == 0; "
        "assert r.invoke(app, ['deploy', '--stack', 'local', '--layers', 'nope']).exit_code == 2",
    "cnctl.bundle.agent": "import cnctl.bundle.agent",
    # found by file, not pkgutil.walk_packages: that imports each package it walks into, the sandbox's too
    "every production module": (
        "import importlib, pathlib; "
        "[importlib.import_module('.'.join(p.with_suffix('').parts).removesuffix('.__init__')) "
        "for root in ('cnctl', 'cnhost', 'deploy') for p in sorted(pathlib.Path(root).rglob('*.py')) "
        "if p.parts[:2] != ('cnctl', 'sandbox')]"
    ),
}
EXITS_2 = {"deploy.py", "hosts/pull.py"}
HARNESS = """
import sys
try:
    exec(sys.argv[1])
except SystemExit as exc:
    print("EXIT", exc.code)
print("LOADED", sorted(name for name in sys.modules if name == {sandbox!r} or name.startswith({sandbox!r} + ".")))
"""


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No inherited stack or fleet; the local stack's fleet file is one written here by hand (no sandbox runs)."""
    folder = tmp_path_factory.mktemp("layering")
    key = folder / "id_ed25519"
    key.write_text("not a key\n")
    fleet = folder / "fleet.json"
    fleet.write_text(json.dumps({"format": 1, "stack": "local", "ssh": {"key": str(key)},
                                 "hosts": [{"name": "belt-1-orin", "group": "edge", "address": "172.31.9.11"}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNCTL_") or k == "CNCTL_CACHE"}
    return {**env, "CNCTL_FLEET_FILE": str(fleet), "XDG_CACHE_HOME": str(folder / "cache"),
            "PYTHONPATH": str(REPO_ROOT)}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_no_production_entry_point_loads_the_sandbox(name: str, environment: dict[str, str]) -> None:
    run = subprocess.run([sys.executable, "-c", HARNESS.format(sandbox=SANDBOX), ENTRY_POINTS[name]], cwd=REPO_ROOT,
                         env=environment, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert ("EXIT 2" in lines) == (name in EXITS_2), run.stdout + run.stderr
    assert lines[-1] == "LOADED []", f"{name} loads the sandbox: {lines[-1]}"


def test_the_harness_sees_a_sandbox_module_when_one_is_loaded(environment: dict[str, str]) -> None:
    """The check above can fail: `cnctl sandbox status` (the one command that may) loads it."""
    code = ("from typer.testing import CliRunner; from cnctl.cli.main import app; "
            "CliRunner().invoke(app, ['sandbox', 'status'])")
    run = subprocess.run([sys.executable, "-c", HARNESS.format(sandbox=SANDBOX), code], cwd=REPO_ROOT,
                         env=environment, capture_output=True, text=True, timeout=300, check=False)
    assert "'cnctl.sandbox.commands'" in run.stdout.splitlines()[-1], run.stdout + run.stderr


def _imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update({node.module, *(f"{node.module}.{alias.name}" for alias in node.names)})
    return names


def test_only_the_sandbox_command_names_the_sandbox_and_the_sandbox_names_no_command() -> None:
    """Read from the code, lazy imports too: of the product, only cnctl/cli/sandbox.py imports cnctl.sandbox
    (inside its commands), and nothing in cnctl/sandbox imports cnctl.cli, so the CLI and the sandbox form no
    loop: the sandbox stands above everything it uses."""
    product = [p for p in [*(REPO_ROOT / "cnctl").rglob("*.py"), *(REPO_ROOT / "deploy").rglob("*.py"),
                           *(REPO_ROOT / "cnhost").glob("*.py"), *(REPO_ROOT / "hosts").glob("*.py"), *(REPO_ROOT / "roles").rglob("*.py"),
                           REPO_ROOT / "deploy.py", REPO_ROOT / "__main__.py"]
               if p.relative_to(REPO_ROOT).parts[:2] != ("cnctl", "sandbox")]
    naming = sorted(p.relative_to(REPO_ROOT).as_posix() for p in product
                    if any(n == SANDBOX or n.startswith(SANDBOX + ".") for n in _imported_names(p)))
    assert naming == ["cnctl/cli/sandbox.py"]
    door = ast.parse((REPO_ROOT / "cnctl" / "cli" / "sandbox.py").read_text(encoding="utf-8"))
    assert not any(isinstance(node, ast.ImportFrom) and (node.module or "").startswith(SANDBOX) for node in door.body)
    sandbox = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "cnctl" / "sandbox").rglob("*.py")
                     if any(n == "cnctl.cli" or n.startswith("cnctl.cli.") for n in _imported_names(p)))
    assert sandbox == []
