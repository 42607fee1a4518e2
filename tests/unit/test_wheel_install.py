"""The built wheel, installed with `uv tool install`, runs the CLI against a user's own stacks directory.

From a copy of the checkout's sources (no build/ or egg-info leftovers), `uv build --wheel`; then `uv tool install`
of that wheel into a temporary tool directory, and every command run from a directory outside the checkout that
holds only the user's stack files, with HOME elsewhere too and PYTHONSAFEPATH set: nothing the installed cnctl reads
may come from the checkout. The deploys aim at `localhost` port 9 (nothing listens; no packet leaves the machine):
both engines get as far as the host and end with the per-host table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from cnctl.paths import REPO_ROOT, STACKS_DIR, STACKS_DIR_ENV

UV = Path(sys.executable).parent / "uv"  # the venv's own, locked uv (pyproject's dev group)
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
# What the wheel must carry beside the cnctl package, at the places a checkout keeps them (cnctl/_tree/...).
TREE = ("deploy.py", "deploy", "hosts", "templates", "roles", "playbooks")
# (the installed tool's directory, the user's stacks directory, the environment to run it in, the wheel)
Installed = tuple[Path, Path, dict[str, str], zipfile.ZipFile]


def sources() -> list[str]:
    """The checkout's files a clean clone would hold (tracked, or new and not ignored)."""
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True, text=True, check=True).stdout
    return [path for path in listed.split("\0") if path and (REPO_ROOT / path).is_file()]


def build_wheel(tmp: Path) -> Path:
    """The wheel built from a copy of the sources into `tmp`."""
    source = tmp / "src"
    for path in sources():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes((REPO_ROOT / path).read_bytes())
    subprocess.run([str(UV), "build", "--wheel", "--quiet", "-o", str(tmp / "dist"), str(source)], check=True)
    (wheel,) = (tmp / "dist").glob("cnctl-*.whl")
    return wheel


def user_stacks(directory: Path) -> Path:
    """A user's stacks directory: the example onprem stack (its server at localhost port 9) and the dev stack."""
    directory.mkdir()
    document = yaml.safe_load((STACKS_DIR / "Pulumi.onprem.yaml").read_text(encoding="utf-8"))
    (server,) = document["config"]["circularnet:fleets"]["servers"]
    server.update(address="localhost", sshPort=9)  # a name, so the loopback check lets it by; port 9 refuses at once
    (directory / "Pulumi.onprem.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    (directory / "Pulumi.dev.yaml").write_bytes((STACKS_DIR / "Pulumi.dev.yaml").read_bytes())
    return directory


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built and installed as a uv tool, and a user's stacks directory outside the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    cache = subprocess.run([str(UV), "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CNCTL_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(UV_TOOL_DIR=str(tmp / "tools"), UV_TOOL_BIN_DIR=str(tmp / "bin"), UV_CACHE_DIR=cache,
               HOME=str(tmp / "home"), PYTHONSAFEPATH="1", COLUMNS="400", NO_COLOR="1")
    (tmp / "home").mkdir()
    subprocess.run([str(UV), "tool", "install", "--quiet", str(wheel)], env=env, cwd=tmp, check=True)
    return tmp / "tools" / "cnctl", user_stacks(tmp / "user"), env, zipfile.ZipFile(wheel)


def cnctl(installed: Installed, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    tool, user, env, _ = installed
    return subprocess.run([str(tool / "bin" / "cnctl"), *args], cwd=user, env={**env, **extra}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_wheel_carries_the_tree_and_no_tests_or_sandbox(installed: Installed) -> None:
    names = set(installed[3].namelist())
    wanted = {f"cnctl/_tree/{path}" for path in sources() if path == "deploy.py" or (
        path.split("/")[0] in TREE and "/" in path and not path.endswith(".pyc"))}
    assert wanted - names == set()
    assert {"cnctl/catalog/models.yaml", "cnctl/catalog/platforms.yaml", "cnctl/cli/main.py"} <= names
    strays = [n for n in names if n.startswith(("tests/", "cnctl/sandbox/", "cnctl/_tree/tests/", "cnctl/_tree/stacks/",
                                                "cnctl/_tree/cnctl/sandbox/"))
              or "standin" in n or "__pycache__" in n]
    assert strays == []


def test_version_validate_plan_and_inventories_run_from_the_users_directory(installed: Installed) -> None:
    assert cnctl(installed, "--version").stdout == f"cnctl {VERSION}\n"
    checked = cnctl(installed, "validate", "--stack", "onprem")
    assert checked.returncode == 0, checked.stderr
    plan = cnctl(installed, "plan", "--stack", "dev", "--json")
    assert plan.returncode == 0, plan.stderr
    assert "Rendered by cnctl from templates/gce-startup.sh.j2" in json.dumps(json.loads(plan.stdout))
    for engine in ("pyinfra", "ansible"):
        inventory = cnctl(installed, "inventory", "--stack", "onprem", "--engine", engine)
        assert inventory.returncode == 0 and "plant-gpu-1" in inventory.stdout, inventory.stderr


def test_a_stack_not_found_names_where_it_was_looked_for(installed: Installed) -> None:
    user = installed[1]
    missing = cnctl(installed, "validate")  # the default stack, local, is the checkout's sandbox stack: not here
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"has no file Pulumi.local.yaml in {user / 'stacks'}, {user}; known stacks there: dev, onprem" in missing.stderr
    elsewhere = cnctl(installed, "validate", "--stack", "onprem", **{STACKS_DIR_ENV: str(user)})
    assert elsewhere.returncode == 0, elsewhere.stderr


@pytest.mark.parametrize("engine", ["pyinfra", "ansible"])
def test_a_dry_deploy_reaches_the_host_through_either_engine(installed: Installed, engine: str) -> None:
    deployed = cnctl(installed, "deploy", "--stack", "onprem", "--engine", engine, "--dry")
    told = deployed.stdout + deployed.stderr
    assert deployed.returncode == 1 and "Traceback" not in told
    assert "port 9" in told and "failed on plant-gpu-1" in told
    row = next(line for line in told.splitlines() if "│ plant-gpu-1" in line)
    assert f"│ {engine}" in row


def test_the_installed_tree_is_the_packages_own_and_holds_the_layers(installed: Installed) -> None:
    tool, user, env, _ = installed
    script = ("import sys; from cnctl.paths import REPO_ROOT, TEMPLATES_DIR; sys.path.insert(0, str(REPO_ROOT)); "
              "import deploy.inference, deploy.pipeline, deploy.pull; print(REPO_ROOT); print(deploy.inference.__file__); "
              "print(*(REPO_ROOT / path for path in deploy.pull.agent_files()))")  # the pull agent, as the layer copies it
    shown = subprocess.run([str(tool / "bin" / "python"), "-c", script], cwd=user, env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert len(shown) > 2 and all(Path(path).exists() for path in shown)
    assert all(Path(path).resolve().is_relative_to(tool.resolve()) for path in shown), shown
    assert not any(Path(path).resolve().is_relative_to(REPO_ROOT) for path in shown)


def test_the_sandbox_says_it_runs_from_a_checkout(installed: Installed) -> None:
    shown = cnctl(installed, "sandbox", "status")
    assert shown.returncode == 2 and "the sandbox runs from a checkout" in shown.stderr


def test_a_bundle_is_built_from_the_installed_tree(installed: Installed, tmp_path: Path) -> None:
    user = installed[1]
    key = tmp_path / "release"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release", "-f", str(key)], check=True)
    document = yaml.safe_load((user / "Pulumi.onprem.yaml").read_text(encoding="utf-8"))
    document["config"]["circularnet:bundle"] = {
        "signers": [{"identity": "release@plant", "publicKey": key.with_suffix(".pub").read_text().strip()}]}
    stack = tmp_path / "Pulumi.signed.yaml"  # beside the user's directory: the others' lookups stay as they were
    stack.write_text(yaml.safe_dump(document), encoding="utf-8")
    built = cnctl(installed, "bundle", "build", "--stack", str(stack), "--key", str(key), "--output", str(tmp_path / "out"))
    assert built.returncode == 0, built.stderr
    (archive,) = (tmp_path / "out" / "signed").glob("*/bundle.tar.gz")
    with tarfile.open(archive) as bundle:
        names = bundle.getnames()
    assert {"deploy.py", "hosts/pull.py", "cnctl/config/schema.py", "stacks/Pulumi.signed.yaml"} <= set(names)
    assert not [name for name in names if "sandbox" in name]
